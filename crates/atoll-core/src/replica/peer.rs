//! Each peer's sync state, and the peer set: who is known, who is connected,
//! and what each has acknowledged.

use super::*;

#[derive(Debug, Default)]
pub(super) struct Peer {
    pub(super) connected: bool,
    /// The incarnation the peer last connected as.
    pub(super) incarnation: Option<ReplicaId>,
    /// The highest sequence of our log the peer acknowledged.
    pub(super) acked: u64,
    /// The delta intervals in flight, oldest first: each one's end and when it
    /// was sent. They are contiguous, from `acked` to `sent_through`.
    pub(super) flights: VecDeque<(u64, u64)>,
    /// The end of the last interval sent (at least `acked`).
    pub(super) sent_through: u64,
    /// Acknowledged intervals not yet contiguous with `acked`: start -> end.
    pub(super) early_acks: BTreeMap<u64, u64>,
    /// The state-transfer chunk in flight: its `as_of` and when it was sent.
    pub(super) chunk: Option<(u64, u64)>,
    pub(super) transfer: Option<Transfer>,
    pub(super) stats: PeerStats,
    pub(super) last_contact: Option<u64>,
    /// It sent us a complete interval since we opened (or it was added after
    /// the fence lifted).
    pub(super) caught_up: bool,
    /// Since it connected, it has not acknowledged a complete interval from us:
    /// send one, even an empty one, so that it learns it is up to date.
    pub(super) announce: bool,
    /// The end of the last complete interval sent to it.
    pub(super) complete_sent: Option<u64>,
    /// When the last new delta interval was sent to it (for the gossip interval).
    pub(super) last_interval_at: Option<u64>,
    /// The furthest end of an interval sent since it connected: intervals
    /// before it are retransmissions.
    pub(super) sent_max: u64,
    /// It connected as an incarnation we had not heard from: nothing is sent
    /// until its `Hello` says what it holds, or until this deadline.
    pub(super) hello_pending: Option<u64>,
    /// Since it connected as a new incarnation, no `Hello` of its came: a
    /// connection lost before it did waits for one again when it is back,
    /// rather than take the peer to hold nothing.
    pub(super) hello_unanswered: bool,
    /// What it accepts, from its `Hello` (this incarnation's): nothing larger
    /// is sent to it. Until then, what this replica accepts.
    pub(super) limits: Option<Limits>,
    /// Its `Hello` said it holds nothing of our long log: it is sent our
    /// state rather than the log ([`ReplicaConfig::state_for_new_peers_after`]).
    pub(super) wants_state: bool,
    /// What we hold of its log, contiguously, in this connection: at least
    /// the `base` its intervals name (what it knows we hold), advanced by
    /// contiguous intervals, and recorded in storage.
    pub(super) held: Option<u64>,
    /// Intervals from it that arrived after a gap in what we hold, by
    /// start, waiting to be merged in order (at most a window of them).
    pub(super) early_deltas: BTreeMap<u64, (super::inbound::IntervalIn, super::inbound::Batch)>,
    /// A state transfer from it whose first chunk (or part) we received in
    /// this connection: its `as_of`, and the variable through which every
    /// chunk since arrived (chunks are pipelined: one may be lost, and
    /// those after it arrive before it is sent again).
    pub(super) transfer_in: Option<(u64, String)>,
    /// The parts of a variable's state it is sending us.
    pub(super) staging: Option<Staging>,
    /// The last state from it merged from parts, as the transfer (`as_of`),
    /// the variable and its version: parts of it that come again are
    /// acknowledged at once (see `Message::StatePart`).
    pub(super) merged_parts: Option<(u64, String, u64)>,
    /// Its deltas are refused here (see [`PeerStatus::stuck`]).
    pub(super) stuck: Option<Stuck>,
    /// When the current connection came up.
    pub(super) connected_since: Option<u64>,
    /// A namespace became shared with it when our log ended here: once it
    /// holds that, it is sent a state transfer (see `mirror`).
    pub(super) mirror_resync: Option<u64>,
    /// The state transfer owed to it as recorded on disk (it stays there
    /// until a transfer as of that point ends).
    pub(super) owed_on_disk: Option<u64>,
    /// What was sent to it, and refused from it, per namespace.
    pub(super) traffic: BTreeMap<String, super::NsTraffic>,
}

/// The peer `id` of `peers`, for a message from it: a peer removed
/// meanwhile is [`ProtocolError::UnknownPeer`]. (A function of the map, not
/// of the replica, so that the keyspace stays free to borrow alongside.)
pub(super) fn known(
    peers: &mut BTreeMap<ReplicaId, Peer>,
    id: ReplicaId,
) -> Result<&mut Peer, ProtocolError> {
    peers.get_mut(&id).ok_or(ProtocolError::UnknownPeer(id))
}

