//! The add-wins observed-remove set, and the set field nested in maps.

use crate::{
    Causal, CausalContext, CausalMap, DotMap, DotSet, DotStore, InvalidState, Lattice, ReplicaId,
};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The dot store of an add-wins set: each element with the dots of the adds that
/// put it there. Used as [`OrSet`]'s state and as a set nested in an [`crate::OrMap`].
pub type SetField<T> = DotMap<T, DotSet>;

/// The delta of adding `x` to a set field (seen under `ctx`) on behalf of `replica`:
/// one new dot for `x`, and a context that also covers the dots it replaces.
pub fn set_add<T: Ord + Clone + Debug>(
    field: &SetField<T>,
    ctx: &CausalContext,
    replica: ReplicaId,
    x: T,
) -> Causal<SetField<T>> {
    let dot = ctx.next_dot(replica);
    let mut dctx = field.0.get(&x).map(|s| s.dots()).unwrap_or_default();
    dctx.insert(dot);
    let mut store = SetField::default();
    store.0.insert(x, DotSet::one(dot));
    Causal { store, ctx: dctx }
}

/// The delta of removing `x` from a set field: no dots, and a context covering the
/// dots of `x` seen here. Adds concurrent with it survive (add wins).
pub fn set_remove<T: Ord + Clone + Debug>(field: &SetField<T>, x: &T) -> Causal<SetField<T>> {
    Causal {
        store: SetField::default(),
        ctx: field.0.get(x).map(|s| s.dots()).unwrap_or_default(),
    }
}

/// An add-wins observed-remove set (Almeida et al.'s AWORSet), without tombstones.
///
/// A remove is a delta like any other: an empty store with the context of the
/// removed element's dots, so it propagates through joins and gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Ord + Clone + Debug + Deserialize<'de>"
))]
pub struct OrSet<T: Ord> {
    state: CausalMap<T, DotSet>,
}

impl<T: Ord> Default for OrSet<T> {
    fn default() -> Self {
        OrSet {
            state: CausalMap::default(),
        }
    }
}

impl<T: Ord + Clone + Debug> OrSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x` on behalf of `replica`; returns the delta.
    pub fn add(&mut self, replica: ReplicaId, x: T) -> OrSet<T> {
        let d = set_add(self.state.store(), self.state.ctx(), replica, x);
        let delta = OrSet {
            state: CausalMap::from_parts(d.store, d.ctx),
        };
        self.join(delta.clone());
        delta
    }

    /// Removes `x` (the adds seen here); returns the delta, empty if `x` is absent.
    pub fn remove(&mut self, x: &T) -> OrSet<T> {
        let d = set_remove(self.state.store(), x);
        let delta = OrSet {
            state: CausalMap::from_parts(d.store, d.ctx),
        };
        self.join(delta.clone());
        delta
    }

    /// Whether `x` is in the set.
    pub fn contains(&self, x: &T) -> bool {
        self.state.store().0.contains_key(x)
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.state.store().0.keys()
    }

    /// How many elements.
    pub fn len(&self) -> usize {
        self.state.store().0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.state.store().0.is_empty()
    }

    /// The causal context: every add this state has seen.
    pub fn context(&self) -> &CausalContext {
        self.state.ctx()
    }

    /// See [`crate::CausalMap::set_index`].
    #[doc(hidden)]
    pub fn set_index(&mut self, on: bool) {
        self.state.set_index(on);
    }

    /// What of `delta` this state does not already have (see
    /// [`crate::CausalMap::strip`]).
    pub fn strip(&mut self, delta: OrSet<T>) -> OrSet<T> {
        OrSet {
            state: self.state.strip(delta.state),
        }
    }

    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.state.validate()
    }

    /// The causal map it is (for sending it in parts).
    pub(crate) fn causal(&self) -> &CausalMap<T, DotSet> {
        &self.state
    }

    /// The set that `state` is.
    pub(crate) fn from_causal(state: CausalMap<T, DotSet>) -> Self {
        Self { state }
    }
}

impl<T: Ord + Clone + Debug> Lattice for OrSet<T> {
    fn join(&mut self, other: Self) {
        self.state.join(other.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);

    #[test]
    fn add_wins_over_concurrent_remove() {
        let mut a = OrSet::new();
        let d = a.add(A, "x");
        let mut b = OrSet::new();
        b.join(d);
        let rm = b.remove(&"x");
        let re = a.add(A, "x");
        a.join(rm.clone());
        b.join(re);
        assert!(a.contains(&"x"));
        assert_eq!(a, b);
    }

    #[test]
    fn remove_delta_propagates_through_a_third_replica() {
        // The remove must travel as a delta (crdts issue #160).
        let mut a = OrSet::new();
        let mut b = OrSet::new();
        let mut c = OrSet::new();
        let add = a.add(A, 7);
        b.join(add.clone());
        c.join(add);
        let rm = b.remove(&7);
        assert!(!rm.state.ctx().is_empty());
        c.join(rm.clone());
        a.join(rm);
        assert!(!a.contains(&7) && !c.contains(&7));
        assert_eq!(a, c);
    }
}
