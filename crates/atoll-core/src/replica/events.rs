//! What a replica reports: transmits, events, protocol errors and peer status.

use super::*;

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The peer.
    pub to: ReplicaId,
    /// The encoded [`Message`].
    pub payload: Vec<u8>,
}

/// Something that happened, for the runtime to act on or report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A change was merged from a peer, or made here for a peer's request
    /// (local writes are reported by the caller).
    Applied(Applied),
    /// A consistency check ended ([`Replica::check`]).
    Checked(Box<super::check::CheckReport>),
    /// A variable a check found divergent was joined with a peer's state.
    Repaired {
        /// The variable.
        name: String,
        /// The peer whose state was joined.
        from: ReplicaId,
    },
    /// The record of who owns a variable changed here (a grant, a handoff,
    /// a move, a release, an override, written here or merged).
    OwnerChanged {
        /// The variable.
        name: String,
        /// Its record now.
        record: atoll_crdt::Ownership,
        /// The record before named another owner in the same epoch: two
        /// nodes were made owner at once (an operator's override, or
        /// nodes that disagree on their peers); every replica keeps the
        /// same one.
        conflict: bool,
    },
    /// This node hands an owned variable to the node that used it most
    /// (see [`crate::Migration`]).
    Migrating {
        /// The variable.
        name: String,
        /// The node it goes to.
        to: ReplicaId,
        /// Why, in words.
        why: String,
    },
    /// This node gave elements of its share of a bag to connected nodes
    /// whose shares were low (see [`crate::Rebalance`]): a local write,
    /// made and logged like any other.
    Rebalanced {
        /// The bag.
        name: String,
        /// Each element given, and to which node.
        moves: Vec<(atoll_crdt::ElementId, ReplicaId)>,
        /// The write's delta.
        delta: State,
        /// Its hybrid-clock timestamp.
        ts: atoll_crdt::Timestamp,
        /// Where it went in the log.
        applied: Applied,
    },
    /// A request sent by [`Replica::request`] was answered, or failed.
    Answered {
        /// Its id.
        id: u64,
        /// The variable.
        name: String,
        /// The answer, or why there is none.
        result: Result<crate::Answer, crate::OwnershipError>,
    },
    /// Namespaces became shared with a peer (see [`crate::Mirroring`]): it
    /// is sent a state transfer once it holds the change.
    MirrorGained {
        /// The peer.
        peer: ReplicaId,
        /// The namespaces.
        namespaces: Vec<String>,
    },
    /// A peer sent variables of a namespace this node does not share with
    /// it: acknowledged, not merged. (It had not seen the mirroring change
    /// yet, or it holds another.) Refusals one after another, of one peer
    /// and namespace, come as one event.
    MirrorRefused {
        /// The peer.
        peer: ReplicaId,
        /// The namespace ("": a variable of none).
        namespace: String,
        /// The first variable refused.
        first: String,
        /// How many were refused.
        variables: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// A state transfer to a peer began: the log no longer holds what it
    /// needs, it holds nothing of a long log, or a log entry is too large
    /// for a delta.
    StateTransferStarted {
        /// The peer.
        peer: ReplicaId,
        /// Why.
        why: TransferReason,
        /// `Some(n)`: only the `n` variables changed since what the peer
        /// holds are sent (the index of changes reaches back to it);
        /// `None`: every variable.
        changed: Option<u64>,
    },
    /// A state transfer to a peer ended: the peer acknowledged its last
    /// variable, and holds this replica's log through `as_of`.
    StateTransferFinished {
        /// The peer.
        peer: ReplicaId,
        /// The log sequence the transfer brought it to.
        as_of: u64,
    },
    /// Every peer has brought this replica up to date since it opened: bag
    /// takes and transfers are allowed from now on (see [`Replica::fenced`]).
    Unfenced,
    /// A state transfer to a peer stopped at a variable larger than the
    /// largest state the peer accepts (its `max_state_len`, from its
    /// `Hello`): sent, it would be refused. Nothing more goes to the peer
    /// until it says hello again (it reconnects, perhaps with a larger
    /// limit). Also in [`TransferStatus::blocked`].
    StateTransferBlocked {
        /// The peer.
        peer: ReplicaId,
        /// What is too large.
        blocked: TooLarge,
    },
    /// A peer's deltas could not be merged (clock skew, storage): they are
    /// not acknowledged, and it sends them again. Reported once, when it
    /// begins; [`PeerStatus::stuck`] says since when and why until an
    /// interval from it merges.
    PeerStuck {
        /// The peer.
        peer: ReplicaId,
        /// Why.
        reason: String,
    },
    /// A name was created with two types on two sides of a split; every
    /// replica resolves it the same way (see `Keyspace::merge_state`).
    /// Reported once per conflict copy created here.
    Conflict(Conflict),
    /// Reading this replica's own log or states to send to a peer failed;
    /// nothing was sent to it, and the next input tries again.
    SendFailed {
        /// The peer.
        peer: ReplicaId,
        /// Why.
        error: String,
    },
}