/// Advances `acked` over the early acknowledgements now contiguous with it,
/// and retires the intervals in flight it covers.
pub(super) fn absorb_acks(p: &mut Peer) {
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
pub(super) fn transfer_room(p: &Peer, window: usize) -> bool {
    match &p.transfer {
        None => true,
        Some(t) if t.split.is_some() => part_room(p, window),
        Some(t) => !t.all_sent && t.blocked.is_none() && t.units.len() < window,
    }
}

/// Whether another part of a variable's state may go to `p` now: its end
/// is not sent yet, and fewer than `window` parts are unacknowledged.
pub(super) fn part_room(p: &Peer, window: usize) -> bool {
    p.transfer
        .as_ref()
        .and_then(|t| t.split.as_ref())
        .is_some_and(|s| (!s.ahead.is_empty() || s.next.is_some()) && s.unacked.len() < window)
}

/// When the state-transfer chunk (or part) in flight to `p` is overdue:
/// `retransmit_ms` after it was sent, doubled for each time the variable in
/// parts was started over (see `Transfer::backoff`).
pub(super) fn chunk_deadline(p: &Peer, retransmit_ms: u64) -> Option<u64> {
    let (_, sent) = p.chunk?;
    let backoff = p.transfer.as_ref().map_or(0, |t| t.backoff);
    Some(sent.saturating_add(retransmit_ms.saturating_mul(1 << backoff)))
}

impl<B: Backend> Replica<B> {
    /// The peer tells what it holds of our log and what it accepts.
    pub(super) fn on_hello(
        &mut self,
        from: ReplicaId,
        holds: Option<(ReplicaId, u64)>,
        limits: Limits,
    ) -> Result<(), ProtocolError> {
        let p = self
            .peers
            .get_mut(&from)
            .ok_or(ProtocolError::UnknownPeer(from))?;
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
            p.hello_unanswered = false;
            p.acked = resume;
            p.sent_through = resume;
            p.sent_max = resume;
            p.early_acks.clear();
            p.wants_state = resume == 0 && after > 0 && span >= after;
            self.update_floor();
        }
        Ok(())
    }

    /// Adds a peer (disconnected until [`Replica::set_connected`]).
    pub fn add_peer(&mut self, id: ReplicaId) {
        if id != self.id() {
            let unfenced = self.unfenced;
            // A transfer owed since before a restart is owed still (an
            // unreadable record: as if none; `atoll check` finds the rest).
            let owed = match self.peers.contains_key(&id) {
                true => None,
                false => self.ks.owed_transfer(id).ok().flatten(),
            };
            let p = self.peers.entry(id).or_insert_with(|| Peer {
                caught_up: unfenced,
                ..Peer::default()
            });
            p.mirror_resync = p.mirror_resync.or(owed);
            p.owed_on_disk = p.owed_on_disk.or(owed);
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
    pub fn set_connected(
        &mut self,
        id: ReplicaId,
        incarnation: Option<ReplicaId>,
        now: impl Into<Now>,
    ) {
        let now = self.input(now);
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
            p.early_deltas.clear();
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
                        // A transfer owed for mirroring, cut short, is
                        // owed still.
                        p.mirror_resync = p.mirror_resync.or(p.owed_on_disk);
                        p.hello_unanswered = true;
                    }
                    if p.hello_unanswered {
                        p.hello_pending = Some(now + self.config.retransmit_ms);
                    }
                    p.incarnation = Some(inc);
                    p.sent_through = p.acked;
                    p.sent_max = p.acked;
                }
                None => self.transmits.retain(|t| t.to != id),
            }
            if let Some(inc) = incarnation {
                // Unreadable storage says nothing: the peer then resends all.
                let holds = self.ks.peer_holds(id).ok().flatten();
                let limits = self.limits();
                self.send(id, &Message::Hello { holds, limits });
                self.requests_reconnected(id, inc, now);
                self.offers_due(now);
            }
        }
        self.update_floor();
    }

    /// The runtime saw the link to `id` carry something at `now` (a QUIC
    /// keep-alive, say) though no message arrived: its last contact is now.
    pub fn heard_from(&mut self, id: ReplicaId, now: impl Into<Now>) {
        let now = self.input(now);
        if let Some(p) = self.peers.get_mut(&id).filter(|p| p.connected) {
            p.last_contact = Some(p.last_contact.map_or(now, |t| t.max(now)));
        }
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
                    changed: t.only.as_ref().map(|o| o.len() as u64),
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
                namespaces: p.traffic.clone(),
            })
            .collect()
    }
}
