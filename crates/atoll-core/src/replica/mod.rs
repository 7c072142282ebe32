//! The replica: a keyspace plus each peer's sync state, driving the delta
//! anti-entropy protocol (Almeida et al. 2016, Algorithm 2, with the
//! back-propagation avoidance and redundancy removal of Enes et al. 2019).
//!
//! Inputs are calls: [`Replica::handle_message`], [`Replica::handle_timeout`],
//! local writes ([`Replica::write`]), and peer changes. Outputs are pulled,
//! in this order after each input: [`Replica::poll_transmit`] until `None`,
//! then [`Replica::poll_event`] until `None`, then [`Replica::poll_timeout`]
//! for when to call `handle_timeout` next. Each input is given the time
//! ([`Now`]): monotonic milliseconds for the timers (and `poll_timeout`'s
//! deadline), wall milliseconds for the keyspace.
//!
//! By concern:
//! - this module: the replica, its inputs and outputs, and local writes;
//! - `config`: [`ReplicaConfig`]; `events`: what it reports ([`Event`],
//!   [`PeerStatus`], [`ProtocolError`], ...);
//! - `peer`: each peer's sync state, and the peer set;
//! - `fence`: the bag fence after opening;
//! - `interval`: outbound deltas (the log's intervals each peer is sent);
//! - `transfer`: outbound state transfer, in chunks and in parts;
//! - `inbound`: each message handed to its handler; merging and acking;
//! - `staging`: inbound states in parts, kept aside until their end;
//! - `owners`: owned variables, where each operation runs, and what the
//!   node that decides about a variable does; `serving`: requests at that
//!   node; `requests`: operations sent to it; `handoff`: a variable's move
//!   to a new owner; `migration`: moves by use;
//! - `mirror`: which namespaces travel between which nodes.

use crate::protocol::{Decoded, Decoder, Limits, Message, PartDecoded, VarDelta};
use crate::{Answer, Applied, Conflict, ConflictEvent, Error, Keyspace, Op, Outcome};
use atoll_crdt::codec::{self, DecodeError};
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::Backend;
use std::collections::{BTreeMap, VecDeque};

mod check;
mod config;
mod escrow;
mod events;
mod fence;
mod handoff;
mod inbound;
mod interval;
mod migration;
mod mirror;
mod owners;
mod peer;
mod placement;
mod requests;
mod serving;
mod shares;
mod staging;
mod transfer;

pub use check::{CheckReport, CheckResult, Differing, NodeCheck, MAX_LISTED};
pub use config::ReplicaConfig;
pub use events::{
    Event, PeerStats, PeerStatus, ProtocolError, Stuck, TooLarge, TransferReason, TransferStatus,
    Transmit,
};
pub use migration::Migration;
pub use mirror::{Mirroring, NsMirror, NsTraffic};
use peer::{absorb_acks, chunk_deadline, known, part_room, transfer_room, Peer};
pub use placement::{OwnedRule, Place, SITES_VAR};
pub use requests::Requested;
pub use shares::Rebalance;
use staging::{PartHeader, Staging};
use transfer::{Transfer, JOIN_SLACK, MAX_TRANSFER_BACKOFF, STATE_MESSAGE_OVERHEAD, VAR_FRAMING};

/// The most records of when the log grew kept for [`PeerStatus::lag_ms`].
const MAX_SEQ_TIMES: usize = 1024;

/// The time of an input, on two clocks: a replica times its retransmissions,
/// gossip and lag on the monotonic one, which never goes back, and gives the
/// wall one to its keyspace (the hybrid logical clock that orders writes, and
/// the check that refuses timestamps too far ahead). A wall clock set back
/// then delays nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a monotonic clock, from any origin.
    pub mono: u64,
    /// Milliseconds since the Unix epoch on the wall clock.
    pub wall: u64,
}

/// One clock for both, as tests and benches use: the same milliseconds
/// are monotonic and wall time.
impl From<u64> for Now {
    fn from(ms: u64) -> Now {
        Now { mono: ms, wall: ms }
    }
}