/// Why a state transfer to a peer began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferReason {
    /// The log no longer holds what the peer lacks: it was away too long.
    LogTruncated,
    /// The peer holds nothing of a log spanning
    /// [`ReplicaConfig::state_for_new_peers_after`] entries or more.
    NewPeer,
    /// A log entry is larger than a delta the peer accepts (a large state
    /// merged here from a state transfer): the peer is brought past it by
    /// state transfer.
    EntryTooLarge {
        /// The entry's variable.
        name: String,
        /// The entry's size in bytes.
        len: usize,
    },
    /// Namespaces became shared with the peer (see [`crate::Mirroring`]):
    /// what it lacks of them, written while they were not, is sent now.
    Mirrored,
}

impl std::fmt::Display for TransferReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferReason::LogTruncated => f.write_str("the log no longer reaches back"),
            TransferReason::NewPeer => f.write_str("a new peer of a long log"),
            TransferReason::EntryTooLarge { name, len } => write!(
                f,
                "a log entry of {name:?} ({len} bytes) is too large for a delta"
            ),
            TransferReason::Mirrored => f.write_str("namespaces became shared with the peer"),
        }
    }
}

/// Why a message was refused. After [`ProtocolError::Hostile`] the runtime should
/// disconnect the peer; the replica's state is unchanged by the refused part.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The peer is not known to this replica.
    #[error("message from unknown peer {0}")]
    UnknownPeer(ReplicaId),
    /// The message could not be decoded, or breaks the protocol.
    #[error("peer {peer} broke the protocol: {why}")]
    Hostile {
        /// The peer.
        peer: ReplicaId,
        /// What it did.
        why: String,
    },
    /// A delta could not be merged (clock skew, a type mismatch, storage); the
    /// message is not acknowledged, so the peer will send it again.
    #[error("delta from peer {peer} not merged: {source}")]
    Merge {
        /// The peer.
        peer: ReplicaId,
        /// Why.
        source: Error,
    },
}

/// Counters kept per peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Messages sent.
    pub messages_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Intervals or chunks sent again after a timeout.
    pub retransmits: u64,
    /// State transfers begun.
    pub state_transfers: u64,
    /// Of those, transfers of only the variables changed since what the
    /// peer held (the index of changes reached back to it).
    pub changed_transfers: u64,
    /// Parts of large states sent (each time sent, retransmissions included).
    pub state_parts_sent: u64,
    /// Parts of large states received.
    pub state_parts_received: u64,
}

/// A state transfer under way, as [`Replica::peers`] reports it: how far it
/// got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferStatus {
    /// The sequence of our log it brings the peer up to.
    pub as_of: u64,
    /// The peer has every variable through this one, in name order ("":
    /// none yet).
    pub done_through: String,
    /// The variable being sent in parts, if one is: its name, the parts sent
    /// and the parts acknowledged (of this attempt; the number of parts is
    /// known once the last is encoded).
    pub in_parts: Option<(String, u32, u32)>,
    /// Why it began.
    pub why: TransferReason,
    /// `Some(n)`: it sends only the `n` variables changed since what the
    /// peer held; `None`: every variable.
    pub changed: Option<u64>,
    /// The transfer stopped at a variable the peer would refuse.
    pub blocked: Option<TooLarge>,
}

/// A variable's state larger than the largest state a peer accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// The variable.
    pub name: String,
    /// Its size in bytes as sent: at least this much (found while cutting
    /// its parts, the rest not cut).
    pub bytes: u64,
    /// The peer's `max_state_len`.
    pub limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the state of {:?} (at least {} bytes) is larger than the peer accepts \
             (its max_state_len, {} bytes); raise max_state_len on the peer and restart it",
            self.name, self.bytes, self.limit
        )
    }
}

/// A peer's sync state, as [`Replica::peers`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: ReplicaId,
    /// Whether the runtime has a connection to it.
    pub connected: bool,
    /// The highest sequence of our log it acknowledged.
    pub acked: u64,
    /// How far behind our log it is.
    pub lag: u64,
    /// Whether a state transfer to it is under way.
    pub transferring: bool,
    /// How far that transfer got.
    pub transfer: Option<TransferStatus>,
    /// When a message from it last arrived, or the runtime last saw the
    /// link carry anything from it ([`Replica::heard_from`]; the caller's
    /// clock).
    pub last_contact: Option<u64>,
    /// Whether it has sent us everything it held since we opened.
    pub caught_up: bool,
    /// What it accepts, from its `Hello` (`None` until one arrived from
    /// this incarnation of it): nothing larger is sent to it.
    pub limits: Option<Limits>,
    /// Its counters.
    pub stats: PeerStats,
    /// Lag as time: how long ago the oldest entry of our log it has not
    /// acknowledged was written (at least; `None` if it holds the whole log).
    pub lag_ms: Option<u64>,
    /// Inbound progress: what we hold of its log, as its sequence numbers
    /// (`None` until an interval from it arrived in this connection).
    pub holds: Option<u64>,
    /// Its deltas are refused here and so not acknowledged: since when, and why.
    pub stuck: Option<Stuck>,
    /// When the current connection came up (the caller's clock; `None`
    /// while disconnected).
    pub connected_since: Option<u64>,
    /// What was sent to it, and refused from it, per namespace (`*`: past
    /// the first 256 namespaces refused).
    pub namespaces: BTreeMap<String, NsTraffic>,
}

/// Why the deltas a peer sends are not being merged (and so not
/// acknowledged: the peer sends them again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Since when (the caller's clock): the first refusal of this run.
    pub since: u64,
    /// The latest refusal's reason.
    pub reason: String,
}
