//! The replica: a keyspace plus each peer's sync state, driving the delta
//! anti-entropy protocol (Almeida et al. 2016, Algorithm 2, with the
//! back-propagation avoidance and redundancy removal of Enes et al. 2019).
//!
//! Inputs are calls: [`Replica::handle_message`], [`Replica::handle_timeout`],
//! local writes through [`Replica::keyspace`] followed by
//! [`Replica::handle_local_writes`], and peer changes. Outputs are pulled, in
//! this order after each input: [`Replica::poll_transmit`] until `None`, then
//! [`Replica::poll_event`] until `None`, then [`Replica::poll_timeout`] for when
//! to call `handle_timeout` next. Time is milliseconds on any monotone clock the
//! caller chooses.
//!
//! Over 2 000 lines: the inputs and `poll_*`, per-peer bookkeeping, outbound
//! intervals, state transfer out and in, and status, in one file. It is due
//! to be split by concern (`replica/{peer, interval, transfer, staging,
//! events}`) in the architecture refactor, which the trace hashes of a
//! sweep (`atoll-sim --hashes`) will check changes no run.

use crate::protocol::{Decoded, Decoder, Limits, Message, VarDelta};
use crate::{Applied, Conflict, ConflictEvent, Error, Keyspace, Op, Outcome};
use atoll_crdt::codec::{self, DecodeError};
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::Backend;
use std::collections::{BTreeMap, VecDeque};

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
            state_part_bytes: 64 << 10,
            max_state_len: 64 << 20,
        }
    }
}

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
    /// A change was merged from a peer (local writes are reported by the caller).
    Applied(Applied),
    /// A state transfer to a peer began: the log no longer holds what it
    /// needs, it holds nothing of a long log, or a log entry is too large
    /// for a delta.
    StateTransferStarted {
        /// The peer.
        peer: ReplicaId,
        /// Why.
        why: TransferReason,
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

#[derive(Clone, Debug)]
struct Transfer {
    as_of: u64,
    why: TransferReason,
    /// The last variable name acknowledged.
    cursor: String,
    /// The variable after `cursor`, being sent in parts.
    split: Option<Split>,
    /// The next variable sent in parts has all its parts encoded at once,
    /// from one state: its previous attempt was overtaken by a change (or
    /// lost), and a variable that keeps changing must still get through.
    eager: bool,
    /// Stopped at a variable the peer would refuse, until its next `Hello`.
    blocked: Option<TooLarge>,
    /// Chunks and variables in parts sent and not yet all acknowledged, in
    /// the order sent: up to `max_in_flight` chunks go before the first is
    /// acknowledged, and `cursor` moves over those acknowledged in turn.
    units: VecDeque<Unit>,
    /// The unit that ends the transfer was sent: nothing more to build
    /// until acks, or a timeout sends it all again from `cursor`.
    all_sent: bool,
    /// The stored state of the variable the last chunk stopped before (too
    /// large to join it), read then, and its version: the next chunk starts
    /// with it, without reading it again.
    peeked: Option<(String, Vec<u8>, u64)>,
    /// Times the variable in parts was started over since one last ended,
    /// for want of any ack, up to [`MAX_TRANSFER_BACKOFF`]: each doubles the
    /// wait before the next timeout. A round trip longer than
    /// `retransmit_ms` would otherwise start it over before the acks of its
    /// first parts came back, again and again. (A lost chunk or part does
    /// not count: those are sent again as acks keep coming.)
    backoff: u32,
}

/// The most doublings of `retransmit_ms` a variable in parts waits for an ack.
const MAX_TRANSFER_BACKOFF: u32 = 4;

/// When the state-transfer chunk (or part) in flight to `p` is overdue:
/// `retransmit_ms` after it was sent, doubled for each time the variable in
/// parts was started over (see `Transfer::backoff`).
fn chunk_deadline(p: &Peer, retransmit_ms: u64) -> Option<u64> {
    let (_, sent) = p.chunk?;
    let backoff = p.transfer.as_ref().map_or(0, |t| t.backoff);
    Some(sent.saturating_add(retransmit_ms.saturating_mul(1 << backoff)))
}

/// A state chunk, or a variable in parts, of a transfer: sent, and not
/// known to be merged in order.
#[derive(Clone, Debug)]
struct Unit {
    /// The last variable it carries (a chunk with none: the one before it).
    through: String,
    /// It ends the transfer.
    last: bool,
    /// A variable in parts (acknowledged by its end part), not a chunk.
    parts: bool,
    /// Acknowledged (a unit before it may not be yet).
    acked: bool,
}

impl Transfer {
    /// Where the next chunk starts: after the last unit sent, or after
    /// what the peer acknowledged.
    fn sent_through(&self) -> &str {
        self.units.back().map_or(&self.cursor, |u| &u.through)
    }

    /// Moves `cursor` over the units acknowledged in turn; whether the
    /// transfer's last one was among them.
    fn advance(&mut self) -> bool {
        let mut done = false;
        while self.units.front().is_some_and(|u| u.acked) {
            let u = self.units.pop_front().expect("checked");
            self.cursor = u.through;
            done |= u.last;
        }
        done
    }

    /// Everything in flight is let go: the next chunk starts after
    /// `cursor` again (the peer merges again what it had; a join is
    /// idempotent).
    fn go_back(&mut self) {
        self.units.clear();
        self.split = None;
        self.peeked = None;
        self.all_sent = false;
        // Found again if it is still too large.
        self.blocked = None;
    }

    /// Drops the variable in parts under way (it starts over later).
    fn drop_split(&mut self) {
        if self.split.take().is_some() && self.units.back().is_some_and(|u| u.parts) {
            self.units.pop_back();
            self.all_sent = false;
        }
    }
}

/// A variable's state on its way to a peer in parts.
#[derive(Clone, Debug)]
struct Split {
    name: String,
    /// The variable before it: what its parts say they follow.
    after: String,
    kind: Kind,
    /// Its version when its first part was encoded: parts encoded one at a
    /// time are of one state only while it stays the same.
    version: u64,
    /// Parts encoded ahead, not sent yet.
    ahead: VecDeque<atoll_crdt::variable::Part>,
    /// Every part was encoded ahead, at once (after a restart), so a change
    /// since does not matter; otherwise parts after the first are encoded as
    /// they are sent, while the variable's version stays the same.
    all_ahead: bool,
    /// Where the next part to encode starts; `None` once the end part was
    /// encoded (and, with `ahead` empty, sent).
    next: Option<Vec<u8>>,
    /// The state as stored, when it had not changed since the last
    /// checkpoint: later parts are cut from it as they are sent (one state,
    /// whatever changes meanwhile).
    stored: Option<atoll_crdt::variable::StoredParts>,
    /// Parts sent.
    sent: u32,
    /// Their bytes, counted as the peer counts them against its
    /// `max_state_len` (each part once, resends not counted).
    sent_bytes: usize,
    /// The parts sent and not acknowledged, encoded as sent: sent again as
    /// they are after a timeout.
    unacked: BTreeMap<u32, Vec<u8>>,
    /// An ack arrived since the last timeout.
    progress: bool,
    /// The end part's number, once sent.
    end_index: Option<u32>,
    /// The variable is the transfer's last (known when its end part goes).
    last: bool,
}

/// A variable's state arriving in parts from a peer, kept aside until its end.
#[derive(Clone, Debug)]
struct Staging {
    as_of: u64,
    name: String,
    version: u64,
    /// The parts kept, by number: decoded, as they came, and where their
    /// entries lie in that.
    parts: BTreeMap<
        u32,
        (
            atoll_crdt::variable::DecodedPart,
            Vec<u8>,
            std::ops::Range<usize>,
        ),
    >,
    /// The end part's number, and whether the variable is the transfer's last.
    end: Option<(u32, bool)>,
    /// Their encoded size, bounded by `max_state_len`.
    bytes: usize,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    connected: bool,
    /// The incarnation the peer last connected as.
    incarnation: Option<ReplicaId>,
    /// The highest sequence of our log the peer acknowledged.
    acked: u64,
    /// The delta intervals in flight, oldest first: each one's end and when it
    /// was sent. They are contiguous, from `acked` to `sent_through`.
    flights: VecDeque<(u64, u64)>,
    /// The end of the last interval sent (at least `acked`).
    sent_through: u64,
    /// Acknowledged intervals not yet contiguous with `acked`: start -> end.
    early_acks: BTreeMap<u64, u64>,
    /// The state-transfer chunk in flight: its `as_of` and when it was sent.
    chunk: Option<(u64, u64)>,
    transfer: Option<Transfer>,
    stats: PeerStats,
    last_contact: Option<u64>,
    /// It sent us a complete interval since we opened (or it was added after
    /// the fence lifted).
    caught_up: bool,
    /// Since it connected, it has not acknowledged a complete interval from us:
    /// send one, even an empty one, so that it learns it is up to date.
    announce: bool,
    /// The end of the last complete interval sent to it.
    complete_sent: Option<u64>,
    /// When the last new delta interval was sent to it (for the gossip interval).
    last_interval_at: Option<u64>,
    /// The furthest end of an interval sent since it connected: intervals
    /// before it are retransmissions.
    sent_max: u64,
    /// It connected as an incarnation we had not heard from: nothing is sent
    /// until its `Hello` says what it holds, or until this deadline.
    hello_pending: Option<u64>,
    /// What it accepts, from its `Hello` (this incarnation's): nothing larger
    /// is sent to it. Until then, what this replica accepts.
    limits: Option<Limits>,
    /// Its `Hello` said it holds nothing of our long log: it is sent our
    /// state rather than the log ([`ReplicaConfig::state_for_new_peers_after`]).
    wants_state: bool,
    /// What we hold of its log, contiguously, in this connection: at least
    /// the `base` its intervals name (what it knows we hold), advanced by
    /// contiguous intervals, and recorded in storage.
    held: Option<u64>,
    /// A state transfer from it whose first chunk (or part) we received in
    /// this connection: its `as_of`, and the variable through which every
    /// chunk since arrived (chunks are pipelined: one may be lost, and
    /// those after it arrive before it is sent again).
    transfer_in: Option<(u64, String)>,
    /// The parts of a variable's state it is sending us.
    staging: Option<Staging>,
    /// The last state from it merged from parts, as the transfer (`as_of`),
    /// the variable and its version: parts of it that come again are
    /// acknowledged at once (see `Message::StatePart`).
    merged_parts: Option<(u64, String, u64)>,
    /// Its deltas are refused here (see [`PeerStatus::stuck`]).
    stuck: Option<Stuck>,
    /// When the current connection came up.
    connected_since: Option<u64>,
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
}

/// The most records of when the log grew kept for [`PeerStatus::lag_ms`].
const MAX_SEQ_TIMES: usize = 1024;

/// Why the deltas a peer sends are not being merged (and so not
/// acknowledged: the peer sends them again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Since when (the caller's clock): the first refusal of this run.
    pub since: u64,
    /// The latest refusal's reason.
    pub reason: String,
}

