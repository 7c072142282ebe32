//! The replica's errors: the keyspace's and the fence's. Errors of the
//! layers above (values, reserved names, the node) are theirs.

use atoll_crdt::codec::DecodeError;
use atoll_crdt::variable::Kind;
use atoll_crdt::{ClockSkew, CrdtError, ReplicaId};

/// Why a keyspace or replica call failed. Each variant says whether
/// anything changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The variable name is not allowed. Nothing changed.
    #[error("invalid variable name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What to fix.
        reason: &'static str,
    },
    /// The variable exists with another type. Nothing changed.
    #[error("variable {name:?} is a {found}, not a {expected}")]
    TypeMismatch {
        /// The variable.
        name: String,
        /// The type the call asked for.
        expected: Kind,
        /// The type it was created with.
        found: Kind,
    },
    /// The data type refused the operation (overflow, or a bag element
    /// owned elsewhere). Nothing changed: operations refuse before they
    /// mutate.
    #[error("variable {name:?}: {source}")]
    Crdt {
        /// The variable.
        name: String,
        /// What the type refused.
        source: CrdtError,
    },
    /// A remote delta carries a timestamp too far in the future; it was
    /// refused. Nothing changed.
    #[error("variable {name:?}: delta refused: {source}")]
    ClockSkew {
        /// The variable.
        name: String,
        /// How far ahead it was.
        source: ClockSkew,
    },
    /// A remote delta could not be decoded; it was refused. Nothing changed.
    #[error("variable {name:?}: delta refused: {source}")]
    BadDelta {
        /// The variable.
        name: String,
        /// Why it could not be decoded.
        source: DecodeError,
    },
    /// Storage failed. If the failure was an append, nothing changed (the
    /// variable is reloaded from storage). If it was a flush, the operation
    /// may or may not be on disk, and the store refuses further writes until
    /// it is reopened.
    #[error(transparent)]
    Storage(#[from] atoll_store::StoreError),
    /// A bag take or transfer was refused because this node has opened since
    /// every peer last brought it up to date (see `Replica::fenced`).
    /// Nothing changed.
    #[error("bag {name:?}: takes and transfers wait until every peer has brought this node up to date since it opened (so that an element taken before a restore is never taken again); waiting for {waiting}")]
    Fenced {
        /// The bag.
        name: String,
        /// Whom the fence waits for, and what to do.
        waiting: String,
    },
    /// An earlier flush failed; reopen the store. Nothing changed.
    #[error("the store stopped accepting writes after a storage failure: {0}; reopen it")]
    Failed(String),
    /// An owned variable's operation could not run (see [`OwnershipError`]).
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
}

/// Why an operation on an owned variable, or a change of its owner, did
/// not happen. Each variant says whether anything may have changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    /// A strong operation on a variable nobody owns: it is linearizable
    /// only at an owner. Nothing changed.
    #[error("variable {name:?} has no owner: a strong operation runs at the owner of an owned variable (own it first)")]
    NotOwned {
        /// The variable.
        name: String,
    },
    /// The operation runs at the owner, another node: it must be sent
    /// there (`Replica::request`). Nothing changed.
    #[error(
        "variable {name:?} is owned by node {owner} (epoch {epoch}): the operation runs there"
    )]
    Elsewhere {
        /// The variable.
        name: String,
        /// Its owner.
        owner: ReplicaId,
        /// The ownership epoch known here.
        epoch: u64,
    },
    /// No answer came from the node that decides about the variable in
    /// time. If the request was sent, it may or may not have been applied.
    #[error("variable {name:?}: its owner {} did not answer within {waited_ms} ms{}", owner.map_or("(unknown)".to_string(), |o| o.to_string()), last.as_deref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    OwnerUnreachable {
        /// The variable.
        name: String,
        /// The node asked (its owner, or its home), if known.
        owner: Option<ReplicaId>,
        /// How long the request waited.
        waited_ms: u64,
        /// The last refusal or obstacle met, if any.
        last: Option<String>,
    },
    /// The owner offered the variable to another node and does not accept
    /// strong operations until that node accepts. Nothing changed.
    #[error("variable {name:?} is in transfer from node {owner} to node {to} since {since_ms} (wall ms); retry once it completes")]
    InTransfer {
        /// The variable.
        name: String,
        /// The owner offering it.
        owner: ReplicaId,
        /// The node offered it.
        to: ReplicaId,
        /// Since when (wall ms at the owner).
        since_ms: u64,
    },
    /// The request's answer was lost, and the node that ran it may have
    /// forgotten it (it restarted, or dropped old answers): the request may
    /// or may not have been applied (read the variable to tell). It is not
    /// sent again, so that it is never applied twice.
    #[error("variable {name:?}: the owner's answer was lost and node {owner} may no longer know it (it restarted, or dropped old answers); the operation may or may not have been applied")]
    OutcomeUnknown {
        /// The variable.
        name: String,
        /// The node asked.
        owner: ReplicaId,
    },
    /// Too many requests wait for answers from this owner. Nothing changed.
    #[error("variable {name:?}: {in_flight} requests already wait for owner {owner}; retry later")]
    Busy {
        /// The variable.
        name: String,
        /// The owner.
        owner: ReplicaId,
        /// How many wait.
        in_flight: usize,
    },
    /// The operation failed at the owner. Nothing changed.
    #[error("variable {name:?}: refused at its owner {owner}: {why}")]
    Refused {
        /// The variable.
        name: String,
        /// The owner.
        owner: ReplicaId,
        /// Its error, in words.
        why: String,
    },
    /// Nothing is decided about the variable here until every configured
    /// peer is known and has brought this node up to date since it opened
    /// (see `Replica::fenced`). Nothing changed.
    #[error("variable {name:?}: ownership waits until every peer has brought this node up to date since it opened; waiting for {waiting}")]
    Fenced {
        /// The variable.
        name: String,
        /// Whom the fence waits for.
        waiting: String,
    },
    /// A placement rule does not let the variable be owned there (or no
    /// node of its site is known). Nothing changed.
    #[error("variable {name:?}: {why}")]
    Placement {
        /// The variable.
        name: String,
        /// Which rule, and why.
        why: String,
    },
    /// A decrement would take a counter with escrow below its floor, as
    /// far as this node can tell: more than the rights it holds (its
    /// balance, or at the owner the pool). Nothing changed.
    #[error("counter {name:?}: a decrement of {by} would pass its floor {floor}; {available} available here (the rest is held by other nodes, or not there)")]
    BelowFloor {
        /// The counter.
        name: String,
        /// The decrement asked.
        by: u64,
        /// The escrow's floor.
        floor: i64,
        /// What this node could decrement.
        available: i128,
    },
    /// Escrow could not be enabled on the variable. Nothing changed.
    #[error("counter {name:?}: escrow refused: {why}")]
    Escrow {
        /// The variable.
        name: String,
        /// Why.
        why: String,
    },
    /// The node to own the variable is not a peer of its owner. Nothing
    /// changed.
    #[error("variable {name:?}: node {to} is not a peer here")]
    NotAPeer {
        /// The variable.
        name: String,
        /// The node named.
        to: ReplicaId,
    },
}

/// The result of a keyspace or replica call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
