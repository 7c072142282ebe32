//! The owned bag: a partition-tolerant multiset whose elements each have one owner.

use crate::{
    CausalContext, CausalMap, CrdtError, Dot, DotFun, DotMap, DotStore, InvalidState, Lattice,
    ReplicaId,
};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The identity of a bag element: the dot of the insert that created it.
pub type ElementId = Dot;

/// One element's current record: who owns it, and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BagEntry<T> {
    /// The only replica that may take or transfer the element.
    pub owner: ReplicaId,
    /// The element's value.
    pub value: T,
}

/// A multiset in which every element has a unique id and exactly one owning
/// replica. Only the owner writes an element, so an element never has concurrent
/// writers:
///
/// - `insert` creates an element owned by the inserting replica;
/// - `take` removes one element the local replica owns, with no coordination;
///   since no other replica may take it, no element is ever taken twice;
/// - `transfer` hands an element to another replica, written by the owner only.
///
/// Each element lives under the dot of its latest write; that write's context
/// covers the previous one, so joins replace it, and a take is an empty store
/// with the context of the element's dot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Clone + PartialEq + Debug + Deserialize<'de>"
))]
pub struct Bag<T> {
    state: CausalMap<ElementId, DotFun<BagEntry<T>>>,
}

impl<T> Default for Bag<T> {
    fn default() -> Self {
        Bag {
            state: CausalMap::default(),
        }
    }
}

impl<T: Clone + PartialEq + Debug> Bag<T> {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `value`, owned by `replica`; returns the new element's id and the delta.
    pub fn insert(&mut self, replica: ReplicaId, value: T) -> (ElementId, Bag<T>) {
        self.insert_as(replica, replica, value)
    }

    /// Inserts `value` owned by `owner`, under a dot issued by `actor` (a node
    /// owns elements across its incarnations; each incarnation issues its own dots).
    pub fn insert_as(
        &mut self,
        actor: ReplicaId,
        owner: ReplicaId,
        value: T,
    ) -> (ElementId, Bag<T>) {
        let dot = self.state.ctx().next_dot(actor);
        let delta = self.write(dot, dot, BagEntry { owner, value }, CausalContext::new());
        (dot, delta)
    }

    /// Takes one element owned by `replica` (the one with the smallest id), or
    /// `None` if it owns none. Returns its id, value and the delta.
    pub fn take(&mut self, replica: ReplicaId) -> Option<(ElementId, T, Bag<T>)> {
        let (id, value) = self.state.store().0.iter().find_map(|(id, f)| {
            f.0.values()
                .find(|e| e.owner == replica)
                .map(|e| (*id, e.value.clone()))
        })?;
        let delta = self.take_id(replica, id).ok()?;
        Some((id, value, delta))
    }

    /// Takes the element `id`, which `replica` must own.
    pub fn take_id(&mut self, replica: ReplicaId, id: ElementId) -> Result<Bag<T>, CrdtError> {
        let dots = self.owned_dots(replica, id)?;
        let delta = Bag {
            state: CausalMap::from_parts(DotMap::default(), dots),
        };
        self.join(delta.clone());
        Ok(delta)
    }

    /// Hands element `id`, owned by `replica`, to `to`; returns the delta.
    pub fn transfer(
        &mut self,
        replica: ReplicaId,
        id: ElementId,
        to: ReplicaId,
    ) -> Result<Bag<T>, CrdtError> {
        self.transfer_as(replica, replica, id, to)
    }

    /// Hands element `id`, owned by `owner`, to `to`, under a dot issued by `actor`.
    pub fn transfer_as(
        &mut self,
        actor: ReplicaId,
        owner: ReplicaId,
        id: ElementId,
        to: ReplicaId,
    ) -> Result<Bag<T>, CrdtError> {
        let dots = self.owned_dots(owner, id)?;
        let value = self.state.store().0[&id]
            .0
            .values()
            .find(|e| e.owner == owner)
            .map(|e| e.value.clone())
            .ok_or(CrdtError::NoSuchElement)?;
        let dot = self.state.ctx().next_dot(actor);
        Ok(self.write(id, dot, BagEntry { owner: to, value }, dots))
    }

