//! Outbound state transfer: a peer whose needs the log no longer reaches is
//! sent the states of the variables changed since what it holds, when the
//! index of changes reaches back to it, else every variable's state; in
//! chunks, and a state too large for one message in parts.
//!
//! A little over 600 lines: one sender's state machine (chunks, parts,
//! acknowledgements, what to send), which reads best whole.

use super::*;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub(super) struct Transfer {
    pub(super) as_of: u64,
    pub(super) why: TransferReason,
    /// The variables sent, if only those changed since what the peer held
    /// (the index of changes reached back to it); `None`: every variable.
    pub(super) only: Option<BTreeSet<String>>,
    /// The last variable name acknowledged.
    pub(super) cursor: String,
    /// The variable after `cursor`, being sent in parts.
    pub(super) split: Option<Split>,
    /// The next variable sent in parts has all its parts encoded at once,
    /// from one state: its previous attempt was overtaken by a change (or
    /// lost), and a variable that keeps changing must still get through.
    pub(super) eager: bool,
    /// Stopped at a variable the peer would refuse, until its next `Hello`.
    pub(super) blocked: Option<TooLarge>,
    /// Chunks and variables in parts sent and not yet all acknowledged, in
    /// the order sent: up to `max_in_flight` chunks go before the first is
    /// acknowledged, and `cursor` moves over those acknowledged in turn.
    pub(super) units: VecDeque<Unit>,
    /// The unit that ends the transfer was sent: nothing more to build
    /// until acks, or a timeout sends it all again from `cursor`.
    pub(super) all_sent: bool,
    /// The stored state of the variable the last chunk stopped before (too
    /// large to join it), read then, and its version: the next chunk starts
    /// with it, without reading it again.
    pub(super) peeked: Option<(String, Vec<u8>, u64)>,
    /// Times the variable in parts was started over since one last ended,
    /// for want of any ack, up to [`MAX_TRANSFER_BACKOFF`]: each doubles the
    /// wait before the next timeout. A round trip longer than
    /// `retransmit_ms` would otherwise start it over before the acks of its
    /// first parts came back, again and again. (A lost chunk or part does
    /// not count: those are sent again as acks keep coming.)
    pub(super) backoff: u32,
}

/// The most doublings of `retransmit_ms` a variable in parts waits for an ack.
pub(super) const MAX_TRANSFER_BACKOFF: u32 = 4;

/// A state chunk, or a variable in parts, of a transfer: sent, and not
/// known to be merged in order.
#[derive(Clone, Debug)]
pub(super) struct Unit {
    /// The last variable it carries (a chunk with none: the one before it).
    pub(super) through: String,
    /// It ends the transfer.
    pub(super) last: bool,
    /// A variable in parts (acknowledged by its end part), not a chunk.
    pub(super) parts: bool,
    /// Acknowledged (a unit before it may not be yet).
    pub(super) acked: bool,
}

impl Transfer {
    /// Where the next chunk starts: after the last unit sent, or after
    /// what the peer acknowledged.
    pub(super) fn sent_through(&self) -> &str {
        self.units.back().map_or(&self.cursor, |u| &u.through)
    }

