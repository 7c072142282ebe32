//! Delta-state CRDTs for atoll (Almeida, Shoker and Baquero, "Delta State
//! Replicated Data Types", 2016).
//!
//! Every mutation returns a *delta*: a small state that, joined into any replica,
//! has the effect of the mutation. Deltas are what replication ships; they join
//! like whole states, so they may be delivered in any order, twice, or folded
//! into a full state, and replicas still converge.
//!
//! The crate does no I/O, reads no clock and draws no randomness: time and
//! replica ids come in as arguments.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bag;
pub mod codec;
mod context;
mod counter;
pub mod digest;
mod dot;
mod dotstore;
mod escrow;
mod hlc;
mod map;
mod ownership;
mod register;
mod set;
pub mod variable;
mod wire;

pub use bag::{Bag, BagEntry, ElementId};
pub use context::CausalContext;
pub use counter::{GCounter, PNCounter};
pub use dot::{Dot, ReplicaId};
pub use dotstore::{Causal, CausalMap, DotFun, DotMap, DotSet, DotStore, SortedEntries};
pub use escrow::{escrow_actor, spent_by, Escrow, Targets};
pub use hlc::{ClockSkew, HybridClock, Timestamp};
pub use map::{CounterEntry, CounterField, OrMap, RegisterField};
pub use ownership::{Handoff, Ownership, Stage};
pub use register::{LwwEntry, LwwRegister, MvRegister};
pub use set::{set_add, set_remove, OrSet, SetField};

/// A join-semilattice: `join` is commutative, associative and idempotent.
pub trait Lattice: Clone + PartialEq {
    /// Joins `other` into `self` (the least upper bound of the two).
    fn join(&mut self, other: Self);
}

/// A mutation that could not be applied; the state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrdtError {
    /// A counter total would pass `u64::MAX`.
    #[error("counter overflow: a replica's total would exceed {}", u64::MAX)]
    Overflow,
    /// The bag element is owned by another replica.
    #[error("bag element is owned by replica {owner}, not this one")]
    NotOwner {
        /// The element's owner.
        owner: ReplicaId,
    },
    /// No bag element has that id.
    #[error("no such bag element")]
    NoSuchElement,
}

/// A decoded state breaks an invariant of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid state: {0}")]
pub struct InvalidState(pub &'static str);
