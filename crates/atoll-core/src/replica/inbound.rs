//! Inbound messages: each is decoded, checked and handed to its handler;
//! deltas and states are merged, and acknowledged.

use super::*;

/// The header of a `Deltas` message: the interval of the sender's log
/// `(start, to]`, what it knows we hold of it (`base`), and whether it
/// reaches the end of its log.
#[derive(Debug)]
pub(super) struct IntervalIn {
    start: u64,
    to: u64,
    base: u64,
    complete: bool,
}

/// The variables of a `Deltas` or `State` message, each with its delta
/// decoded (and validated) ahead, in order.
#[derive(Debug)]
pub(super) struct Batch {
    vars: Vec<VarDelta>,
    states: Vec<Result<State, DecodeError>>,
}

impl<B: Backend> Replica<B> {
    /// [`Replica::handle_message`] for a message decoded ahead by
    /// [`Replica::decoder`]. The same checks apply, in the same order.
    pub fn handle_decoded(
        &mut self,
        now: impl Into<Now>,
        from: ReplicaId,
        decoded: Decoded,
    ) -> Result<(), ProtocolError> {
        let now = self.input(now);
        let deltas = matches!(decoded.msg, Ok(Message::Deltas { .. }));
        let mark = self.events.len();
        let result = self.dispatch(now, from, decoded);
        self.note_log_end(now);
        self.records_merged(mark);
        self.bags_merged(mark);
        self.escrows_merged(mark);
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

    /// Counts the message against its peer and hands it to its handler.
    pub(super) fn dispatch(
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
                let interval = IntervalIn {
                    start,
                    to,
                    base,
                    complete,
                };
                self.on_deltas(from, interval, Batch { vars, states })
            }
            Message::Ack { from: start, seq } => self.on_ack(from, start, seq),
            Message::State {
                as_of,
                after,
                vars,
                last,
            } => self.on_state(from, as_of, after, last, Batch { vars, states }),
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
                let header = PartHeader {
                    as_of,
                    after,
                    name,
                    kind,
                    version,
                    index,
                    end,
                    last,
                };
                self.on_state_part(from, header, part, decoded_part)
            }
            Message::StatePartAck {
                as_of,
                name,
                version,
                index,
            } => self.on_state_part_ack(now, from, as_of, name, version, index),
            Message::Hello { holds, limits } => self.on_hello(from, holds, limits),
            Message::StateAck {
                as_of,
                through,
                last,
            } => self.on_state_ack(now, from, as_of, through, last),
            Message::Request {
                id,
                name,
                epoch,
                retry,
                body,
            } => self.on_request(now, from, id, name, (epoch, retry), *body),
            Message::Reply { id, result } => {
                let change = states.into_iter().next();
                self.on_reply(now, from, id, *result, change)
            }
            Message::Offer {
                name,
                epoch,
                var,
                answers,
                forgotten_ms,
                escrow,
            } => {
                let var = var.zip(states.into_iter().next());
                self.on_offer(from, name, epoch, var, (answers, forgotten_ms, escrow))
            }
            Message::Accept { name, record } => self.on_record(from, &name, record),
            Message::DigestAsk { check, buckets } => self.on_digest_ask(from, check, buckets),
            Message::Digests(reply) => self.on_digests(now, from, reply),
            Message::Repair {
                names,
                vars,
                answer,
            } => self.on_repair(from, names, vars, states, answer),
        }
    }

    /// An interval of the peer's delta log: merged, then acknowledged;
    /// then those that waited for it.
    fn on_deltas(
        &mut self,
        from: ReplicaId,
        interval: IntervalIn,
        batch: Batch,
    ) -> Result<(), ProtocolError> {
        self.merge_interval(from, interval, batch)?;
        self.merge_early(from)
    }

    /// An interval of the peer's delta log, merged and acknowledged if it
    /// follows what we hold of that log, else kept until it does.
    fn merge_interval(
        &mut self,
        from: ReplicaId,
        interval: IntervalIn,
        batch: Batch,
    ) -> Result<(), ProtocolError> {
        let IntervalIn {
            start,
            to,
            base,
            complete,
        } = interval;
        let Batch { vars, states } = batch;
        if start > to {
            return Err(hostile(from, "interval ends before it starts"));
        }
        // Merged in the peer's log order: an interval after a gap (one
        // before it lost, or overtaken) waits until the gap is filled, so
        // that this replica never holds a later entry of the peer's log
        // without the earlier ones (an owner's decrement without the
        // increments that allowed it). At most a window of them wait; past
        // that, one is dropped unacknowledged and sent again.
        let window = self.window();
        let p = known(&mut self.peers, from)?;
        if start > p.held.unwrap_or(base).max(base) {
            if p.early_deltas.len() < window || p.early_deltas.contains_key(&start) {
                let interval = IntervalIn {
                    start,
                    to,
                    base,
                    complete,
                };
                p.early_deltas
                    .insert(start, (interval, Batch { vars, states }));
            }
            return Ok(());
        }
        if !self.merge_all(from, vars, states)? {
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
        let p = known(&mut self.peers, from)?;
        let mut held = p.held.unwrap_or(base).max(base);
        if start <= held {
            held = held.max(to);
        }
        self.record_held(from, held)?;
        if complete {
            known(&mut self.peers, from)?.caught_up = true;
            self.update_fence();
        }
        self.send(
            from,
            &Message::Ack {
                from: start,
                seq: to,
            },
        );
        Ok(())
    }

    /// Merges the intervals from `from` that waited for a gap now filled,
    /// one after another (a loop, not a recursion: a window may hold
    /// thousands).
    pub(super) fn merge_early(&mut self, from: ReplicaId) -> Result<(), ProtocolError> {
        loop {
            let p = known(&mut self.peers, from)?;
            let Some(held) = p.held else {
                return Ok(());
            };
            let Some(entry) = p.early_deltas.first_entry() else {
                return Ok(());
            };
            if *entry.key() > held {
                return Ok(());
            }
            let (interval, batch) = entry.remove();
            self.merge_interval(from, interval, batch)?;
        }
    }

    /// The peer acknowledges an interval of our log.
    fn on_ack(&mut self, from: ReplicaId, start: u64, seq: u64) -> Result<(), ProtocolError> {
        if seq > self.ks.last_seq() {
            return Err(hostile(
                from,
                format!("ack of {seq} beyond our log end {}", self.ks.last_seq()),
            ));
        }
        if start > seq {
            return Err(hostile(from, "acknowledged interval ends before it starts"));
        }
        let window = self.window();
        let p = known(&mut self.peers, from)?;
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
        Ok(())
    }

    /// A chunk of a state transfer from the peer: merged, then acknowledged.
    fn on_state(
        &mut self,
        from: ReplicaId,
        as_of: u64,
        after: String,
        last: bool,
        batch: Batch,
    ) -> Result<(), ProtocolError> {
        let Batch { vars, states } = batch;
        let through = vars
            .last()
            .map_or_else(|| after.clone(), |v| v.name.clone());
        let p = known(&mut self.peers, from)?;
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
        if !self.merge_all(from, vars, states)? {
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
        Ok(())
    }

    /// The peer acknowledges a part of a variable we send in parts.
    fn on_state_part_ack(
        &mut self,
        now: u64,
        from: ReplicaId,
        as_of: u64,
        name: String,
        version: u64,
        index: u32,
    ) -> Result<(), ProtocolError> {
        let p = known(&mut self.peers, from)?;
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
        Ok(())
    }

    /// The peer acknowledges a chunk of our state transfer.
    fn on_state_ack(
        &mut self,
        now: u64,
        from: ReplicaId,
        as_of: u64,
        through: String,
        last: bool,
    ) -> Result<(), ProtocolError> {
        let p = known(&mut self.peers, from)?;
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
        Ok(())
    }

    /// The last variable of a state transfer from `from` as of `as_of`,
    /// `through`, was merged: if every chunk from its first through it
    /// arrived, we hold all it held through `as_of`.
    pub(super) fn transfer_in_done(
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
            return self.merge_early(from);
        }
        Ok(())
    }

    /// Notes (and stores) that we hold peer `from`'s log through `seq`.
    pub(super) fn record_held(&mut self, from: ReplicaId, seq: u64) -> Result<(), ProtocolError> {
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
    pub(super) fn merge_one(
        &mut self,
        from: ReplicaId,
        name: &str,
        kind: Kind,
        state: State,
        encoded: Vec<u8>,
    ) -> Result<(), ProtocolError> {
        if !self.accepts_from(from, name, encoded.len())? {
            return Ok(());
        }
        let origin = self
            .peers
            .get(&from)
            .and_then(|p| p.incarnation)
            .unwrap_or(from);
        match self
            .ks
            .merge_state(origin, name, kind, state, Some(encoded.into()), self.wall)
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
    pub(super) fn report_conflicts(&mut self) {
        for c in self.ks.take_conflicts() {
            self.events.push_back(match c {
                ConflictEvent::Found(c) => Event::Conflict(c),
                ConflictEvent::Moved(applied) => Event::Applied(applied),
            });
        }
    }

    /// Merges the deltas (or states) of a message; `false`, and nothing
    /// merged, if one is larger than this replica accepts.
    pub(super) fn merge_all(
        &mut self,
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
        let mut pairs: Vec<_> = vars.into_iter().zip(states).collect();
        // The mirroring first: what it says of the rest holds for them.
        if let Some(at) = pairs.iter().position(|(v, _)| v.name == crate::MIRROR_VAR) {
            let mirror = pairs.remove(at);
            pairs.insert(0, mirror);
        }
        for (v, state) in pairs {
            if !self.accepts_from(from, &v.name, v.delta.len())? {
                continue;
            }
            match self
                .ks
                .merge_decoded(origin, &v.name, v.kind, state, v.delta.into(), self.wall)
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
}
