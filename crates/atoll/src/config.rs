//! Store configuration.

use std::path::PathBuf;
use std::time::Duration;

/// When an acknowledged write is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every write is flushed before the call returns: an acknowledged write
    /// survives a process crash. The default. See docs/operations.md for what a
    /// flush promises against power loss.
    Durable,
    /// Writes are flushed in the background every `flush_every_ms`; a crash loses
    /// at most the writes of the last interval (whole operations, never part of one).
    Buffered {
        /// The flush interval in milliseconds.
        flush_every_ms: u64,
    },
}

/// How to open a [`crate::Store`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory. `None` keeps everything in memory (lost on close).
    pub path: Option<PathBuf>,
    /// When writes are on disk.
    pub durability: Durability,
    /// Remote last-writer-wins timestamps further than this ahead of the local
    /// clock are refused. Default: 5 minutes.
    pub max_clock_skew: Duration,
    /// The largest encoded value (register value, set member, bag element). Default: 1 MiB.
    pub max_value_len: usize,
    /// The largest remote delta accepted by [`crate::Store::merge`]. Default: 16 MiB.
    pub max_delta_len: usize,
    /// How many changes a slow change-feed subscriber may fall behind before it
    /// is told it lagged. Default: 1024.
    pub change_feed_capacity: usize,
    /// Write the changed variables' states (a checkpoint) after this many
    /// delta-log entries; recovery replays at most this many entries. Default: 4096.
    pub checkpoint_every: u64,
    /// The most delta-log entries kept; older ones are dropped at checkpoints.
    /// Default: 100 000.
    pub log_retain: u64,
    /// At each checkpoint, runs of delta-log entries of one variable are
    /// joined into entries of up to this many bytes, so that a peer catching
    /// up after a split or restart is sent a few large deltas instead of one
    /// per operation. 0 turns it off. Default: 65 536.
    pub coalesce_bytes: usize,
    /// This store is the last node of its cluster: the others are gone for
    /// good. A store that belongs to a cluster (it knows peers, or merged
    /// from one) otherwise refuses bag takes and transfers when opened
    /// without a node (the CLI on a data directory), since only its peers
    /// can tell it which elements were taken after a backup it may have been
    /// restored from. Set it only when no other copy of this data will
    /// ever take from its bags. Default: false.
    pub last_of_cluster: bool,
    /// The variables kept in memory, by encoded size plus a fixed cost each
    /// (a few hundred bytes: what keeping one costs besides its state);
    /// `None`: every variable used stays in
    /// memory until the store closes. Beyond it, those least lately used
    /// and unchanged since the last checkpoint are dropped from memory and
    /// read again from disk when used. Default: `None`.
    pub cache_bytes: Option<usize>,
}

impl Config {
    /// Checks every setting against its range (also done by
    /// [`crate::Store::open_with`]).
    pub fn validate(&self) -> Result<(), atoll_core::ConfigError> {
        use atoll_core::check_range;
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        if let Durability::Buffered { flush_every_ms } = self.durability {
            check_range("flush_every_ms", flush_every_ms, 1, 3_600_000)?;
        }
        check_range(
            "max_value_len",
            wide(self.max_value_len),
            1,
            wide(atoll_store::MAX_RECORD_LEN),
        )?;
        check_range(
            "change_feed_capacity",
            wide(self.change_feed_capacity),
            1,
            1 << 24,
        )?;
        self.keyspace().validate()
    }

    /// The keyspace's part of it.
    pub(crate) fn keyspace(&self) -> atoll_core::KeyspaceConfig {
        atoll_core::KeyspaceConfig {
            flush_each_write: self.durability == Durability::Durable,
            max_clock_skew_ms: u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            max_delta_len: self.max_delta_len,
            checkpoint_every: self.checkpoint_every,
            log_retain: self.log_retain,
            coalesce_bytes: self.coalesce_bytes,
            cache_bytes: self.cache_bytes,
            ..atoll_core::KeyspaceConfig::default()
        }
    }

    /// A durable store in `path`, with defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config {
            path: Some(path.into()),
            ..Config::in_memory()
        }
    }

    /// A store in memory, with defaults.
    pub fn in_memory() -> Self {
        Config {
            path: None,
            durability: Durability::Durable,
            max_clock_skew: Duration::from_secs(300),
            max_value_len: 1 << 20,
            max_delta_len: 16 << 20,
            change_feed_capacity: 1024,
            checkpoint_every: 4096,
            log_retain: 100_000,
            coalesce_bytes: 64 << 10,
            last_of_cluster: false,
            cache_bytes: None,
        }
    }

    /// The same, with `durability`.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}