    fn owned_dots(&self, replica: ReplicaId, id: ElementId) -> Result<CausalContext, CrdtError> {
        // Under out-of-order delivery an element can briefly have two records here
        // (a later write arrived before the earlier one it replaces). A record
        // naming this replica is always the latest write: had this replica given
        // the element away, its own write would have covered that record.
        let records = self
            .state
            .store()
            .0
            .get(&id)
            .ok_or(CrdtError::NoSuchElement)?;
        if !records.0.values().any(|e| e.owner == replica) {
            let owner = self.get(id).map_or(replica, |e| e.owner);
            return Err(CrdtError::NotOwner { owner });
        }
        Ok(records.dots())
    }

    fn write(
        &mut self,
        id: ElementId,
        dot: Dot,
        entry: BagEntry<T>,
        mut ctx: CausalContext,
    ) -> Bag<T> {
        ctx.insert(dot);
        let mut fun = DotFun::default();
        fun.0.insert(dot, entry);
        let mut store = DotMap::default();
        store.0.insert(id, fun);
        let delta = Bag {
            state: CausalMap::from_parts(store, ctx),
        };
        self.join(delta.clone());
        delta
    }

    /// The current record of element `id`. While a replica holds two records of
    /// one element (a later write delivered before the one it replaces), the
    /// record with the highest dot is shown; joins settle it once both arrive.
    pub fn get(&self, id: ElementId) -> Option<&BagEntry<T>> {
        self.state
            .store()
            .0
            .get(&id)
            .and_then(|f| f.0.values().next_back())
    }

    /// How many records of element `id` are held: 1 for a settled element, 2
    /// while a later write arrived before the one it replaces, 0 if absent.
    pub fn records_of(&self, id: ElementId) -> usize {
        self.state.store().0.get(&id).map_or(0, |f| f.0.len())
    }

    /// Every element known here (across all owners), by id.
    pub fn iter(&self) -> impl Iterator<Item = (ElementId, &BagEntry<T>)> {
        self.state
            .store()
            .0
            .iter()
            .filter_map(|(id, f)| f.0.values().next_back().map(|e| (*id, e)))
    }

    /// How many elements are known here, across all owners.
    pub fn len(&self) -> usize {
        self.state.store().0.len()
    }

    /// Whether the bag is empty.
    pub fn is_empty(&self) -> bool {
        self.state.store().0.is_empty()
    }

    /// How many elements `replica` owns, as known here.
    pub fn owned_by(&self, replica: ReplicaId) -> usize {
        self.iter().filter(|(_, e)| e.owner == replica).count()
    }

    /// See [`crate::CausalMap::set_index`].
    #[doc(hidden)]
    pub fn set_index(&mut self, on: bool) {
        self.state.set_index(on);
    }

    /// The causal context: every dot this bag has seen.
    pub fn context(&self) -> &CausalContext {
        self.state.ctx()
    }

    /// What of `delta` this state does not already have (see
    /// [`crate::CausalMap::strip`]).
    pub fn strip(&mut self, delta: Bag<T>) -> Bag<T> {
        Bag {
            state: self.state.strip(delta.state),
        }
    }

    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.state.validate()
    }

    /// The causal map it is (for sending it in parts).
    pub(crate) fn causal(&self) -> &CausalMap<ElementId, DotFun<BagEntry<T>>> {
        &self.state
    }

    /// The bag that `state` is.
    pub(crate) fn from_causal(state: CausalMap<ElementId, DotFun<BagEntry<T>>>) -> Self {
        Self { state }
    }
}

impl<T: Clone + PartialEq + Debug> Lattice for Bag<T> {
    fn join(&mut self, other: Self) {
        self.state.join(other.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn only_the_owner_takes_and_transfers() {
        let mut a = Bag::new();
        let (id, d) = a.insert(A, "x");
        let mut b = Bag::new();
        b.join(d);
        assert_eq!(b.len(), 1);
        assert!(b.take(B).is_none());
        assert_eq!(b.transfer(B, id, B), Err(CrdtError::NotOwner { owner: A }));
        let t = a.transfer(A, id, B).unwrap();
        assert!(a.take(A).is_none());
        b.join(t);
        let (tid, v, take) = b.take(B).unwrap();
        assert_eq!((tid, v), (id, "x"));
        a.join(take);
        assert!(a.is_empty() && b.is_empty());
        assert_eq!(a, b);
    }
}
