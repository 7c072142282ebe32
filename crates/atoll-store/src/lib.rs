//! Persistence for atoll.
//!
//! A [`Backend`] is an ordered key-value store with atomic batches and an explicit
//! flush: `SledBackend` on disk (sled 0.34.7, behind the default feature `sled`),
//! and [`MemoryBackend`] in memory, which a simulator can crash to lose whatever
//! was not flushed. The replica's core (`atoll-core`) uses this crate without
//! the `sled` feature: it links no database. [`Storage`] lays
//! atoll's data out on any backend:
//!
//! | key                 | value                                          |
//! |---------------------|------------------------------------------------|
//! | `v`                 | the storage format ([`STORAGE_FORMAT`]) the data was written in |
//! | `n`                 | [`NodeMeta`]: this store's replica id           |
//! | `o`                 | the openings ([`Opening`]): each incarnation, its first sequence, where the log was settled |
//! | `i`                 | the openings as stores before the settled point wrote them (read once, then moved to `o`) |
//! | `h` + node (8 B, BE) | what this store holds of a peer's log: its incarnation and sequence |
//! | `c`                 | the checkpoint: log sequence the states include |
//! | `q`                 | the last sequence number dropped from the log  |
//! | `j`                 | where the log was settled: joined at checkpoints through here ([`Storage::settled`]) |
//! | `m` + name          | [`VarMeta`]: kind, owner, epoch                 |
//! | `s` + name          | the variable's state as of the checkpoint (a sled tree of its own) |
//! | `l` + seq (8 B, BE) | [`LogEntry`]: the delta of one operation       |
//! | `w` + seq (8 B, BE) + name | (empty) the index of changes: the variable changed at or before the checkpoint at seq |
//! | `k`                 | the index of changes names every variable changed after this sequence |
//!
//! The delta log is a write-ahead log. [`Storage::append`] writes an operation's
//! delta as one log entry, a single atomic write (with the variable's metadata in
//! the same batch when the operation creates it). [`Storage::checkpoint`] writes
//! the states of changed variables together with the checkpoint sequence in one
//! atomic batch. After a crash, a variable's state is its checkpointed state
//! joined with every logged delta after the checkpoint: since joins are
//! idempotent, replaying a delta the state already holds changes nothing, so an
//! operation is recovered entirely or (if its log entry did not survive) not at all.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod memory;
#[cfg(feature = "sled")]
mod sled;
mod storage;

pub use backend::{Backend, BatchOp, Flusher, Table};
pub use memory::MemoryBackend;
#[cfg(feature = "sled")]
pub use sled::SledBackend;
pub use storage::{
    LogEntry, NodeMeta, Opening, Storage, VarMeta, MAX_RECORD_LEN, STATES, STORAGE_FORMAT,
};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed to read, write or flush. After a failed flush, what the
    /// disk holds is unknown; the store should be reopened.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A record on disk could not be decoded: the data dir is damaged or was
    /// written by an incompatible version.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why it could not be decoded.
        source: atoll_crdt::codec::DecodeError,
    },
    /// A caller asked for something the store does not allow (a bug in the
    /// caller, not damage on disk).
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// The data was written by a newer atoll, in a layout this one does not
    /// read.
    #[error(
        "this data directory was written by a newer atoll (storage format {found}); this version reads format {supported} and earlier: open it with a newer atoll"
    )]
    NewerFormat {
        /// The format on disk.
        found: u64,
        /// The newest format this version reads.
        supported: u64,
    },
}

#[cfg(feature = "sled")]
impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::Io(e.into())
    }
}

/// The result of a storage call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
