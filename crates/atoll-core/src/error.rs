//! The replica's errors: the keyspace's and the fence's. Errors of the
//! layers above (values, reserved names, the node) are theirs.

use atoll_crdt::codec::DecodeError;
use atoll_crdt::variable::Kind;
use atoll_crdt::{ClockSkew, CrdtError};

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
}

/// The result of a keyspace or replica call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
