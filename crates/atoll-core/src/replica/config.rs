//! The replica's settings: protocol limits and timers.

/// Protocol limits and timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The most delta bytes put in one message (a single larger variable is
    /// still sent, alone). Default: 256 KiB.
    pub max_batch_bytes: usize,
    /// The most log entries read for one message. Default: 4096.
    pub max_batch_entries: usize,
    /// The largest message accepted. Default: 16 MiB.
    pub max_message_len: usize,
    /// How long to wait for an acknowledgement before sending again (ms). Default: 1000.
    pub retransmit_ms: u64,
    /// The most delta intervals in flight to one peer, unacknowledged
    /// (pipelining; 1 is stop-and-wait); as many state chunks, and as many
    /// parts of a large state. Default: 8.
    pub max_in_flight: usize,
    /// The most messages waiting in the outgoing queue. Default: 1024.
    pub max_queued_transmits: usize,
    /// Ship each changed variable's whole state instead of the joined deltas:
    /// a state-based mode of the same protocol, for comparing bytes sent
    /// (a state larger than a peer's `max_delta_len` is never accepted, and
    /// sent again and again: for benchmarks, not for use). Default: false.
    pub state_based: bool,
    /// Log entries at least this large (usually runs joined at a checkpoint)
    /// are sent as they are, not decoded and joined with the interval's other
    /// entries of their variable: the peer merges them one by one for less
    /// than that would cost here. Default: 4 KiB.
    pub ship_whole_bytes: usize,
    /// The least time between two delta intervals sent to one peer (ms):
    /// writes made in between travel together, in fewer and larger messages,
    /// at the cost of up to this much more latency. 0 sends each write as soon
    /// as it is flushed. Acknowledgements, retransmissions and state chunks are
    /// not held back. Default: 0.
    pub gossip_interval_ms: u64,
    /// A peer whose `Hello` says it holds nothing of this replica's log (a
    /// new node, a lost data directory, or an incarnation not known here) is
    /// brought up by state transfer, each variable's state once, instead of
    /// being sent the log, when the log spans at least this many entries:
    /// a state holds each live element once, where the log holds every
    /// update (it is usually smaller, and 30 % smaller even for a set that
    /// was only added to), and a receiver that holds nothing merges it
    /// without inserting element by element.
    /// 0: never (always the log, while it lasts). Default: 4096.
    pub state_for_new_peers_after: u64,
    /// A peer the log no longer reaches back to, but the index of changes
    /// does (`KeyspaceConfig::changes_retain`), is sent the states of only
    /// the variables changed since what it holds, if there are at most this
    /// many; otherwise every variable's (a full state transfer). 0: always
    /// a full state transfer. Default: 100 000 (their names are held in
    /// memory while the transfer lasts).
    pub resync_max_changed: usize,
    /// In a state transfer, a variable whose state is larger than this (a
    /// set, bag or map) is sent in parts of about this size, several in
    /// flight at once (up to `max_in_flight`): the network carries one while
    /// the next is encoded here and the last is decoded at the peer, and no
    /// message grows with the state. The peer merges the state once all its
    /// parts arrived. Default: 64 KiB.
    pub state_part_bytes: usize,
    /// The largest variable state accepted from a peer in a state transfer,
    /// counted as its parts' encoded bytes; a peer that sends more is
    /// disconnected. What a state transfer keeps aside per peer is bounded by
    /// it (held both as received and decoded: a few times this in memory).
    /// The merged state is logged as one entry, which is forwarded to other
    /// peers by state transfer if it is too large for a delta (see
    /// `KeyspaceConfig::max_delta_len`). At most
    /// [`atoll_store::MAX_RECORD_LEN`] (256 MiB), the largest log entry read
    /// back. Default: 64 MiB.
    pub max_state_len: usize,
    /// How long a request for the owner of a variable (an operation that
    /// runs there, or a change of owner) waits for its answer before it
    /// fails with `OwnershipError::OwnerUnreachable` (ms). Default: 5000.
    pub request_timeout_ms: u64,
    /// The most requests waiting for answers from one peer; more fail at
    /// once with `OwnershipError::Busy`. Default: 1024.
    pub max_requests_per_peer: usize,
    /// How many answers of requests applied here are kept, so that a
    /// request sent again (its answer lost) is answered without being
    /// applied again; past it the oldest are dropped, and for twice
    /// `request_timeout_ms` a request sent again that is not among them is
    /// refused as possibly applied (`OwnershipError::OutcomeUnknown`).
    /// Default: 4096.
    pub answers_kept: usize,
    /// When an owned variable moves to the node that uses it most
    /// ([`crate::Migration`]; `min_ops = 0`: never by itself).
    pub migration: crate::Migration,
    /// How often bag elements move from nodes with a surplus to connected
    /// nodes whose share is low ([`crate::Rebalance`]).
    pub rebalance: crate::Rebalance,
    /// Variables owned by rule, by name prefix, and where
    /// ([`crate::OwnedRule`]; docs/ownership.md). Default: none.
    pub owned: Vec<crate::OwnedRule>,
    /// This node's site, for placement rules: written to the replicated
    /// map of sites ([`crate::SITES_VAR`]) by [`crate::Replica::announce_site`].
    /// Default: none.
    pub site: Option<String>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_batch_bytes: 256 << 10,
            max_batch_entries: 4096,
            max_message_len: 16 << 20,
            retransmit_ms: 1000,
            max_in_flight: 8,
            max_queued_transmits: 1024,
            state_based: false,
            ship_whole_bytes: 4 << 10,
            gossip_interval_ms: 0,
            state_for_new_peers_after: 4096,
            resync_max_changed: 100_000,
            state_part_bytes: 64 << 10,
            max_state_len: 64 << 20,
            request_timeout_ms: 5000,
            max_requests_per_peer: 1024,
            answers_kept: 4096,
            migration: crate::Migration::default(),
            rebalance: crate::Rebalance::default(),
            owned: Vec::new(),
            site: None,
        }
    }
}