/// A replica: a keyspace and the protocol state of each peer.
pub struct Replica<B> {
    ks: Keyspace<B>,
    config: ReplicaConfig,
    peers: BTreeMap<ReplicaId, Peer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Every peer has sent a complete interval since this replica opened.
    unfenced: bool,
    /// The latest `now` given.
    last_now: u64,
    /// When the log reached each of a few sequence numbers (see
    /// [`Replica::note_log_end`]).
    seq_times: VecDeque<(u64, u64)>,
    /// The fence lifts only once at least this many peers are known (see
    /// [`Replica::expect_peers`]).
    expected_peers: usize,
}

/// Advances `acked` over the early acknowledgements now contiguous with it,
/// and retires the intervals in flight it covers.
fn absorb_acks(p: &mut Peer) {
    while let Some((&start, &end)) = p.early_acks.first_key_value() {
        if start > p.acked {
            break;
        }
        p.early_acks.remove(&start);
        p.acked = p.acked.max(end);
    }
    let acked = p.acked;
    while p.flights.front().is_some_and(|(end, _)| *end <= acked) {
        p.flights.pop_front();
    }
    p.sent_through = p.sent_through.max(acked);
    if p.complete_sent.is_some_and(|end| end <= acked) {
        p.announce = false;
        p.complete_sent = None;
    }
}

/// Whether a state transfer to `p` may send something now: another part
/// of the variable in parts, or else another chunk, fewer than `window`
/// being unacknowledged. Always, with no transfer under way.
fn transfer_room(p: &Peer, window: usize) -> bool {
    match &p.transfer {
        None => true,
        Some(t) if t.split.is_some() => part_room(p, window),
        Some(t) => !t.all_sent && t.blocked.is_none() && t.units.len() < window,
    }
}

/// Whether another part of a variable's state may go to `p` now: its end
/// is not sent yet, and fewer than `window` parts are unacknowledged.
fn part_room(p: &Peer, window: usize) -> bool {
    p.transfer
        .as_ref()
        .and_then(|t| t.split.as_ref())
        .is_some_and(|s| (!s.ahead.is_empty() || s.next.is_some()) && s.unacked.len() < window)
}

