//! Persistence for atoll.
//!
//! A [`Backend`] is an ordered key-value store with atomic batches and an explicit
//! flush: [`SledBackend`] on disk (sled 0.34.7), and [`MemoryBackend`] in memory,
//! which a simulator can crash to lose whatever was not flushed. [`Storage`] lays
//! atoll's data out on any backend:
//!
//! | key                 | value                                          |
//! |---------------------|------------------------------------------------|
//! | `n`                 | [`NodeMeta`]: this store's replica id           |
//! | `q`                 | the last delta-log sequence number issued      |
//! | `m` + name          | [`VarMeta`]: kind, owner, epoch                 |
//! | `s` + name          | the variable's encoded state                   |
//! | `l` + seq (8 B, BE) | [`LogEntry`]: the delta of one operation       |
//!
//! [`Storage::commit`] writes a variable's new state, its metadata, the delta's log
//! entry and the sequence number in one atomic batch, so after a crash either all
//! of an operation is there or none of it is.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod storage;

pub use backend::{Backend, BatchOp, MemoryBackend, SledBackend};
pub use storage::{Commit, LogEntry, NodeMeta, Storage, VarMeta, MAX_RECORD_LEN};

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
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.into())
    }
}

/// The result of a storage call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