/// What a replica has to say after an input ([`Replica::drain`]).
#[derive(Debug, Default)]
pub struct Outputs {
    /// Messages to send, in order.
    pub transmits: Vec<Transmit>,
    /// What happened, in order.
    pub events: Vec<Event>,
    /// When to call [`Replica::handle_timeout`] next (monotonic ms).
    pub timeout: Option<u64>,
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
    /// The latest monotonic time given.
    last_now: u64,
    /// The latest wall time given: the keyspace's clock.
    wall: u64,
    /// When the log reached each of a few sequence numbers (see
    /// [`Replica::note_log_end`]).
    seq_times: VecDeque<(u64, u64)>,
    /// The fence lifts only once at least this many peers are known (see
    /// [`Replica::expect_peers`]).
    expected_peers: usize,
    /// Owned variables: records, requests, offers.
    owners: owners::Owners,
    shares: shares::Shares,
    escrows: escrow::Escrows,
    checks: check::Checks,
    mirrors: mirror::Mirrors,
}

/// Whether version `a` is later than `b`: versions of one keyspace opening
/// count up (from a random start, wrapping).
pub(super) fn newer(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

pub(super) fn hostile(peer: ReplicaId, why: impl Into<String>) -> ProtocolError {
    ProtocolError::Hostile {
        peer,
        why: why.into(),
    }
}

impl<B: Backend> Replica<B> {
    /// A replica over `ks`, with no peers yet.
    pub fn new(ks: Keyspace<B>, config: ReplicaConfig) -> Self {
        let mut replica = Replica {
            ks,
            config,
            peers: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            unfenced: false,
            last_now: 0,
            wall: 0,
            seq_times: VecDeque::new(),
            expected_peers: 0,
            owners: owners::Owners::default(),
            shares: shares::Shares::default(),
            escrows: escrow::Escrows::default(),
            checks: check::Checks::default(),
            mirrors: mirror::Mirrors::default(),
        };
        replica.load_mirroring();
        // Loaded now, so that rounds over escrow start without waiting for
        // a use (unreadable: on first use).
        let _ = replica.escrow_names();
        replica
    }

    /// Keeps the bag fence up until at least `n` peers are known and every
    /// known peer has sent a complete interval. A runtime that learns peer
    /// ids only as they connect calls this at start with the size of its peer
    /// set, so that a write or a first connection cannot lift the fence
    /// before the others were heard from.
    pub fn expect_peers(&mut self, n: usize) {
        self.expected_peers = n;
    }

    /// How many intervals, chunks or parts may be unacknowledged at once
    /// (`max_in_flight`). `ReplicaConfig::validate` keeps it at least 1;
    /// the floor here only guards a configuration that was never validated
    /// (`Replica::new` takes any), in one place.
    pub(super) fn window(&self) -> usize {
        self.config.max_in_flight.max(1)
    }

    /// The time of an input: its wall time is kept for the keyspace (the
    /// hybrid logical clock of writes, the skew check of merges), and its
    /// monotonic time returned for the timers, never earlier than the last
    /// one given (a clock that went back counts as standing still).
    fn input(&mut self, now: impl Into<Now>) -> u64 {
        let Now { mono, wall } = now.into();
        self.wall = wall;
        if self.owners.forgotten_until.is_none() {
            // Whatever answers an earlier opening kept are gone; a new
            // store ran no request.
            let window = if self.ks.opened_before() {
                self.retry_window()
            } else {
                0
            };
            self.forget_from(mono, window);
        }
        mono.max(self.last_now)
    }

    /// Notes the (monotonic) time of an input.
    pub(super) fn observe(&mut self, now: u64) {
        self.last_now = self.last_now.max(now);
        self.note_log_end(now);
    }

    /// Records when the log grew past its last recorded end, so that a
    /// peer's lag can be told as time: the age of the oldest entry it has
    /// not acknowledged. Bounded: past [`MAX_SEQ_TIMES`] records every
    /// other one is dropped, which keeps the span and coarsens the times.
    pub(super) fn note_log_end(&mut self, now: u64) {
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
    pub(super) fn unacked_age(&self, acked: u64) -> Option<u64> {
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

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.ks.replica_id()
    }

    /// The keyspace, for reads, and for a merge made outside
    /// [`Replica::handle_message`] (then call
    /// [`Replica::handle_local_writes`]). Local writes go through
    /// [`Replica::write`].
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

    /// A local write at time `now`: applies `op` to the variable `name`
    /// ([`Keyspace::apply`]: the delta is logged, and flushed if the
    /// keyspace flushes each write) and queues the delta for the peers. An
    /// owner-only operation (a bag take or transfer) is refused while the
    /// replica is fenced, before anything happens. So is an operation that
    /// runs at the owner of an owned variable another node owns
    /// ([`crate::OwnershipError::Elsewhere`]: send it there with
    /// [`Replica::request`]), and a strong operation on a variable nobody
    /// owns ([`crate::OwnershipError::NotOwned`]).
    pub fn write(&mut self, now: impl Into<Now>, name: &str, op: Op) -> crate::Result<Outcome> {
        let now = self.input(now);
        let me = self.id();
        self.grant_by_rule(name, &op, me)?;
        let route = self.route_op(name, &op)?;
        self.write_routed(now, name, op, route)
    }

    /// [`Replica::write`] at monotonic time `now`, once `route_op` said
    /// where `op` runs.
    fn write_routed(
        &mut self,
        now: u64,
        name: &str,
        op: Op,
        route: owners::Route,
    ) -> crate::Result<Outcome> {
        if let owners::Route::At(owner) = route {
            let epoch = self.ownership(name)?.epoch;
            return Err(crate::OwnershipError::Elsewhere {
                name: name.to_string(),
                owner,
                epoch,
            }
            .into());
        }
        if route == owners::Route::Escrow {
            return self.spend_escrow(now, name, op);
        }
        if route == owners::Route::Here {
            let me = self.id();
            if let Some((answer, _)) = self.escrow_at_owner(name, &op, me)? {
                return Ok(Outcome {
                    answer,
                    ts: Default::default(),
                    delta: None,
                    applied: None,
                });
            }
        }
        if op.owner_only() && self.fenced() {
            return Err(Error::Fenced {
                name: name.to_string(),
                waiting: self.fence_waiting(),
            });
        }
        let kind = op.kind();
        let out = self.ks.apply(name, op, self.wall)?;
        self.note_bag(name, kind);
        if route == owners::Route::Here {
            self.note_use(name, self.id(), now);
        }
        if out.applied.is_some() {
            self.observe(now);
            self.update_fence();
        }
        Ok(out)
    }

    /// After a merge made outside [`Replica::handle_message`] (the store's
    /// own `merge`): queues what changed for the peers. Local writes do this
    /// in [`Replica::write`]. (A merge of an ownership record made outside
    /// is seen after [`Replica::reload_ownership`].)
    pub fn handle_local_writes(&mut self, now: impl Into<Now>) {
        let now = self.input(now);
        self.observe(now);
        self.update_fence();
    }

    /// Handles a message from peer `from`.
    pub fn handle_message(
        &mut self,
        now: impl Into<Now>,
        from: ReplicaId,
        bytes: &[u8],
    ) -> Result<(), ProtocolError> {
        let now = self.input(now);
        if !self.peers.contains_key(&from) {
            self.observe(now);
            return Err(ProtocolError::UnknownPeer(from));
        }
        let decoded = self.decoder().decode(bytes);
        let wall = self.wall;
        self.handle_decoded(Now { mono: now, wall }, from, decoded)
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
    pub(super) fn peer_limits(&self, id: ReplicaId) -> (usize, usize) {
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

    /// Handles the passing of time: re-sends what was not acknowledged in time.
    pub fn handle_timeout(&mut self, now: impl Into<Now>) {
        let now = self.input(now);
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
        self.requests_due(now);
        self.offers_due(now);
        self.rebalance_due(now);
        self.checks_due(now);
    }

    /// Every output after an input, pulled in the documented order:
    /// transmits until none, then events until none, then the next
    /// deadline. A driver that wants to hand each transmit on as it is built
    /// (the node, which lets go of its lock between them) polls one at a
    /// time instead; the simulator and the test network take them all.
    pub fn drain(&mut self) -> Outputs {
        let transmits = std::iter::from_fn(|| self.poll_transmit()).collect();
        let events = std::iter::from_fn(|| self.poll_event()).collect();
        Outputs {
            transmits,
            events,
            timeout: self.poll_timeout(),
        }
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
        let window = self.window();
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
        retransmit
            .chain(gossip)
            .chain(hello)
            .chain(self.next_request())
            .chain(self.next_offer())
            .chain(self.next_rebalance())
            .chain(self.next_check_deadline())
            .min()
    }

    pub(super) fn send(&mut self, to: ReplicaId, msg: &Message) {
        self.send_encoded(to, msg.encode());
    }

    pub(super) fn send_encoded(&mut self, to: ReplicaId, payload: Vec<u8>) {
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
}
