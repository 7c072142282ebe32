//! Inbound state in parts: a variable's state that arrives in parts is kept
//! aside until its end part, then merged at once.

use super::*;

/// A variable's state arriving in parts from a peer, kept aside until its end.
#[derive(Clone, Debug)]
pub(super) struct Staging {
    pub(super) as_of: u64,
    pub(super) name: String,
    pub(super) version: u64,
    /// The parts kept, by number: decoded, as they came, and where their
    /// entries lie in that.
    pub(super) parts: BTreeMap<
        u32,
        (
            atoll_crdt::variable::DecodedPart,
            Vec<u8>,
            std::ops::Range<usize>,
        ),
    >,
    /// The end part's number, and whether the variable is the transfer's last.
    pub(super) end: Option<(u32, bool)>,
    /// Their encoded size, bounded by `max_state_len`.
    pub(super) bytes: usize,
}

/// A part's header, as its `StatePart` message names it.
pub(super) struct PartHeader {
    pub(super) as_of: u64,
    pub(super) after: String,
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) version: u64,
    pub(super) index: u32,
    pub(super) end: bool,
    pub(super) last: bool,
}

impl<B: Backend> Replica<B> {
    /// A part of a variable's state from the peer: kept aside until the
    /// variable's every part is in, then merged as one state.
    pub(super) fn on_state_part(
        &mut self,
        from: ReplicaId,
        header: PartHeader,
        part: Vec<u8>,
        decoded_part: Option<Box<PartDecoded>>,
    ) -> Result<(), ProtocolError> {
        let PartHeader {
            as_of,
            after,
            name,
            kind,
            version,
            index,
            end,
            last,
        } = header;
        let decoded = decoded_part.expect("decoded with the message");
        let (state, range) = (*decoded)
            .map_err(|e| hostile(from, format!("undecodable part {index} of {name:?}: {e}")))?;
        crate::keyspace::validate_name(&name).map_err(|e| hostile(from, e.to_string()))?;
        if state.kind() != kind {
            return Err(hostile(
                from,
                format!("a part of {name:?} is a {}, not a {kind}", state.kind()),
            ));
        }
        let max = self.config.max_state_len;
        let p = known(&mut self.peers, from)?;
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
        if let std::collections::btree_map::Entry::Vacant(slot) = staged.parts.entry(index) {
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
        let state = State::assemble(decoded)
            .map_err(|e| hostile(from, format!("the state of {name:?} from its parts: {e}")))?;
        // Logged as it came, not encoded again.
        let ranges: Vec<(&[u8], _)> = raw.iter().map(|(b, r)| (&b[..], r.clone())).collect();
        let encoded = atoll_crdt::variable::splice_parts(&ranges, entries, state.context());
        drop(ranges);
        drop(raw);
        self.merge_one(from, &name, kind, state, encoded)?;
        let p = known(&mut self.peers, from)?;
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
        Ok(())
    }
}
