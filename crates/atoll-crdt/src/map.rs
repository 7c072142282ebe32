//! The observed-remove map with nested causal values, and the fields it nests.

use crate::register::mv_write;
use crate::{
    Causal, CausalContext, CausalMap, CrdtError, Dot, DotFun, DotMap, DotStore, InvalidState,
    Lattice, LwwEntry, ReplicaId, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// An observed-remove map from keys to nested dot stores, all sharing the map's
/// causal context (Almeida et al.'s ORMap).
///
/// A key is present while its nested value holds a dot. Removing a key is a delta
/// whose context covers the key's dots as seen by the remover: the nested state is
/// reset against that context, so updates concurrent with the remove survive
/// (add-wins keys), and updates the remover saw do not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "K: Serialize, V: Serialize",
    deserialize = "K: Ord + Clone + Debug + Deserialize<'de>, V: DotStore + Deserialize<'de>"
))]
pub struct OrMap<K: Ord, V> {
    state: CausalMap<K, V>,
}

impl<K: Ord, V> Default for OrMap<K, V> {
    fn default() -> Self {
        OrMap {
            state: CausalMap::default(),
        }
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> OrMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Updates the value at `key` with a nested operation. `op` receives the
    /// current nested value (bottom if absent) and the map's context (to draw dots
    /// from), and returns the nested delta. Returns the map delta.
    pub fn update<E>(
        &mut self,
        key: K,
        op: impl FnOnce(&V, &CausalContext) -> Result<Causal<V>, E>,
    ) -> Result<OrMap<K, V>, E> {
        let bottom = V::default();
        let current = self.state.store().0.get(&key).unwrap_or(&bottom);
        let nested = op(current, self.state.ctx())?;
        let mut store = DotMap::default();
        if !nested.store.is_bottom() {
            store.0.insert(key, nested.store);
        }
        let delta = OrMap {
            state: CausalMap::from_parts(store, nested.ctx),
        };
        self.join(delta.clone());
        Ok(delta)
    }

    /// Removes `key` as seen here; returns the delta (empty if `key` is absent).
    pub fn remove(&mut self, key: &K) -> OrMap<K, V> {
        let ctx = self
            .state
            .store()
            .0
            .get(key)
            .map(|v| v.dots())
            .unwrap_or_default();
        let delta = OrMap {
            state: CausalMap::from_parts(DotMap::default(), ctx),
        };
        self.join(delta.clone());
        delta
    }

    /// The nested value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.state.store().0.get(key)
    }

    /// Keys and nested values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.state.store().0.iter()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.state.store().0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.state.store().0.is_empty()
    }

    /// The causal context: every dot this map has seen.
    pub fn context(&self) -> &CausalContext {
        self.state.ctx()
    }

    /// What of `delta` this state does not already have (see
    /// [`crate::CausalMap::strip`]).
    pub fn strip(&mut self, delta: OrMap<K, V>) -> OrMap<K, V> {
        OrMap {
            state: self.state.strip(delta.state),
        }
    }

    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.state.validate()
    }

    /// The causal map it is (for sending it in parts).
    pub(crate) fn causal(&self) -> &CausalMap<K, V> {
        &self.state
    }

    /// The map that `state` is.
    pub(crate) fn from_causal(state: CausalMap<K, V>) -> Self {
        Self { state }
    }
}

impl<K: Ord + Clone + Debug, V: DotStore> Lattice for OrMap<K, V> {
    fn join(&mut self, other: Self) {
        self.state.join(other.state);
    }
}

/// Implements [`DotStore`] for a newtype over a dot store by delegation.
macro_rules! delegate_dot_store {
    ($t:ty $(where $p:ident: $($b:tt)+)?) => {
        impl$(<$p: $($b)+>)? DotStore for $t {
            fn is_bottom(&self) -> bool {
                self.0.is_bottom()
            }
            fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
                self.0.for_each_dot(f)
            }
            fn retain_dots(&mut self, keep: &mut dyn FnMut(&Dot) -> bool) {
                self.0.retain_dots(keep)
            }
            fn join_store(&mut self, ctx: &CausalContext, other: Self, other_ctx: &CausalContext) {
                self.0.join_store(ctx, other.0, other_ctx)
            }
        }
    };
}

