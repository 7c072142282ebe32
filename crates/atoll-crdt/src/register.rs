//! Registers: last-writer-wins and multi-value.

use crate::{
    Causal, CausalContext, Dot, DotFun, DotStore, InvalidState, Lattice, ReplicaId, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// One write to a last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwEntry<T> {
    /// When it was written (hybrid logical clock).
    pub ts: Timestamp,
    /// Who wrote it; breaks timestamp ties.
    pub replica: ReplicaId,
    /// The value written.
    pub value: T,
}

impl<T: Ord> LwwEntry<T> {
    fn wins_over(&self, other: &Self) -> bool {
        (self.ts, self.replica, &self.value) > (other.ts, other.replica, &other.value)
    }
}

/// A last-writer-wins register on hybrid logical clock timestamps, ties broken by
/// replica id (and, should a replica ever reuse a timestamp, by value, so that
/// join stays commutative).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister<T> {
    entry: Option<LwwEntry<T>>,
}

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        LwwRegister { entry: None }
    }
}

impl<T: Clone + Ord> LwwRegister<T> {
    /// An unset register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` at `ts` on behalf of `replica`; returns the delta.
    pub fn set(&mut self, ts: Timestamp, replica: ReplicaId, value: T) -> LwwRegister<T> {
        let delta = LwwRegister {
            entry: Some(LwwEntry { ts, replica, value }),
        };
        self.join(delta.clone());
        delta
    }

    /// The current value, if ever written.
    pub fn get(&self) -> Option<&T> {
        self.entry.as_ref().map(|e| &e.value)
    }

    /// `delta` if its write wins over this register's, else nothing.
    pub fn strip(&self, delta: LwwRegister<T>) -> LwwRegister<T> {
        match (&self.entry, &delta.entry) {
            (Some(mine), Some(theirs)) if !theirs.wins_over(mine) => LwwRegister::default(),
            _ => delta,
        }
    }

    /// The winning write, with its timestamp and writer.
    pub fn entry(&self) -> Option<&LwwEntry<T>> {
        self.entry.as_ref()
    }
}

impl<T: Clone + Ord> Lattice for LwwRegister<T> {
    fn join(&mut self, other: Self) {
        if let Some(theirs) = other.entry {
            match &self.entry {
                Some(mine) if !theirs.wins_over(mine) => {}
                _ => self.entry = Some(theirs),
            }
        }
    }
}

/// A multi-value register: a write replaces every value it saw; concurrent writes
/// are all kept until a later write sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MvRegister<T> {
    state: Causal<DotFun<T>>,
}

impl<T> Default for MvRegister<T> {
    fn default() -> Self {
        MvRegister {
            state: Causal {
                store: DotFun::default(),
                ctx: CausalContext::new(),
            },
        }
    }
}

impl<T: Clone + PartialEq + Debug> MvRegister<T> {
    /// An unset register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` on behalf of `replica`, replacing every value seen; returns the delta.
    pub fn write(&mut self, replica: ReplicaId, value: T) -> MvRegister<T> {
        let delta = MvRegister {
            state: mv_write(&self.state.store, &self.state.ctx, replica, value),
        };
        self.join(delta.clone());
        delta
    }

    /// The current values, one per concurrent write, in dot order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.state.store.0.values()
    }

    /// `delta` less what this register already has.
    pub fn strip(&self, mut delta: MvRegister<T>) -> MvRegister<T> {
        let live = &self.state.store.0;
        let held_by_delta = delta.state.store.dots();
        let ctx = crate::dotstore::strip_context(
            &self.state.ctx,
            &delta.state.ctx,
            &held_by_delta,
            |r, n| {
                live.range(Dot::new(r, 1)..=Dot::new(r, n))
                    .map(|(d, _)| *d)
                    .collect()
            },
            |d| live.contains_key(d),
        );
        let seen = &self.state.ctx;
        delta.state.store.retain_dots(&mut |d| !seen.contains(d));
        delta.state.ctx = ctx;
        delta
    }

    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.state.validate()
    }
}

/// The delta of a multi-value write against `store` (seen under `ctx`).
pub(crate) fn mv_write<T: Clone + PartialEq + Debug>(
    store: &DotFun<T>,
    ctx: &CausalContext,
    replica: ReplicaId,
    value: T,
) -> Causal<DotFun<T>> {
    let dot = ctx.next_dot(replica);
    let mut dctx = store.dots();
    dctx.insert(dot);
    let mut dstore = DotFun::default();
    dstore.0.insert(dot, value);
    Causal {
        store: dstore,
        ctx: dctx,
    }
}

impl<T: Clone + PartialEq + Debug> Lattice for MvRegister<T> {
    fn join(&mut self, other: Self) {
        self.state.join(other.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lww_later_timestamp_wins_and_ties_go_to_higher_replica() {
        let t = |ms| Timestamp {
            physical_ms: ms,
            logical: 0,
        };
        let mut a = LwwRegister::new();
        let mut b = LwwRegister::new();
        a.set(t(10), ReplicaId(1), "a");
        b.set(t(10), ReplicaId(2), "b");
        let mut ab = a.clone();
        ab.join(b.clone());
        b.join(a);
        assert_eq!(ab.get(), Some(&"b"));
        assert_eq!(ab, b);
        ab.set(t(11), ReplicaId(1), "c");
        assert_eq!(ab.get(), Some(&"c"));
    }

    #[test]
    fn mv_keeps_concurrent_writes_until_overwritten() {
        let mut a = MvRegister::new();
        let mut b = MvRegister::new();
        let da = a.write(ReplicaId(1), 1);
        let db = b.write(ReplicaId(2), 2);
        a.join(db);
        b.join(da);
        assert_eq!(a, b);
        assert_eq!(a.values().copied().collect::<Vec<_>>(), vec![1, 2]);
        let d = a.write(ReplicaId(1), 3);
        b.join(d);
        assert_eq!(b.values().copied().collect::<Vec<_>>(), vec![3]);
    }
}