/// Whether version `a` is later than `b`: versions of one keyspace opening
/// count up (from a random start, wrapping).
fn newer(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

fn hostile(peer: ReplicaId, why: impl Into<String>) -> ProtocolError {
    ProtocolError::Hostile {
        peer,
        why: why.into(),
    }
}

impl<B: Backend> Replica<B> {
    /// A replica over `ks`, with no peers yet.
    pub fn new(ks: Keyspace<B>, config: ReplicaConfig) -> Self {
        Replica {
            ks,
            config,
            peers: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            unfenced: false,
            last_now: 0,
            seq_times: VecDeque::new(),
            expected_peers: 0,
        }
    }

    /// Keeps the bag fence up until at least `n` peers are known and every
    /// known peer has sent a complete interval. A runtime that learns peer
    /// ids only as they connect calls this at start with the size of its peer
    /// set, so that a write or a first connection cannot lift the fence
    /// before the others were heard from.
    pub fn expect_peers(&mut self, n: usize) {
        self.expected_peers = n;
    }

    /// Notes the time of an input. If the caller's clock went back (a wall
    /// clock set back), what is in flight counts as sent now: otherwise its
    /// retransmission would wait until the clock caught up again.
    fn observe(&mut self, now: u64) {
        if now < self.last_now {
            let wait = self.config.retransmit_ms;
            for p in self.peers.values_mut() {
                if let Some(at) = &mut p.hello_pending {
                    *at = (*at).min(now + wait);
                }
                for (_, sent) in p.flights.iter_mut().chain(p.chunk.as_mut()) {
                    *sent = (*sent).min(now);
                }
                if let Some(at) = &mut p.last_interval_at {
                    *at = (*at).min(now);
                }
            }
        }
        self.last_now = now;
        self.note_log_end(now);
    }

    /// Records when the log grew past its last recorded end, so that a
    /// peer's lag can be told as time: the age of the oldest entry it has
    /// not acknowledged. Bounded: past [`MAX_SEQ_TIMES`] records every
    /// other one is dropped, which keeps the span and coarsens the times.
    fn note_log_end(&mut self, now: u64) {
        let last = self.ks.last_seq();
        if self.seq_times.back().is_none_or(|&(seq, _)| seq < last) {
            self.seq_times.push_back((last, now));
            if self.seq_times.len() > MAX_SEQ_TIMES {
                let mut keep = false;
                self.seq_times.retain(|_| {
                    keep = !keep;
                    keep
                });
            }
        }
    }

    /// How long ago the oldest log entry after `acked` was written, as far
    /// as [`Replica::note_log_end`] recorded it (at least this long: the
    /// entry is known to exist only from the first record past it); `None`
    /// if the peer holds the whole log.
    fn unacked_age(&self, acked: u64) -> Option<u64> {
        if acked >= self.ks.last_seq() {
            return None;
        }
        // The records are in log order: the first past `acked`, by bisection.
        let first = self.seq_times.partition_point(|&(seq, _)| seq <= acked);
        let at = self
            .seq_times
            .get(first)
            .map_or(self.last_now, |&(_, at)| at);
        Some(self.last_now.saturating_sub(at))
    }

    /// The runtime saw the link to `id` carry something at `now` (a QUIC
    /// keep-alive, say) though no message arrived: its last contact is now.
    pub fn heard_from(&mut self, id: ReplicaId, now: u64) {
        if let Some(p) = self.peers.get_mut(&id).filter(|p| p.connected) {
            p.last_contact = Some(p.last_contact.map_or(now, |t| t.max(now)));
        }
    }

    /// Whether bag takes and transfers must wait. A replica that just opened
    /// may run on storage restored from an old backup, holding elements it
    /// already took or handed away after that backup; only its peers know. So
    /// from opening until every peer has sent it a complete interval (all that
    /// peer held), it does not take or transfer. A replica with no peers is
    /// never fenced; peers added once the fence lifted do not fence it again.
    pub fn fenced(&self) -> bool {
        !self.unfenced
            && (self.peers.len() < self.expected_peers || !self.peers.values().all(|p| p.caught_up))
    }

    /// The peers the fence waits for: those known and not yet caught up,
    /// and how many more it expects to hear from (see
    /// [`Replica::expect_peers`]).
    pub fn fence_waits(&self) -> (Vec<ReplicaId>, usize) {
        let behind = self
            .peers
            .iter()
            .filter(|(_, p)| !p.caught_up)
            .map(|(id, _)| *id)
            .collect();
        (behind, self.expected_peers.saturating_sub(self.peers.len()))
    }

    fn update_fence(&mut self) {
        if !self.unfenced && !self.fenced() {
            self.unfenced = true;
            if !self.peers.is_empty() {
                self.events.push_back(Event::Unfenced);
            }
        }
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.ks.replica_id()
    }

    /// The keyspace, for local reads and writes. After writing, call
    /// [`Replica::handle_local_writes`].
    pub fn keyspace(&mut self) -> &mut Keyspace<B> {
        &mut self.ks
    }

    /// Replaces the protocol limits and timers.
    pub fn set_config(&mut self, config: ReplicaConfig) {
        self.config = config;
    }

    /// The protocol configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The keyspace, for reads.
    pub fn keyspace_ref(&self) -> &Keyspace<B> {
        &self.ks
    }

    /// Adds a peer (disconnected until [`Replica::set_connected`]).
    pub fn add_peer(&mut self, id: ReplicaId) {
        if id != self.id() {
            let unfenced = self.unfenced;
            self.peers.entry(id).or_insert_with(|| Peer {
                caught_up: unfenced,
                ..Peer::default()
            });
            self.update_floor();
        }
    }

    /// Forgets a peer; log entries it had not acknowledged may now be dropped.
    pub fn remove_peer(&mut self, id: ReplicaId) {
        self.peers.remove(&id);
        self.transmits.retain(|t| t.to != id);
        self.update_floor();
        if !self.peers.is_empty() {
            self.update_fence();
        }
    }

    /// Records that the runtime connected to a peer running as `incarnation`
    /// (`Some`), or lost it (`None`). On connect, sending starts again from what
    /// the peer acknowledged, unless it comes back as another incarnation: a
    /// restarted, or restored, peer may hold less than it once acknowledged, so
    /// it is sent everything again (by deltas, or by state transfer).
    pub fn set_connected(&mut self, id: ReplicaId, incarnation: Option<ReplicaId>, now: u64) {
        self.observe(now);
        if let Some(p) = self.peers.get_mut(&id) {
            p.connected = incarnation.is_some();
            p.connected_since = incarnation.map(|_| now);
            p.flights.clear();
            p.early_acks.clear();
            p.chunk = None;
            p.announce = incarnation.is_some();
            p.complete_sent = None;
            p.last_interval_at = None;
            p.held = None;
            p.transfer_in = None;
            p.staging = None;
            p.merged_parts = None;
            if let Some(t) = &mut p.transfer {
                // What was in flight is lost with the connection; the
                // peer's limits are learned again.
                t.go_back();
            }
            p.hello_pending = None;
            p.wants_state = false;
            match incarnation {
                Some(inc) => {
                    if p.incarnation != Some(inc) {
                        // A restarted (or restored) peer, or us restarted: it
                        // may hold less than it acknowledged, or we forgot
                        // what it did. Its Hello says what it holds, and
                        // what it accepts now.
                        p.acked = 0;
                        p.limits = None;
                        p.transfer = None;
                        p.hello_pending = Some(now + self.config.retransmit_ms);
                    }
                    p.incarnation = Some(inc);
                    p.sent_through = p.acked;
                    p.sent_max = p.acked;
                }
                None => self.transmits.retain(|t| t.to != id),
            }
            if incarnation.is_some() {
                // Unreadable storage says nothing: the peer then resends all.
                let holds = self.ks.peer_holds(id).ok().flatten();
                let limits = self.limits();
                self.send(id, &Message::Hello { holds, limits });
            }
        }
        self.update_floor();
    }

    /// Every peer's sync state, by id.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let last = self.ks.last_seq();
        self.peers
            .iter()
            .map(|(id, p)| PeerStatus {
                id: *id,
                connected: p.connected,
                acked: p.acked,
                lag: last.saturating_sub(p.acked),
                transferring: p.transfer.is_some(),
                transfer: p.transfer.as_ref().map(|t| TransferStatus {
                    as_of: t.as_of,
                    done_through: t.cursor.clone(),
                    in_parts: t.split.as_ref().map(|s| {
                        let acked = s.sent - s.unacked.len() as u32;
                        (s.name.clone(), s.sent, acked)
                    }),
                    why: t.why.clone(),
                    blocked: t.blocked.clone(),
                }),
                last_contact: p.last_contact,
                caught_up: p.caught_up,
                limits: p.limits,
                stats: p.stats,
                lag_ms: self.unacked_age(p.acked),
                holds: p.held,
                stuck: p.stuck.clone(),
                connected_since: p.connected_since,
            })
            .collect()
    }

    /// A local write at time `now`: applies `op` to the variable `name`
    /// ([`Keyspace::apply`]: the delta is logged, and flushed if the
    /// keyspace flushes each write) and queues the delta for the peers. An
    /// owner-only operation (a bag take or transfer) is refused while the
    /// replica is fenced, before anything happens.
    pub fn write(&mut self, now: u64, name: &str, op: Op) -> crate::Result<Outcome> {
        if op.owner_only() && self.fenced() {
            return Err(Error::Fenced {
                name: name.to_string(),
                waiting: self.fence_waiting(),
            });
        }
        let out = self.ks.apply(name, op, now)?;
        if out.applied.is_some() {
            self.handle_local_writes(now);
        }
        Ok(out)
    }

    /// Whom the fence waits for, in words: the peers not yet caught up and
    /// how many configured peers were not heard from.
    pub fn fence_waiting(&self) -> String {
        let (behind, unheard) = self.fence_waits();
        let mut parts = Vec::new();
        if !behind.is_empty() {
            let ids: Vec<String> = behind.iter().map(|id| id.to_string()).collect();
            parts.push(format!(
                "peers {} (connected or known, not yet caught up)",
                ids.join(", ")
            ));
        }
        if unheard > 0 {
            parts.push(format!(
                "{unheard} configured peer(s) not yet heard from (see `atoll peer list`)"
            ));
        }
        if parts.is_empty() {
            parts.push("its peers".to_string());
        }
        format!(
            "{}; retry once they are reachable, or remove a peer that is gone for good (atoll peer remove)",
            parts.join(" and ")
        )
    }

    /// After a merge made outside [`Replica::handle_message`] (the store's
    /// own `merge`): queues what changed for the peers. Local writes do this
    /// in [`Replica::write`].
    pub fn handle_local_writes(&mut self, now: u64) {
        self.observe(now);
        self.update_fence();
    }

    /// Handles a message from peer `from`.
    pub fn handle_message(
        &mut self,
        now: u64,
        from: ReplicaId,
        bytes: &[u8],
    ) -> Result<(), ProtocolError> {
        if !self.peers.contains_key(&from) {
            self.observe(now);
            return Err(ProtocolError::UnknownPeer(from));
        }
        let decoded = self.decoder().decode(bytes);
        self.handle_decoded(now, from, decoded)
    }

    /// What this replica accepts, as its `Hello` tells its peers.
    pub fn limits(&self) -> Limits {
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Limits {
            max_message_len: wide(self.config.max_message_len),
            max_delta_len: wide(self.ks.config().max_delta_len),
            max_state_len: wide(self.config.max_state_len),
        }
    }

    /// What peer `id` said it accepts, in its `Hello` (this incarnation's);
    /// `None` before that.
    pub fn limits_of(&self, id: ReplicaId) -> Option<Limits> {
        self.peers.get(&id).and_then(|p| p.limits)
    }

    /// What `id` accepts, as far as we know: the lesser of its limits (from
    /// its `Hello`) and ours (what we would accept from it).
    fn peer_limits(&self, id: ReplicaId) -> (usize, usize) {
        let ours = (self.config.max_message_len, self.ks.config().max_delta_len);
        let narrow = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match self.limits_of(id) {
            Some(l) => (
                ours.0.min(narrow(l.max_message_len)),
                ours.1.min(narrow(l.max_delta_len)),
            ),
            None => ours,
        }
    }

    /// The limits this replica decodes messages under: a copy, to decode
    /// messages ahead (on another thread) for [`Replica::handle_decoded`].
    pub fn decoder(&self) -> Decoder {
        Decoder {
            max_message_len: self.config.max_message_len,
            max_delta_len: self.ks.config().max_delta_len,
            max_state_len: self.config.max_state_len,
        }
    }

    /// [`Replica::handle_message`] for a message decoded ahead by
    /// [`Replica::decoder`]. The same checks apply, in the same order.
    pub fn handle_decoded(
        &mut self,
        now: u64,
        from: ReplicaId,
        decoded: Decoded,
    ) -> Result<(), ProtocolError> {
        let deltas = matches!(decoded.msg, Ok(Message::Deltas { .. }));
        let result = self.dispatch(now, from, decoded);
        self.note_log_end(now);
        match &result {
            Err(ProtocolError::Merge { source, .. }) => {
                if let Some(p) = self.peers.get_mut(&from) {
                    let reason = source.to_string();
                    let first = p.stuck.is_none();
                    let since = p.stuck.as_ref().map_or(now, |s| s.since);
                    p.stuck = Some(Stuck {
                        since,
                        reason: reason.clone(),
                    });
                    if first {
                        self.events
                            .push_back(Event::PeerStuck { peer: from, reason });
                    }
                }
            }
            Ok(()) if deltas => {
                // An interval merged (and acknowledged, unless it was too
                // large): whatever held the link back is over.
                if let Some(p) = self.peers.get_mut(&from) {
                    p.stuck = None;
                }
            }
            _ => {}
        }
        result
    }

    fn dispatch(
        &mut self,
        now: u64,
        from: ReplicaId,
        decoded: Decoded,
    ) -> Result<(), ProtocolError> {
        self.observe(now);
        let peer = self
            .peers
            .get_mut(&from)
            .ok_or(ProtocolError::UnknownPeer(from))?;
        peer.stats.messages_received += 1;
        peer.last_contact = Some(now);
        peer.stats.bytes_received += decoded.len as u64;
        let Decoded {
            msg,
            states,
            part: decoded_part,
            ..
        } = decoded;
        let msg =
            msg.map_err(|e: DecodeError| hostile(from, format!("undecodable message: {e}")))?;
        match msg {
            Message::Deltas {
                from: start,
                to,
                base,
                vars,
                complete,
            } => {
                if start > to {
                    return Err(hostile(from, "interval ends before it starts"));
                }
                if !self.merge_all(now, from, vars, states)? {
                    // A delta larger than we accept: the sender did not know
                    // our limits yet (our Hello was lost, or late). Told them
                    // again, it sends the interval again within them; this
                    // one is not acknowledged.
                    let holds = self.ks.peer_holds(from).ok().flatten();
                    let limits = self.limits();
                    self.send(from, &Message::Hello { holds, limits });
                    return Ok(());
                }
                // We hold the peer's log through what it knows we hold
                // (`base`); an interval that starts within that extends it.
                let p = self.peers.get_mut(&from).expect("checked above");
                let mut held = p.held.unwrap_or(base).max(base);
                if start <= held {
                    held = held.max(to);
                }
                self.record_held(from, held)?;
                if complete {
                    self.peers.get_mut(&from).expect("checked above").caught_up = true;
                    self.update_fence();
                }
                self.send(
                    from,
                    &Message::Ack {
                        from: start,
                        seq: to,
                    },
                );
            }
            Message::Ack { from: start, seq } => {
                if seq > self.ks.last_seq() {
                    return Err(hostile(
                        from,
                        format!("ack of {seq} beyond our log end {}", self.ks.last_seq()),
                    ));
                }
                if start > seq {
                    return Err(hostile(from, "acknowledged interval ends before it starts"));
                }
                let window = self.config.max_in_flight.max(1);
                let p = self.peers.get_mut(&from).expect("checked above");
                if p.transfer.is_none() {
                    // The peer holds (start, seq]; it holds everything through
                    // `seq` only once that joins what it acknowledged before.
                    if start <= p.acked {
                        p.acked = p.acked.max(seq);
                    } else if p.early_acks.len() < 4 * window {
                        let end = p.early_acks.entry(start).or_insert(seq);
                        *end = (*end).max(seq);
                    }
                    absorb_acks(p);
                    self.update_floor();
                }
            }
            Message::State {
                as_of,
                after,
                vars,
                last,
            } => {
                let through = vars
                    .last()
                    .map_or_else(|| after.clone(), |v| v.name.clone());
                let p = self.peers.get_mut(&from).expect("checked above");
                if after.is_empty() {
                    p.transfer_in = Some((as_of, String::new()));
                }
                // Contiguous with what arrived before it, or not.
                if let Some((_, held)) = p
                    .transfer_in
                    .as_mut()
                    .filter(|(a, held)| *a == as_of && *held == after)
                {
                    held.clone_from(&through);
                }
                if !self.merge_all(now, from, vars, states)? {
                    // States are decoded under `max_state_len`.
                    let max = self.config.max_state_len;
                    return Err(hostile(
                        from,
                        format!(
                            "a state in a chunk is larger than the largest state accepted \
                             (max_state_len, {max} bytes); raise it to accept this state"
                        ),
                    ));
                }
                if last {
                    self.transfer_in_done(from, as_of, &through)?;
                }
                self.send(
                    from,
                    &Message::StateAck {
                        as_of,
                        through,
                        last,
                    },
                );
            }
            Message::StatePart {
                as_of,
                after,
                name,
                kind,
                version,
                index,
                part,
                end,
                last,
            } => {
                let decoded = decoded_part.expect("decoded with the message");
                let (state, range) = (*decoded).map_err(|e| {
                    hostile(from, format!("undecodable part {index} of {name:?}: {e}"))
                })?;
                crate::keyspace::validate_name(&name).map_err(|e| hostile(from, e.to_string()))?;
                if state.kind() != kind {
                    return Err(hostile(
                        from,
                        format!("a part of {name:?} is a {}, not a {kind}", state.kind()),
                    ));
                }
                let max = self.config.max_state_len;
                let p = self.peers.get_mut(&from).expect("checked above");
                p.stats.state_parts_received += 1;
                let ack = |index| Message::StatePartAck {
                    as_of,
                    name: name.clone(),
                    version,
                    index,
                };
                if p.merged_parts
                    .as_ref()
                    .is_some_and(|(a, n, v)| (*a, n, *v) == (as_of, &name, version))
                {
                    // A part of a state merged already, sent again: the
                    // sender gave up waiting and started the variable over,
                    // and counts only acks of parts it sent since. Each is
                    // acknowledged, the end part too (it means merged).
                    self.send(from, &ack(index));
                    return Ok(());
                }
                // Within a connection the sender's transfers start at
                // growing log positions: a part of an earlier one was
                // delayed on the way, and must not replace the parts of
                // the current one kept so far.
                let current = p
                    .staging
                    .as_ref()
                    .map(|s| s.as_of)
                    .max(p.transfer_in.as_ref().map(|(a, _)| *a));
                if current.is_some_and(|c| as_of < c) {
                    return Ok(());
                }
                // Parts may arrive in any order, and twice. Those of another
                // state of the variable replace those kept if they are of a
                // later one or start it (part 0: a sender that started over,
                // perhaps since it restarted); otherwise they are dropped,
                // and not acknowledged.
                let fresh = match &p.staging {
                    Some(s) if s.as_of == as_of && s.name == name => {
                        if s.version != version && index != 0 && !newer(version, s.version) {
                            return Ok(());
                        }
                        s.version != version
                    }
                    _ => true,
                };
                if fresh {
                    p.staging = Some(Staging {
                        as_of,
                        name: name.clone(),
                        version,
                        parts: BTreeMap::new(),
                        end: None,
                        bytes: 0,
                    });
                }
                if index == 0 && after.is_empty() {
                    p.transfer_in = Some((as_of, String::new()));
                }
                let staged = p.staging.as_mut().expect("kept above");
                if end {
                    if staged.end.is_some_and(|(e, _)| e != index) {
                        return Err(hostile(from, format!("two end parts of {name:?}")));
                    }
                    staged.end = Some((index, last));
                }
                if let std::collections::btree_map::Entry::Vacant(slot) = staged.parts.entry(index)
                {
                    staged.bytes += part.len();
                    if staged.bytes > max {
                        p.staging = None;
                        return Err(hostile(
                            from,
                            format!(
                                "the state of {name:?} is larger than the largest state accepted \
                                 (max_state_len, {max} bytes); raise it to accept this state"
                            ),
                        ));
                    }
                    slot.insert((state, part, range));
                }
                let complete = staged.end.and_then(|(e, last)| {
                    let all = staged.parts.len() as u64 == u64::from(e) + 1
                        && staged.parts.last_key_value().is_some_and(|(k, _)| *k == e);
                    all.then_some((e, last))
                });
                let Some((end_index, last)) = complete else {
                    // Kept. The end part is acknowledged only once merged.
                    if !end {
                        self.send(from, &ack(index));
                    }
                    return Ok(());
                };
                let parts = p.staging.take().expect("kept above").parts;
                let entries = parts.values().map(|(d, ..)| d.entries()).sum();
                let mut raw = Vec::with_capacity(parts.len());
                let mut decoded = Vec::with_capacity(parts.len());
                for (d, bytes, range) in parts.into_values() {
                    decoded.push(d);
                    raw.push((bytes, range));
                }
                let state = State::assemble(decoded).map_err(|e| {
                    hostile(from, format!("the state of {name:?} from its parts: {e}"))
                })?;
                // Logged as it came, not encoded again.
                let ranges: Vec<(&[u8], _)> =
                    raw.iter().map(|(b, r)| (&b[..], r.clone())).collect();
                let encoded = atoll_crdt::variable::splice_parts(&ranges, entries, state.context());
                drop(ranges);
                drop(raw);
                self.merge_one(now, from, &name, kind, state, encoded)?;
                let p = self.peers.get_mut(&from).expect("checked above");
                p.merged_parts = Some((as_of, name.clone(), version));
                if let Some((_, held)) = p
                    .transfer_in
                    .as_mut()
                    .filter(|(a, held)| *a == as_of && *held == after)
                {
                    held.clone_from(&name);
                }
                if last {
                    self.transfer_in_done(from, as_of, &name)?;
                }
                if index != end_index {
                    self.send(from, &ack(index));
                }
                self.send(from, &ack(end_index));
            }
            Message::StatePartAck {
                as_of,
                name,
                version,
                index,
            } => {
                let p = self.peers.get_mut(&from).expect("checked above");
                let Some(t) = p.transfer.as_mut().filter(|t| t.as_of == as_of) else {
                    return Ok(());
                };
                let Some(s) = t
                    .split
                    .as_mut()
                    .filter(|s| s.name == name && s.version == version && index < s.sent)
                else {
                    return Ok(());
                };
                if s.unacked.remove(&index).is_none() {
                    // A duplicate: nothing new.
                    return Ok(());
                }
                s.progress = true;
                // The end part is acknowledged once the state is merged.
                let merged = s.end_index == Some(index);
                let mut done = false;
                if merged {
                    t.split = None;
                    t.eager = false;
                    t.backoff = 0;
                    // The variable's own unit, the last one sent (no chunk
                    // follows a variable in parts before its end is acked).
                    debug_assert!(t.units.back().is_some_and(|u| u.parts));
                    if let Some(u) = t.units.back_mut() {
                        u.acked = true;
                    }
                    done = t.advance();
                }
                let waiting = t.units.iter().any(|u| !u.acked)
                    || t.split.as_ref().is_some_and(|s| !s.unacked.is_empty());
                p.chunk = waiting.then_some((as_of, now));
                if done {
                    self.transfer_done(from, as_of);
                }
            }
            Message::Hello { holds, limits } => {
                let p = self.peers.get_mut(&from).expect("checked above");
                p.limits = Some(limits);
                if let Some(t) = &mut p.transfer {
                    // Its limits may have changed: a state held back as too
                    // large is tried again.
                    t.blocked = None;
                }
                if p.hello_pending.is_some() {
                    let resume = holds.map_or(0, |(inc, seq)| self.ks.resume_point(inc, seq));
                    let after = self.config.state_for_new_peers_after;
                    let first = self.ks.storage().first_seq().ok().flatten();
                    let span = first.map_or(0, |f| self.ks.last_seq().saturating_sub(f) + 1);
                    p.hello_pending = None;
                    p.acked = resume;
                    p.sent_through = resume;
                    p.sent_max = resume;
                    p.early_acks.clear();
                    p.wants_state = resume == 0 && after > 0 && span >= after;
                    self.update_floor();
                }
            }
            Message::StateAck {
                as_of,
                through,
                last,
            } => {
                let p = self.peers.get_mut(&from).expect("checked above");
                let Some(t) = p.transfer.as_mut().filter(|t| t.as_of == as_of) else {
                    return Ok(());
                };
                // The chunk it acknowledges, if still in flight; anything
                // else is a stale duplicate (of a chunk sent before a
                // timeout sent them all again, say).
                let Some(unit) = t
                    .units
                    .iter_mut()
                    .find(|u| !u.parts && !u.acked && u.through == through && u.last == last)
                else {
                    return Ok(());
                };
                unit.acked = true;
                let done = t.advance();
                p.chunk = (!t.units.is_empty()).then_some((as_of, now));
                if done {
                    self.transfer_done(from, as_of);
                }
            }
        }
        Ok(())
    }

    /// A state transfer to `to` as of `as_of` ended (its last variable was
    /// acknowledged): the peer holds our log through `as_of`.
    fn transfer_done(&mut self, to: ReplicaId, as_of: u64) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        p.acked = p.acked.max(as_of);
        p.sent_through = p.acked;
        p.transfer = None;
        self.update_floor();
        self.events
            .push_back(Event::StateTransferFinished { peer: to, as_of });
    }

    /// The last variable of a state transfer from `from` as of `as_of`,
    /// `through`, was merged: if every chunk from its first through it
    /// arrived, we hold all it held through `as_of`.
    fn transfer_in_done(
        &mut self,
        from: ReplicaId,
        as_of: u64,
        through: &str,
    ) -> Result<(), ProtocolError> {
        let p = &self.peers[&from];
        if p.transfer_in
            .as_ref()
            .is_some_and(|(a, held)| *a == as_of && held == through)
        {
            let held = p.held.unwrap_or(0).max(as_of);
            self.record_held(from, held)?;
        }
        Ok(())
    }

    /// Notes (and stores) that we hold peer `from`'s log through `seq`.
    fn record_held(&mut self, from: ReplicaId, seq: u64) -> Result<(), ProtocolError> {
        let p = self.peers.get_mut(&from).expect("known");
        if p.held == Some(seq) {
            return Ok(());
        }
        p.held = Some(seq);
        let inc = p.incarnation.unwrap_or(from);
        self.ks
            .set_peer_holds(from, (inc, seq))
            .map_err(|source| ProtocolError::Merge { peer: from, source })
    }

    /// Merges one variable's state, assembled from its parts; `encoded` is
    /// its encoding, logged as it is if all of it is new here.
    fn merge_one(
        &mut self,
        now: u64,
        from: ReplicaId,
        name: &str,
        kind: Kind,
        state: State,
        encoded: Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let origin = self
            .peers
            .get(&from)
            .and_then(|p| p.incarnation)
            .unwrap_or(from);
        match self
            .ks
            .merge_state(origin, name, kind, state, Some(encoded.into()), now)
        {
            Ok(Some(applied)) => self.events.push_back(Event::Applied(applied)),
            Ok(None) => {}
            // A type mismatch that is no conflict: a system variable or a
            // conflict copy of another kind, which no replica writes.
            Err(e @ (Error::BadDelta { .. } | Error::TypeMismatch { .. })) => {
                return Err(hostile(from, e.to_string()))
            }
            Err(source) => return Err(ProtocolError::Merge { peer: from, source }),
        }
        self.report_conflicts();
        Ok(())
    }

    /// Turns the type conflicts the keyspace met into events.
    fn report_conflicts(&mut self) {
        for c in self.ks.take_conflicts() {
            self.events.push_back(match c {
                ConflictEvent::Found(c) => Event::Conflict(c),
                ConflictEvent::Moved(applied) => Event::Applied(applied),
            });
        }
    }

    /// Merges the deltas (or states) of a message; `false`, and nothing
    /// merged, if one is larger than this replica accepts.
    fn merge_all(
        &mut self,
        now: u64,
        from: ReplicaId,
        vars: Vec<VarDelta>,
        states: Vec<Result<State, DecodeError>>,
    ) -> Result<bool, ProtocolError> {
        if states
            .iter()
            .any(|s| matches!(s, Err(DecodeError::TooLarge { .. })))
        {
            return Ok(false);
        }
        // Log what arrives under the sender's incarnation, so that it is not sent
        // back to that same incarnation (but is, to a restarted one).
        let origin = self
            .peers
            .get(&from)
            .and_then(|p| p.incarnation)
            .unwrap_or(from);
        debug_assert_eq!(vars.len(), states.len(), "decoded with the message");
        for (v, state) in vars.into_iter().zip(states) {
            match self
                .ks
                .merge_decoded(origin, &v.name, v.kind, state, v.delta.into(), now)
            {
                Ok(Some(applied)) => self.events.push_back(Event::Applied(applied)),
                Ok(None) => {}
                Err(Error::BadDelta {
                    source: DecodeError::TooLarge { .. },
                    ..
                }) => return Ok(false),
                // A type mismatch here is no conflict (see `merge_one`).
                Err(
                    e @ (Error::BadDelta { .. }
                    | Error::InvalidName { .. }
                    | Error::TypeMismatch { .. }),
                ) => {
                    return Err(hostile(from, e.to_string()));
                }
                Err(source) => return Err(ProtocolError::Merge { peer: from, source }),
            }
            self.report_conflicts();
        }
        Ok(true)
    }

    /// Handles the passing of time: re-sends what was not acknowledged in time.
    pub fn handle_timeout(&mut self, now: u64) {
        self.observe(now);
        let late = |sent: &u64| now >= sent + self.config.retransmit_ms;
        let mut resend = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            // Go-back-N: when the oldest interval is overdue, everything after
            // what the peer acknowledged is sent again.
            if p.flights.front().is_some_and(|(_, sent)| late(sent)) {
                p.flights.clear();
                p.sent_through = p.acked;
                p.complete_sent = None;
                p.stats.retransmits += 1;
            }
            if chunk_deadline(p, self.config.retransmit_ms).is_some_and(|at| now >= at) {
                p.chunk = None;
                p.stats.retransmits += 1;
                if let Some(t) = p.transfer.as_mut() {
                    let chunk_overdue = t.units.iter().any(|u| !u.parts && !u.acked);
                    if !chunk_overdue && t.split.as_ref().is_some_and(|s| !s.progress) {
                        t.backoff = (t.backoff + 1).min(MAX_TRANSFER_BACKOFF);
                    }
                    match t.split.as_mut() {
                        // A chunk is overdue: go-back-N, as for intervals.
                        _ if chunk_overdue => t.go_back(),
                        // The parts of a variable not acknowledged go again.
                        Some(s) if s.progress => {
                            s.progress = false;
                            p.stats.state_parts_sent += s.unacked.len() as u64;
                            resend.push((*id, s.unacked.values().cloned().collect::<Vec<_>>()));
                            p.chunk = Some((t.as_of, now));
                        }
                        // No ack since the last timeout: the peer may have
                        // lost the parts it had (its end part is acknowledged
                        // only once merged). The variable starts over, every
                        // part at once.
                        Some(_) => {
                            t.drop_split();
                            t.eager = true;
                        }
                        None => {}
                    }
                }
            }
            if p.hello_pending.is_some_and(|at| now >= at) {
                // No Hello: send it everything.
                p.hello_pending = None;
            }
        }
        for (id, payloads) in resend {
            for payload in payloads {
                self.send_encoded(id, payload);
            }
        }
        self.update_fence();
    }

    /// The next message to send. Intervals and state chunks are built here,
    /// one per call, as quinn-proto builds packets: a runtime that hands each
    /// one to the network before asking for the next overlaps this replica's
    /// work with the network and the peer's. Call it until `None` after every
    /// input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.transmits.is_empty() {
            self.build_next(self.last_now);
        }
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Replica::handle_timeout`] next, if anything waits on time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let retransmit = self.peers.values().filter(|p| p.connected).flat_map(|p| {
            let interval = p
                .flights
                .front()
                .map(|(_, sent)| sent + self.config.retransmit_ms);
            interval
                .into_iter()
                .chain(chunk_deadline(p, self.config.retransmit_ms))
        });
        // A peer owed new deltas that the gossip interval holds back.
        let window = self.config.max_in_flight.max(1);
        let flushed = self.ks.flushed_seq();
        let gossip = self
            .peers
            .values()
            .filter(|p| p.connected && p.sent_through < flushed && p.flights.len() < window)
            .filter_map(|p| self.gossip_gate(p, self.last_now));
        let hello = self
            .peers
            .values()
            .filter(|p| p.connected)
            .filter_map(|p| p.hello_pending);
        retransmit.chain(gossip).chain(hello).min()
    }

    fn send(&mut self, to: ReplicaId, msg: &Message) {
        self.send_encoded(to, msg.encode());
    }

    fn send_encoded(&mut self, to: ReplicaId, payload: Vec<u8>) {
        if let Some(p) = self.peers.get_mut(&to) {
            p.stats.messages_sent += 1;
            p.stats.bytes_sent += payload.len() as u64;
        }
        // Bounded: the oldest are dropped; what they carried is sent again on timeout.
        if self.transmits.len() >= self.config.max_queued_transmits {
            self.transmits.pop_front();
        }
        self.transmits.push_back(Transmit { to, payload });
    }

    fn update_floor(&mut self) {
        let floor = self.peers.values().map(|p| p.acked).min();
        self.ks.set_acked_floor(floor);
        let connected = self.peers.values().filter(|p| p.connected);
        self.ks.set_coalesce_floor(connected.map(|p| p.acked).min());
    }

    /// If the gossip interval holds back the next new interval to `p`, when
    /// it lets it go.
    fn gossip_gate(&self, p: &Peer, now: u64) -> Option<u64> {
        let gap = self.config.gossip_interval_ms;
        if gap == 0 || p.transfer.is_some() || p.sent_through < p.sent_max {
            return None;
        }
        let at = p.last_interval_at? + gap;
        (now < at).then_some(at)
    }

    /// Queues the next message for the first connected peer (in id order)
    /// that is owed one: what it has not acknowledged, up to `max_in_flight`
    /// intervals (or state chunks, or parts of a state) ahead of its acks.
    fn build_next(&mut self, now: u64) {
        let ids: Vec<ReplicaId> = self.peers.keys().copied().collect();
        let window = self.config.max_in_flight.max(1);
        for id in ids {
            // Bounded: each round sends one message or advances past entries
            // the peer already has.
            for _ in 0..window + 64 {
                let p = &self.peers[&id];
                if !p.connected
                    || p.hello_pending.is_some()
                    || !transfer_room(p, window)
                    || p.flights.len() >= window
                    || self.gossip_gate(p, now).is_some()
                {
                    break;
                }
                let queued = self.transmits.len();
                let sent = self.send_next(id, now);
                if self.transmits.len() > queued {
                    return;
                }
                match sent {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        self.events.push_back(Event::SendFailed {
                            peer: id,
                            error: e.to_string(),
                        });
                        break;
                    }
                }
            }
        }
    }

    /// Sends the next interval, chunk or announcement to `id`; `false` if
    /// there was nothing to send.
    fn send_next(&mut self, id: ReplicaId, now: u64) -> crate::Result<bool> {
        // Only what is on disk leaves this replica.
        let last = self.ks.flushed_seq();
        let p = &self.peers[&id];
        if p.transfer.is_none() {
            let first = self.ks.storage().first_seq()?.unwrap_or(last + 1);
            if p.acked < last && (p.acked + 1 < first || p.wants_state) {
                let why = if p.acked + 1 < first {
                    TransferReason::LogTruncated
                } else {
                    TransferReason::NewPeer
                };
                self.start_transfer(id, last, why);
            } else if p.sent_through >= last {
                // Nothing to send; but a peer that connected since our last
                // complete interval is told it has everything.
                if p.flights.is_empty()
                    && p.announce
                    && p.complete_sent.is_none()
                    && last == self.ks.last_seq()
                {
                    let acked = p.acked;
                    let p = self.peers.get_mut(&id).expect("known");
                    p.flights.push_back((acked, now));
                    p.complete_sent = Some(acked);
                    self.send(
                        id,
                        &Message::Deltas {
                            from: acked,
                            to: acked,
                            base: acked,
                            vars: Vec::new(),
                            complete: true,
                        },
                    );
                }
                return Ok(false);
            }
        }
        let p = &self.peers[&id];
        match p.transfer {
            Some(_) => self.send_state_chunk(id, now),
            None => self.send_interval(id, p.sent_through, now),
        }
    }

    /// Starts a state transfer to `id` as of `as_of`: every variable's state,
    /// in place of the log through `as_of`. Intervals in flight are let go:
    /// the transfer covers them.
    fn start_transfer(&mut self, id: ReplicaId, as_of: u64, why: TransferReason) {
        let p = self.peers.get_mut(&id).expect("known");
        p.wants_state = false;
        p.flights.clear();
        p.early_acks.clear();
        p.transfer = Some(Transfer {
            as_of,
            why: why.clone(),
            cursor: String::new(),
            split: None,
            eager: false,
            blocked: None,
            units: VecDeque::new(),
            all_sent: false,
            peeked: None,
            backoff: 0,
        });
        p.stats.state_transfers += 1;
        self.events
            .push_back(Event::StateTransferStarted { peer: id, why });
    }

    /// The largest log entry sent to `id` as a delta: what it accepts (see
    /// [`Replica::peer_limits`]) and what fits in a message. A larger one (a
    /// large state merged from a state transfer) goes by state transfer.
    fn max_forwarded_delta(&self, id: ReplicaId) -> usize {
        let (message, delta) = self.peer_limits(id);
        delta.min(message.saturating_sub(STATE_MESSAGE_OVERHEAD))
    }

    /// Sends the interval after `from`; `false` if nothing could be sent.
    fn send_interval(&mut self, id: ReplicaId, from: u64, now: u64) -> crate::Result<bool> {
        let peer_incarnation = self.peers[&id].incarnation.unwrap_or(id);
        let shippable = self.ks.flushed_seq();
        // By name and kind: after a type conflict, the log holds entries of a
        // name as its old kind and as its new one.
        let mut joined: BTreeMap<(String, Kind), State> = BTreeMap::new();
        let mut whole: Vec<VarDelta> = Vec::new();
        let mut bytes = 0;
        let mut to = from;
        let max_delta = self.max_forwarded_delta(id);
        // What the message may carry: the deltas, and for each variable its
        // name and a few bytes (counted for every entry, as if none shared
        // a variable).
        let room = self
            .peer_limits(id)
            .0
            .saturating_sub(STATE_MESSAGE_OVERHEAD);
        let mut framing = 0;
        // The log is read in pieces of what the message can still carry (an
        // entry's stored size is at least its delta's), not all that one
        // message could name: large entries are read only when they are sent.
        let mut read: VecDeque<(u64, atoll_store::LogEntry)> = VecDeque::new();
        let (mut read_through, mut read_count, mut log_end) = (from, 0, false);
        loop {
            if bytes >= self.config.max_batch_bytes {
                break;
            }
            if read.is_empty() && !log_end && read_count < self.config.max_batch_entries {
                let piece = self.ks.deltas_within(
                    read_through,
                    self.config.max_batch_entries - read_count,
                    self.config.max_batch_bytes - bytes,
                )?;
                log_end = piece.is_empty();
                read_count += piece.len();
                read_through = piece.last().map_or(read_through, |(seq, _)| *seq);
                read.extend(piece);
            }
            let Some((seq, entry)) = read.pop_front() else {
                break;
            };
            if seq > shippable {
                break;
            }
            // Back-propagation avoidance: the peer (this incarnation of it) has
            // what came from it.
            if entry.origin == peer_incarnation {
                to = seq;
                continue;
            }
            if entry.delta.len() > max_delta {
                // Too large for a delta: the peer is brought past it by state
                // transfer, which sends large states in parts. The interval
                // so far goes first.
                if joined.is_empty() && whole.is_empty() {
                    let why = TransferReason::EntryTooLarge {
                        name: entry.name,
                        len: entry.delta.len(),
                    };
                    self.start_transfer(id, shippable, why);
                    return self.send_state_chunk(id, now);
                }
                break;
            }
            if bytes > 0 && bytes + entry.delta.len() + JOIN_SLACK > max_delta {
                // The interval's entries of one variable are joined into one
                // delta, no larger than their sum (and a few bytes of
                // counts): that too must be accepted. The entry goes next.
                break;
            }
            let framed = framing + entry.name.len() + VAR_FRAMING;
            if bytes > 0 && bytes + entry.delta.len() + framed > room {
                // The message would outgrow what the peer accepts.
                break;
            }
            framing = framed;
            to = seq;
            if entry.delta.len() >= self.config.ship_whole_bytes && !self.config.state_based {
                // A large entry (usually runs joined at a checkpoint) goes as
                // it is: decoding and joining it here would cost more than the
                // peer's merging it on its own.
                bytes += entry.delta.len();
                whole.push(VarDelta {
                    name: entry.name,
                    kind: entry.kind,
                    delta: entry.delta,
                });
                continue;
            }
            let delta = entry.decode_delta(seq)?;
            bytes += entry.delta.len();
            match joined.entry((entry.name, entry.kind)) {
                std::collections::btree_map::Entry::Occupied(mut d) => {
                    if d.get_mut().join(delta).is_err() {
                        // The entry says one kind and its delta is another.
                        return Err(atoll_store::StoreError::Corrupt {
                            key: format!("log entry {seq}"),
                            source: DecodeError::Invalid(atoll_crdt::InvalidState(
                                "log entry kind differs from its delta",
                            )),
                        }
                        .into());
                    }
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(delta);
                }
            }
        }
        if to == from {
            return Ok(false);
        }
        let p = self.peers.get_mut(&id).expect("known");
        p.sent_through = to;
        if joined.is_empty() && whole.is_empty() {
            // Everything in the interval came from the peer itself: it holds
            // the interval, as if it had acknowledged it.
            p.early_acks.insert(from, to);
            absorb_acks(p);
            self.update_floor();
            return Ok(true);
        }
        p.flights.push_back((to, now));
        if to > p.sent_max {
            p.sent_max = to;
            p.last_interval_at = Some(now);
        }
        let complete = to == self.ks.last_seq();
        if complete {
            p.complete_sent = Some(to);
        }
        if self.config.state_based {
            for ((name, kind), d) in joined.iter_mut() {
                if let Some(state) = self.ks.state(name)?.filter(|s| s.kind() == *kind) {
                    *d = state.clone();
                }
            }
        }
        // Everything it acknowledged, and the intervals of its own entries
        // skipped without a message: it holds all that.
        let base = self.peers[&id].acked;
        let mut vars = whole;
        vars.extend(joined.into_iter().map(|((name, _), d)| VarDelta {
            name,
            kind: d.kind(),
            delta: codec::encode(&d),
        }));
        self.send(
            id,
            &Message::Deltas {
                from,
                to,
                base,
                vars,
                complete,
            },
        );
        Ok(true)
    }

    fn send_state_chunk(&mut self, id: ReplicaId, now: u64) -> crate::Result<bool> {
        let t = self.peers[&id]
            .transfer
            .as_ref()
            .expect("a transfer is under way");
        if t.blocked.is_some() {
            return Ok(false);
        }
        if t.split.is_some() {
            return self.send_state_part(id, now);
        }
        if t.all_sent || t.units.len() >= self.config.max_in_flight.max(1) {
            return Ok(false);
        }
        let state_limit = self.peer_state_limit(id);
        // After the chunks in flight, if any.
        let (as_of, cursor, eager) = (t.as_of, t.sent_through().to_string(), t.eager);
        let part_bytes = self.part_bytes(id);
        let message = self.peer_limits(id).0;
        let mut vars = Vec::new();
        let mut bytes = 0;
        // The names are read a page at a time from the cursor on, not all of
        // them for every chunk. Every variable through `examined` is in this
        // chunk or an earlier one.
        let mut examined = cursor.clone();
        let mut page: VecDeque<(String, Kind)> = VecDeque::new();
        let mut page_end = false;
        loop {
            if bytes >= self.config.max_batch_bytes {
                break;
            }
            if page.is_empty() && !page_end {
                let next = self.ks.variables_after(&examined, STATE_PAGE)?;
                page_end = next.len() < STATE_PAGE;
                page.extend(next);
            }
            let Some((name, listed_kind)) = page.front().cloned() else {
                break;
            };
            // A state unchanged since the last checkpoint is cut into parts
            // as it is stored; any other is encoded from its tree.
            let mut cutter = None;
            // Read by the previous call, which stopped before it.
            let peeked = self
                .peers
                .get_mut(&id)
                .and_then(|p| p.transfer.as_mut())
                .and_then(|t| t.peeked.take())
                .filter(|(n, ..)| *n == name)
                .map(|(_, bytes, version)| (bytes, version));
            let read = match peeked {
                Some(read) => Some(read),
                None => self.ks.stored_state(&name)?,
            };
            let stored = match read {
                // Too large for the peer (its parts would add up to more):
                // held back, after the chunk of the variables before it.
                Some((bytes, _)) if bytes.len() > state_limit => {
                    if !vars.is_empty() {
                        break;
                    }
                    self.block(id, name, bytes.len());
                    return Ok(false);
                }
                // Too large to join the variables before it (it would go
                // in parts): it starts the next chunk, and is cut then,
                // from what was read now (a state as of now is as good as
                // one as of then: both hold all through `as_of`).
                Some((bytes, version)) if !vars.is_empty() && bytes.len() > part_bytes => {
                    let t = self.peers.get_mut(&id).and_then(|p| p.transfer.as_mut());
                    t.expect("under way").peeked = Some((name, bytes, version));
                    break;
                }
                Some((bytes, version)) => {
                    let corrupt = |source| atoll_store::StoreError::Corrupt {
                        key: format!("state of {name}"),
                        source,
                    };
                    // The variant index follows the format version.
                    if bytes.get(1) != Some(&(listed_kind as u8)) {
                        return Err(corrupt(atoll_crdt::codec::DecodeError::Invalid(
                            atoll_crdt::InvalidState(
                                "state kind differs from the variable's metadata",
                            ),
                        ))
                        .into());
                    }
                    // The first part now; the others as they are sent.
                    let mut parts =
                        atoll_crdt::variable::StoredParts::new(bytes).map_err(corrupt)?;
                    let first = parts
                        .next_part(part_bytes)
                        .expect("a first part")
                        .map_err(corrupt)?;
                    if first.next.is_some() {
                        cutter = Some(parts);
                    }
                    Some((VecDeque::from([first]), version, listed_kind))
                }
                None => None,
            };
            let found = match stored {
                Some(found) => Some(found),
                None => {
                    let version = self.ks.version(&name)?;
                    match (self.ks.state(&name)?, version) {
                        (Some(state), Some(version)) => {
                            let first = state
                                .encode_part(None, part_bytes)
                                .expect("the first part decodes no cursor");
                            let mut ahead = VecDeque::from([first]);
                            if eager && ahead[0].next.is_some() {
                                // Every part now, from this one state.
                                while let Some(after) = ahead.back().and_then(|p| p.next.clone()) {
                                    let part = state
                                        .encode_part(Some(&after), part_bytes)
                                        .expect("a cursor of our own encoding");
                                    ahead.push_back(part);
                                }
                            }
                            Some((ahead, version, state.kind()))
                        }
                        _ => None,
                    }
                }
            };
            if let Some((mut ahead, version, kind)) = found {
                // Every part is ahead if the last one is.
                let all_ahead = ahead.back().is_some_and(|p| p.next.is_none());
                if ahead.len() > 1 || ahead[0].next.is_some() {
                    // Larger than a part: it goes in parts, after this chunk.
                    if !vars.is_empty() {
                        break;
                    }
                    let t = self.peers.get_mut(&id).expect("known").transfer.as_mut();
                    let t = t.expect("under way");
                    t.units.push_back(Unit {
                        through: name.clone(),
                        last: false,
                        parts: true,
                        acked: false,
                    });
                    t.split = Some(Split {
                        name,
                        after: cursor.clone(),
                        kind,
                        version,
                        ahead,
                        all_ahead,
                        next: None,
                        stored: cutter,
                        sent: 0,
                        sent_bytes: 0,
                        unacked: BTreeMap::new(),
                        progress: false,
                        end_index: None,
                        last: false,
                    });
                    return self.send_state_part(id, now);
                }
                let delta = ahead.pop_front().expect("one part").bytes;
                if delta.len() > state_limit {
                    if !vars.is_empty() {
                        break;
                    }
                    self.block(id, name, delta.len());
                    return Ok(false);
                }
                // Each state with its name and a few bytes of framing.
                let framed = delta.len() + name.len() + VAR_FRAMING;
                let fits = bytes + framed + STATE_MESSAGE_OVERHEAD <= message;
                if !fits && !vars.is_empty() {
                    // It goes alone, in the next chunk.
                    break;
                }
                bytes += framed;
                vars.push(VarDelta {
                    name: name.clone(),
                    kind,
                    delta,
                });
            }
            page.pop_front();
            examined = name;
        }
        let last = self.ks.variables_after(&examined, 1)?.is_empty();
        let through = vars
            .last()
            .map_or_else(|| cursor.clone(), |v| v.name.clone());
        let p = self.peers.get_mut(&id).expect("known");
        // The oldest unacknowledged unit's time, kept while others go.
        p.chunk.get_or_insert((as_of, now));
        let t = p.transfer.as_mut().expect("under way");
        t.units.push_back(Unit {
            through,
            last,
            parts: false,
            acked: false,
        });
        t.all_sent = last;
        self.send(
            id,
            &Message::State {
                as_of,
                after: cursor,
                vars,
                last,
            },
        );
        Ok(true)
    }

    /// The largest state `id` accepts, as far as we know (its `Hello` says).
    fn peer_state_limit(&self, id: ReplicaId) -> usize {
        self.limits_of(id).map_or(usize::MAX, |l| {
            usize::try_from(l.max_state_len).unwrap_or(usize::MAX)
        })
    }

    /// Holds back the transfer to `id` at variable `name`, whose state
    /// (at least `bytes` long) `id` would refuse: it waits for the peer's
    /// next `Hello`, which may bring a larger limit.
    fn block(&mut self, id: ReplicaId, name: String, bytes: usize) {
        let limit = self.peer_state_limit(id) as u64;
        let p = self.peers.get_mut(&id).expect("known");
        let t = p.transfer.as_mut().expect("under way");
        // Its parts in flight are forgotten: the variable starts over once
        // let through. Chunks before it still wait for their acks.
        t.drop_split();
        if t.units.is_empty() {
            p.chunk = None;
        }
        let t = p.transfer.as_mut().expect("under way");
        let blocked = TooLarge {
            name,
            bytes: bytes as u64,
            limit,
        };
        t.blocked = Some(blocked.clone());
        self.events
            .push_back(Event::StateTransferBlocked { peer: id, blocked });
    }

    /// The size of a state's parts to `id`: as configured, and within a
    /// message it accepts.
    fn part_bytes(&self, id: ReplicaId) -> usize {
        let room = self
            .peer_limits(id)
            .0
            .saturating_sub(STATE_MESSAGE_OVERHEAD);
        self.config.state_part_bytes.min(room)
    }

    /// Sends the next part of the variable under way in parts, if fewer than
    /// `max_in_flight` are unacknowledged.
    fn send_state_part(&mut self, id: ReplicaId, now: u64) -> crate::Result<bool> {
        let window = self.config.max_in_flight.max(1);
        if !part_room(&self.peers[&id], window) {
            return Ok(false);
        }
        let p = self.peers.get_mut(&id).expect("known");
        let t = p.transfer.as_mut().expect("under way");
        let as_of = t.as_of;
        let s = t.split.as_mut().expect("in parts");
        let after = s.after.clone();
        let (name, kind, version) = (s.name.clone(), s.kind, s.version);
        let part_bytes = self.part_bytes(id);
        let p = self.peers.get_mut(&id).expect("known");
        let s = p.transfer.as_mut().and_then(|t| t.split.as_mut());
        let s = s.expect("in parts");
        let part = match s.ahead.pop_front() {
            Some(part) => part,
            None if s.all_ahead => unreachable!("every part was encoded ahead, the end last"),
            None if s.stored.is_some() => {
                let cutter = s.stored.as_mut().expect("matched");
                let part = cutter
                    .next_part(part_bytes)
                    .expect("not past the end part: it ends the split")
                    .map_err(|source| atoll_store::StoreError::Corrupt {
                        key: format!("state of {name}"),
                        source,
                    })?;
                if part.next.is_none() {
                    s.stored = None;
                }
                part
            }
            None => {
                let next = s.next.clone();
                if self.ks.version(&name)? != Some(version) {
                    // It changed since its first part: the parts would not
                    // be of one state. It starts over, every part at once
                    // (the peer drops what it kept at the new first part).
                    let p = self.peers.get_mut(&id).expect("known");
                    let t = p.transfer.as_mut().expect("under way");
                    t.drop_split();
                    t.eager = true;
                    if t.units.is_empty() {
                        p.chunk = None;
                    }
                    return Ok(true);
                }
                let state = self.ks.state(&name)?.expect("it has a version");
                state
                    .encode_part(next.as_deref(), part_bytes)
                    .expect("a cursor of our own encoding")
            }
        };
        let sent_bytes = {
            let p = &self.peers[&id];
            let s = p.transfer.as_ref().and_then(|t| t.split.as_ref());
            s.expect("in parts").sent_bytes + part.bytes.len()
        };
        if sent_bytes > self.peer_state_limit(id) {
            self.block(id, name, sent_bytes);
            return Ok(false);
        }
        let end = part.next.is_none();
        let last = end && self.ks.variables_after(&name, 1)?.is_empty();
        let p = self.peers.get_mut(&id).expect("known");
        if p.chunk.is_none() {
            p.chunk = Some((as_of, now));
        }
        let t = p.transfer.as_mut().expect("under way");
        if last {
            t.all_sent = true;
            debug_assert!(t.units.back().is_some_and(|u| u.parts));
            if let Some(u) = t.units.back_mut() {
                u.last = true;
            }
        }
        let s = t.split.as_mut().expect("in parts");
        let index = s.sent;
        s.sent += 1;
        s.sent_bytes = sent_bytes;
        s.next = part.next;
        s.last = last;
        if end {
            s.end_index = Some(index);
        }
        let payload = Message::StatePart {
            as_of,
            after,
            name,
            kind,
            version,
            index,
            part: part.bytes,
            end,
            last,
        }
        .encode();
        s.unacked.insert(index, payload.clone());
        p.stats.state_parts_sent += 1;
        self.send_encoded(id, payload);
        Ok(true)
    }
}

/// Room kept in a `State` message for everything but the one state in it.
const STATE_MESSAGE_OVERHEAD: usize = 4096;

/// A variable's bytes in a message besides its delta and name: its kind and
/// the lengths of both, with room to spare.
const VAR_FRAMING: usize = 16;

/// How much larger than the sum of their encodings the join of log entries
/// may encode: a join holds no element or dot that was in none of them, but
/// its counts may take a few more bytes each.
const JOIN_SLACK: usize = 64;

/// Variable names read at a time for a state transfer.
const STATE_PAGE: usize = 256;
