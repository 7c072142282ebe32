//! Outbound deltas: the intervals of the delta log each peer is sent, their
//! retransmission, and the floor below which the log may be coalesced.

use super::*;

impl<B: Backend> Replica<B> {
    pub(super) fn update_floor(&mut self) {
        let floor = self.peers.values().map(|p| p.acked).min();
        self.ks.set_acked_floor(floor);
        let connected = self.peers.values().filter(|p| p.connected);
        self.ks.set_coalesce_floor(connected.map(|p| p.acked).min());
    }

    /// If the gossip interval holds back the next new interval to `p`, when
    /// it lets it go.
    pub(super) fn gossip_gate(&self, p: &Peer, now: u64) -> Option<u64> {
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
    pub(super) fn build_next(&mut self, now: u64) {
        self.refresh_mirroring();
        let ids: Vec<ReplicaId> = self.peers.keys().copied().collect();
        let window = self.window();
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
    pub(super) fn send_next(&mut self, id: ReplicaId, now: u64) -> crate::Result<bool> {
        // Only what is on disk leaves this replica.
        let last = self.ks.flushed_seq();
        let p = &self.peers[&id];
        if p.transfer.is_none() {
            let first = self.ks.storage().first_seq()?.unwrap_or(last + 1);
            if p.mirror_resync.is_some_and(|at| p.acked >= at) {
                // It holds the change to the mirroring: now what it lacks of
                // the namespaces it gained.
                self.start_transfer(id, last, TransferReason::Mirrored)?;
            } else if p.acked < last && (p.acked + 1 < first || p.wants_state) {
                let why = if p.acked + 1 < first {
                    TransferReason::LogTruncated
                } else {
                    TransferReason::NewPeer
                };
                self.start_transfer(id, last, why)?;
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

    /// The largest log entry sent to `id` as a delta: what it accepts (see
    /// [`Replica::peer_limits`]) and what fits in a message. A larger one (a
    /// large state merged from a state transfer) goes by state transfer.
    pub(super) fn max_forwarded_delta(&self, id: ReplicaId) -> usize {
        let (message, delta) = self.peer_limits(id);
        delta.min(message.saturating_sub(STATE_MESSAGE_OVERHEAD))
    }

    /// Sends the interval after `from`; `false` if nothing could be sent.
    pub(super) fn send_interval(
        &mut self,
        id: ReplicaId,
        from: u64,
        now: u64,
    ) -> crate::Result<bool> {
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
            // Nor is it sent what it does not mirror.
            if entry.origin == peer_incarnation || !self.sends_to(id, &entry.name) {
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
                    self.start_transfer(id, shippable, why)?;
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
            self.note_sent(id, &entry.name, entry.delta.len());
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
}
