//! atoll's replica state machine.
//!
//! This crate is fully deterministic: it contains no networking code, reads no
//! clock, spawns nothing, sleeps nowhere and draws no randomness. Time and
//! random values are arguments; persistence goes through the
//! [`atoll_store::Backend`] trait; what it would send is returned to the caller.
//! The node runtime (crate `atoll`) and the simulator (`sim/`) drive the same
//! code.
//!
//! - [`Op`]: an operation on a variable, the one vocabulary every writer uses.
//! - [`Keyspace`]: every variable of one replica, with the write-ahead delta log.
//! - [`Replica`]: a keyspace plus the delta anti-entropy protocol with its peers.
//! - [`protocol`]: the messages replicas exchange.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod keyspace;
pub mod op;
pub mod protocol;
mod replica;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{check_range, ConfigError};
pub use error::{Error, OwnershipError, Result};
pub use keyspace::{
    bucket_of, conflict_name, conflict_of, data_namespace, digest_of, escrow_record,
    escrowed_by_record, is_reserved, namespace_of, namespaced, owned_by_record, owner_record,
    validate_name, validate_namespace, Applied, Conflict, ConflictEvent, DigestTree, Keyspace,
    KeyspaceConfig, OpCtx, CONFLICT_PREFIX, DEFAULT_NS, DIGEST_BUCKETS, ESCROW_PREFIX,
    MAX_NAME_LEN, MAX_NS_LEN, MIRROR_VAR, NAMESPACES_VAR, NS_PREFIX, OWNER_PREFIX, PEERS_VAR,
    REMOVED_VAR, SYSTEM_PREFIX,
};
pub use op::{Answer, Op, Outcome};
pub use replica::{
    CheckReport, CheckResult, Differing, Event, Migration, Mirroring, NodeCheck, Now, NsMirror,
    NsTraffic, Outputs, OwnedRule, PeerStats, PeerStatus, Place, ProtocolError, Rebalance, Replica,
    ReplicaConfig, Requested, Stuck, TooLarge, TransferReason, TransferStatus, Transmit,
    MAX_LISTED, SITES_VAR,
};
