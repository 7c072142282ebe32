//! atoll: an embeddable, partition-tolerant store of replicated variables.
//!
//! Open a directory, get typed variables by name — counters, registers, sets,
//! bags and maps — that survive restarts and crashes and merge conflict-free
//! with other replicas' changes:
//!
//! ```
//! # fn main() -> atoll::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = atoll::Store::open(dir.path())?;
//! let hits = store.counter("hits")?;
//! hits.incr(5)?;
//! assert_eq!(hits.value()?, 5);
//! store.set::<String>("tags")?.add(&"edge".to_string())?;
//! # Ok(()) }
//! ```
//!
//! Every write is a delta-state CRDT operation: its delta is appended as one
//! entry to a delta log (a write-ahead log that replication reads), in one
//! atomic batch (with the variable's metadata when the write creates it), and
//! (by default) flushed before the call returns. States are written at
//! checkpoints; recovery joins the log after the last one into them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod feed;
mod handles;
mod http;
mod mirror;
mod namespace;
mod node;
pub mod ops;
mod ownership;
mod store;
mod tokens;

pub use atoll_core::OwnershipError;
pub use atoll_core::{
    check_range, is_reserved, validate_name, validate_namespace, ConfigError, MAX_NAME_LEN,
};
pub use atoll_core::{
    CheckReport, CheckResult, Migration, NsTraffic, OwnedRule, PeerStats, PeerStatus, Place,
    Rebalance, ReplicaConfig,
};
pub use atoll_crdt::variable::Kind;
pub use atoll_crdt::{ElementId, Handoff, Ownership, ReplicaId};
pub use atoll_net::TransportConfig;
pub use atoll_net::{certs, NetError};
pub use atoll_store::LogEntry;
pub use config::{Config, Durability};
pub use error::{CoreError, Error, Result};
pub use feed::{Change, ChangeFeed, FeedError};
pub use handles::{Bag, BagElement, Counter, Map, MvRegister, Register, Set};
pub use mirror::{NamespaceMirror, PeerMirror};
pub use namespace::{Namespace, DEFAULT_NS};
pub use node::{
    resolve_peer, CheckConfig, CheckExporter, CheckReporting, Node, NodeConfig, NodeStatus,
};
pub use ownership::{EscrowNode, EscrowStatus};
pub use store::Store;
pub use tokens::{Access, HttpToken};