    /// Moves `cursor` over the units acknowledged in turn; whether the
    /// transfer's last one was among them.
    pub(super) fn advance(&mut self) -> bool {
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
    pub(super) fn go_back(&mut self) {
        self.units.clear();
        self.split = None;
        self.peeked = None;
        self.all_sent = false;
        // Found again if it is still too large.
        self.blocked = None;
    }

    /// Drops the variable in parts under way (it starts over later).
    pub(super) fn drop_split(&mut self) {
        if self.split.take().is_some() && self.units.back().is_some_and(|u| u.parts) {
            self.units.pop_back();
            self.all_sent = false;
        }
    }
}

/// A variable's state on its way to a peer in parts.
#[derive(Clone, Debug)]
pub(super) struct Split {
    pub(super) name: String,
    /// The variable before it: what its parts say they follow.
    pub(super) after: String,
    pub(super) kind: Kind,
    /// Its version when its first part was encoded: parts encoded one at a
    /// time are of one state only while it stays the same.
    pub(super) version: u64,
    /// Parts encoded ahead, not sent yet.
    pub(super) ahead: VecDeque<atoll_crdt::variable::Part>,
    /// Every part was encoded ahead, at once (after a restart), so a change
    /// since does not matter; otherwise parts after the first are encoded as
    /// they are sent, while the variable's version stays the same.
    pub(super) all_ahead: bool,
    /// Where the next part to encode starts; `None` once the end part was
    /// encoded (and, with `ahead` empty, sent).
    pub(super) next: Option<Vec<u8>>,
    /// The state as stored, when it had not changed since the last
    /// checkpoint: later parts are cut from it as they are sent (one state,
    /// whatever changes meanwhile).
    pub(super) stored: Option<atoll_crdt::variable::StoredParts>,
    /// Parts sent.
    pub(super) sent: u32,
    /// Their bytes, counted as the peer counts them against its
    /// `max_state_len` (each part once, resends not counted).
    pub(super) sent_bytes: usize,
    /// The parts sent and not acknowledged, encoded as sent: sent again as
    /// they are after a timeout.
    pub(super) unacked: BTreeMap<u32, Vec<u8>>,
    /// An ack arrived since the last timeout.
    pub(super) progress: bool,
    /// The end part's number, once sent.
    pub(super) end_index: Option<u32>,
    /// The variable is the transfer's last (known when its end part goes).
    pub(super) last: bool,
}

impl<B: Backend> Replica<B> {
    /// Starts a state transfer to `id` as of `as_of`, in place of the log
    /// through `as_of`: the states of the variables changed since what the
    /// peer holds, if the index of changes reaches back to it and names at
    /// most [`ReplicaConfig::resync_max_changed`]; otherwise every
    /// variable's. Intervals in flight are let go: the transfer covers them.
    pub(super) fn start_transfer(
        &mut self,
        id: ReplicaId,
        as_of: u64,
        why: TransferReason,
    ) -> crate::Result<()> {
        let (held, incarnation) = (self.peers[&id].acked, self.peers[&id].incarnation);
        let limit = self.config.resync_max_changed;
        // A peer that holds nothing is sent everything; so is one that
        // gained namespaces, which may lack any of their variables.
        let only = if held > 0 && limit > 0 && why != TransferReason::Mirrored {
            self.ks.changed_after(held, limit, incarnation)?
        } else {
            None
        };
        let changed = only.as_ref().map(|o| o.len() as u64);
        let p = self.peers.get_mut(&id).expect("known");
        p.wants_state = false;
        // A whole transfer pays what is owed for mirroring only if the peer
        // held the change already: else it could refuse, for want of it,
        // what comes before it.
        if only.is_none()
            && p.mirror_resync
                .is_some_and(|at| p.acked >= at && as_of >= at)
        {
            p.mirror_resync = None;
        }
        p.flights.clear();
        p.early_acks.clear();
        p.transfer = Some(Transfer {
            as_of,
            why: why.clone(),
            only,
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
        p.stats.changed_transfers += u64::from(changed.is_some());
        self.events.push_back(Event::StateTransferStarted {
            peer: id,
            why,
            changed,
        });
        Ok(())
    }

    /// Up to `limit` variables of the transfer to `id` named after
    /// `after`, and their kinds, in name order: every variable, or those of
    /// [`Transfer::only`] that still exist.
    fn transfer_names_after(
        &self,
        id: ReplicaId,
        after: &str,
        limit: usize,
    ) -> crate::Result<Vec<(String, Kind)>> {
        let only = self.peers[&id]
            .transfer
            .as_ref()
            .and_then(|t| t.only.as_ref());
        let Some(only) = only else {
            // Every variable the peer mirrors: pages until `limit` of them,
            // or the end.
            let mut names = Vec::new();
            let mut from = after.to_string();
            let mut read = limit;
            loop {
                let page = self.ks.variables_after(&from, read)?;
                let end = page.len() < read;
                from = page.last().map_or(from, |(n, _)| n.clone());
                names.extend(page.into_iter().filter(|(n, _)| self.sends_to(id, n)));
                if end || names.len() >= limit {
                    names.truncate(limit);
                    return Ok(names);
                }
                // Past names it does not mirror: a page at a time, even if
                // one name was asked for (the next it mirrors may be far).
                read = limit.max(STATE_PAGE);
            }
        };
        let mut names = Vec::new();
        let later = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
        for name in only.range::<str, _>(later) {
            if names.len() >= limit {
                break;
            }
            if !self.sends_to(id, name) {
                continue;
            }
            if let Some(meta) = self.ks.storage().meta(name)? {
                names.push((name.to_string(), meta.kind));
            }
        }
        Ok(names)
    }

    /// A state transfer to `to` as of `as_of` ended (its last variable was
    /// acknowledged): the peer holds our log through `as_of`.
    pub(super) fn transfer_done(&mut self, to: ReplicaId, as_of: u64) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        p.acked = p.acked.max(as_of);
        p.sent_through = p.acked;
        let whole = p.transfer.take().is_some_and(|t| t.only.is_none());
        // The transfer owed since a namespace became shared is paid: the
        // record of it goes (not at the start: a restart in between must
        // send it again).
        let paid =
            whole && p.mirror_resync.is_none() && p.owed_on_disk.is_some_and(|at| as_of >= at);
        if paid {
            p.owed_on_disk = None;
            self.note_owed(to, None);
        }
        self.update_floor();
        self.events
            .push_back(Event::StateTransferFinished { peer: to, as_of });
    }

    pub(super) fn send_state_chunk(&mut self, id: ReplicaId, now: u64) -> crate::Result<bool> {
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
        if t.all_sent || t.units.len() >= self.window() {
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
                let next = self.transfer_names_after(id, &examined, STATE_PAGE)?;
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
                // A type conflict may have restarted the name as another
                // kind since: then the state read is no longer the
                // variable's, and it is read again.
                .filter(|(_, bytes, _)| bytes.get(1) == Some(&(listed_kind as u8)))
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
                self.note_sent(id, &name, delta.len());
                vars.push(VarDelta {
                    name: name.clone(),
                    kind,
                    delta,
                });
            }
            page.pop_front();
            examined = name;
        }
        let last = self.transfer_names_after(id, &examined, 1)?.is_empty();
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
    pub(super) fn peer_state_limit(&self, id: ReplicaId) -> usize {
        self.limits_of(id).map_or(usize::MAX, |l| {
            usize::try_from(l.max_state_len).unwrap_or(usize::MAX)
        })
    }

    /// Holds back the transfer to `id` at variable `name`, whose state
    /// (at least `bytes` long) `id` would refuse: it waits for the peer's
    /// next `Hello`, which may bring a larger limit.
    pub(super) fn block(&mut self, id: ReplicaId, name: String, bytes: usize) {
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
    pub(super) fn part_bytes(&self, id: ReplicaId) -> usize {
        let room = self
            .peer_limits(id)
            .0
            .saturating_sub(STATE_MESSAGE_OVERHEAD);
        self.config.state_part_bytes.min(room)
    }

    /// Sends the next part of the variable under way in parts, if fewer than
    /// `max_in_flight` are unacknowledged.
    pub(super) fn send_state_part(&mut self, id: ReplicaId, now: u64) -> crate::Result<bool> {
        let window = self.window();
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
        let last = end && self.transfer_names_after(id, &name, 1)?.is_empty();
        self.note_sent(id, &name, part.bytes.len());
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
pub(super) const STATE_MESSAGE_OVERHEAD: usize = 4096;

/// A variable's bytes in a message besides its delta and name: its kind and
/// the lengths of both, with room to spare.
pub(super) const VAR_FRAMING: usize = 16;

/// How much larger than the sum of their encodings the join of log entries
/// may encode: a join holds no element or dot that was in none of them, but
/// its counts may take a few more bytes each.
pub(super) const JOIN_SLACK: usize = 64;

/// Variable names read at a time for a state transfer.
pub(super) const STATE_PAGE: usize = 256;
