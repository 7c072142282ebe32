//! The keyspace's errors.

use atoll_crdt::codec::DecodeError;
use atoll_crdt::variable::Kind;
use atoll_crdt::{ClockSkew, CrdtError};

/// Why a store call failed. Unless a variant says otherwise, nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The variable name is not allowed.
    #[error("invalid variable name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What to fix.
        reason: &'static str,
    },
    /// The name is in the system's reserved prefix (`_atoll.`): only the
    /// node's own admin operations change those variables (membership), and
    /// only conflict copies (`_atoll.conflict/...`) can be read.
    #[error(
        "variable {name:?}: names starting with \"_atoll.\" are reserved for the system; {what}"
    )]
    Reserved {
        /// The name given.
        name: String,
        /// What is refused, and what to use instead.
        what: &'static str,
    },
    /// A setting is out of its range; nothing was opened or started.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// A request's argument is malformed (an element id, a node id).
    #[error("{what}")]
    InvalidInput {
        /// What is wrong, and what to send.
        what: String,
    },
    /// The variable exists with another type.
    #[error("variable {name:?} is a {found}, not a {expected}")]
    TypeMismatch {
        /// The variable.
        name: String,
        /// The type the call asked for.
        expected: Kind,
        /// The type it was created with.
        found: Kind,
    },
    /// A value could not be encoded, or stored bytes could not be decoded as the
    /// requested type (the variable was written with another value type).
    #[error("variable {name:?}: value does not (de)serialize as the requested type: {source}")]
    Value {
        /// The variable.
        name: String,
        /// The serializer's error.
        source: postcard::Error,
    },
    /// A value is larger than the configured maximum.
    #[error("variable {name:?}: value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// The variable.
        name: String,
        /// The encoded value's length.
        len: usize,
        /// The configured maximum (`Config::max_value_len`).
        max: usize,
    },
    /// The data type refused the operation (overflow, or a bag element owned elsewhere).
    #[error("variable {name:?}: {source}")]
    Crdt {
        /// The variable.
        name: String,
        /// What the type refused.
        source: CrdtError,
    },
    /// A remote delta carries a timestamp too far in the future; it was refused.
    #[error("variable {name:?}: delta refused: {source}")]
    ClockSkew {
        /// The variable.
        name: String,
        /// How far ahead it was.
        source: ClockSkew,
    },
    /// A remote delta could not be decoded; it was refused.
    #[error("variable {name:?}: delta refused: {source}")]
    BadDelta {
        /// The variable.
        name: String,
        /// Why it could not be decoded.
        source: DecodeError,
    },
    /// Storage failed. If the failure was a flush, the operation may or may not be
    /// on disk; the store refuses further writes until it is reopened.
    #[error(transparent)]
    Storage(#[from] atoll_store::StoreError),
    /// The node could not start or run (runtime, certificates, listen address).
    #[error("node: {0}")]
    Node(String),
    /// A bag take or transfer was refused because this node has opened since
    /// every peer last brought it up to date (see `Replica::fenced`).
    #[error("bag {name:?}: takes and transfers wait until every peer has brought this node up to date since it opened (so that an element taken before a restore is never taken again); waiting for {waiting}")]
    Fenced {
        /// The bag.
        name: String,
        /// Whom the fence waits for, and what to do.
        waiting: String,
    },
    /// An earlier flush failed; reopen the store.
    #[error("the store stopped accepting writes after a storage failure: {0}; reopen it")]
    Failed(String),
}

/// The result of a store call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