/// One replica's running totals in a [`CounterField`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterEntry {
    /// Sum of this replica's increments.
    pub inc: u64,
    /// Sum of this replica's decrements.
    pub dec: u64,
}

/// A counter nested in a map: each replica's totals under its latest dot, so a
/// map remove can reset it. A replica incrementing concurrently with a remove
/// keeps its whole total (as Riak's embedded counter does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CounterField(pub DotFun<CounterEntry>);

impl CounterField {
    /// The delta of adding `by` on behalf of `replica`.
    pub fn add(
        &self,
        ctx: &CausalContext,
        replica: ReplicaId,
        by: i64,
    ) -> Result<Causal<CounterField>, CrdtError> {
        let mut dctx = CausalContext::new();
        let mut total = CounterEntry::default();
        for (d, e) in self.0 .0.iter().filter(|(d, _)| d.replica == replica) {
            dctx.insert(*d);
            total.inc = total.inc.max(e.inc);
            total.dec = total.dec.max(e.dec);
        }
        let side = if by >= 0 {
            &mut total.inc
        } else {
            &mut total.dec
        };
        *side = side
            .checked_add(by.unsigned_abs())
            .ok_or(CrdtError::Overflow)?;
        let dot = ctx.next_dot(replica);
        dctx.insert(dot);
        let mut store = CounterField::default();
        store.0 .0.insert(dot, total);
        Ok(Causal { store, ctx: dctx })
    }

    /// Increments less decrements, over every replica.
    pub fn value(&self) -> i128 {
        self.0
             .0
            .values()
            .map(|e| i128::from(e.inc) - i128::from(e.dec))
            .sum()
    }
}

delegate_dot_store!(CounterField);

/// A last-writer-wins register nested in a map. A write replaces the writes it
/// saw; of concurrent writes, the one with the highest timestamp is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegisterField<T>(pub DotFun<LwwEntry<T>>);

impl<T> Default for RegisterField<T> {
    fn default() -> Self {
        RegisterField(DotFun::default())
    }
}

impl<T: Clone + Ord + Debug> RegisterField<T> {
    /// The delta of writing `value` at `ts` on behalf of `replica`.
    pub fn set(
        &self,
        ctx: &CausalContext,
        replica: ReplicaId,
        ts: Timestamp,
        value: T,
    ) -> Causal<RegisterField<T>> {
        let w = mv_write(&self.0, ctx, replica, LwwEntry { ts, replica, value });
        Causal {
            store: RegisterField(w.store),
            ctx: w.ctx,
        }
    }

    /// The winning write.
    pub fn entry(&self) -> Option<&LwwEntry<T>> {
        self.0
             .0
            .values()
            .max_by(|a, b| (a.ts, a.replica, &a.value).cmp(&(b.ts, b.replica, &b.value)))
    }

    /// The winning value.
    pub fn get(&self) -> Option<&T> {
        self.entry().map(|e| &e.value)
    }
}

delegate_dot_store!(RegisterField<T> where T: Clone + Ord + Debug);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{set_add, SetField};

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn concurrent_update_survives_remove() {
        let mut a: OrMap<&str, SetField<u8>> = OrMap::new();
        let d1 = a
            .update("k", |s, c| Ok::<_, ()>(set_add(s, c, A, 1)))
            .unwrap();
        let mut b = OrMap::new();
        b.join(d1);
        let rm = b.remove(&"k");
        let d2 = a
            .update("k", |s, c| Ok::<_, ()>(set_add(s, c, A, 2)))
            .unwrap();
        a.join(rm);
        b.join(d2);
        assert_eq!(a, b);
        let members: Vec<u8> = a.get(&"k").unwrap().0.keys().copied().collect();
        assert_eq!(
            members,
            vec![2],
            "the seen add is reset, the concurrent one survives"
        );
    }

    #[test]
    fn nested_counter_resets_on_remove() {
        let mut a: OrMap<&str, CounterField> = OrMap::new();
        a.update("c", |v, c| v.add(c, A, 5)).unwrap();
        a.update("c", |v, c| v.add(c, B, -2)).unwrap();
        assert_eq!(a.get(&"c").unwrap().value(), 3);
        a.remove(&"c");
        assert!(a.get(&"c").is_none());
        a.update("c", |v, c| v.add(c, A, 1)).unwrap();
        assert_eq!(a.get(&"c").unwrap().value(), 1);
    }
}
