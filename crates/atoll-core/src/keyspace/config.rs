//! The keyspace's settings.

/// How a [`Keyspace`](super::Keyspace) behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceConfig {
    /// Flush after every write before acknowledging it (durable), or leave
    /// flushing to the backend's background flusher and explicit flushes.
    pub flush_each_write: bool,
    /// Remote last-writer-wins timestamps further ahead are refused (ms).
    pub max_clock_skew_ms: u64,
    /// The largest remote delta [`Keyspace::merge`](super::Keyspace::merge) accepts, in bytes.
    pub max_delta_len: usize,
    /// Log entries between checkpoints.
    pub checkpoint_every: u64,
    /// The most log entries kept.
    pub log_retain: u64,
    /// At each checkpoint, runs of log entries of one variable from one
    /// origin written since the last checkpoint are joined into entries of up
    /// to this many bytes, so that a peer catching up is sent a few large
    /// deltas rather than one per operation (0: never).
    pub coalesce_bytes: usize,
    /// How far back, in log sequence numbers, the index of changes reaches
    /// (see [`Keyspace::changed_after`](super::Keyspace::changed_after)): a peer that holds our log through
    /// a sequence within it, but before the log's start, is sent only the
    /// variables changed since. It costs a key per changed variable per
    /// checkpoint, replaced at the next; it should reach much further back
    /// than `log_retain`.
    pub changes_retain: u64,
    /// The variables kept in memory, by their encoded size plus a fixed
    /// cost each for keeping one (a few hundred bytes); `None`: every
    /// variable used stays until the keyspace closes. Beyond it, those
    /// least lately used, and unchanged since the last checkpoint, are
    /// dropped from memory (and read again from disk when used). The
    /// variables changed since the last checkpoint stay whatever the
    /// budget. A large state's size in memory is a small multiple of its
    /// encoded one.
    pub cache_bytes: Option<usize>,
}

impl Default for KeyspaceConfig {
    fn default() -> Self {
        KeyspaceConfig {
            flush_each_write: true,
            max_clock_skew_ms: 300_000,
            max_delta_len: 16 << 20,
            checkpoint_every: 4096,
            log_retain: 100_000,
            coalesce_bytes: 64 << 10,
            changes_retain: 1 << 40,
            cache_bytes: None,
        }
    }
}
