//! A variable moves to a new owner: the owner writes a handoff into the
//! record and stops accepting strong operations; it offers the variable
//! (its state, and the answers kept for requests sent again) to the new
//! owner until that node's record says the next epoch; the new owner merges
//! the state, then writes the next epoch's record naming itself, and only
//! then runs strong operations.
//!
//! What each lost message does: a lost offer is sent again (every
//! `retransmit_ms`, while the two are connected); a lost acceptance too,
//! since the offer comes again and is accepted again (or the record comes by
//! gossip). Meanwhile nobody runs strong operations on the variable, and
//! its status says "in transfer to X since T". Never two owners: the old
//! one stopped before offering, the new one starts after accepting.

use super::*;
use crate::error::OwnershipError;
use crate::keyspace::owner_record;
use atoll_crdt::Ownership;

impl<B: Backend> Replica<B> {
    /// Moves `name`, owned here, to node `to`, a peer: from now on no
    /// strong operation runs here, and once `to` accepts, it owns the
    /// variable. A move to this node itself changes nothing.
    pub fn move_owner(
        &mut self,
        now: impl Into<Now>,
        name: &str,
        to: ReplicaId,
    ) -> crate::Result<()> {
        let now = self.input(now);
        self.observe(now);
        let record = self.ownership(name)?;
        match record.owner() {
            Some(me) if me == self.id() => {}
            Some(owner) => {
                return Err(OwnershipError::Elsewhere {
                    name: name.to_string(),
                    owner,
                    epoch: record.epoch,
                }
                .into())
            }
            None => {
                return Err(OwnershipError::NotOwned {
                    name: name.to_string(),
                }
                .into())
            }
        }
        if to == self.id() {
            return Ok(());
        }
        self.check_deciding(name, self.id(), &record)?;
        self.hand_off(name, to).map(|_| ())
    }

    /// Writes the handoff of `name` (owned here, not handed off yet) to
    /// `to`, and sends the offer; returns the record's change.
    pub(super) fn hand_off(
        &mut self,
        name: &str,
        to: ReplicaId,
    ) -> crate::Result<Option<VarDelta>> {
        if !self.peers.contains_key(&to) {
            return Err(OwnershipError::NotAPeer {
                name: name.to_string(),
                to,
            }
            .into());
        }
        let mut record = self.ownership(name)?;
        record.offer(to, self.wall);
        let change = self.write_record(name, record)?;
        self.owners.offered.remove(name);
        self.offer_if_due(name, self.last_now);
        Ok(change)
    }

    /// Sends the offer of `name` if this node hands it on (as its owner, or
    /// its custodian or home while it is free), the new owner
    /// is connected, this node is not fenced (a restored node offers
    /// nothing before its peers brought it up to date), and the last offer
    /// is `retransmit_ms` old. Forgets the offer once the record moved on.
    pub(super) fn offer_if_due(&mut self, name: &str, now: u64) {
        let record = match self.ownership(name) {
            Ok(r) => r,
            Err(_) => return,
        };
        let to = match record.handoff() {
            Some(h) if self.decider(name, &record) == self.id() => h.to,
            _ => {
                self.owners.offered.remove(name);
                return;
            }
        };
        let connected = self.peers.get(&to).is_some_and(|p| p.connected);
        let due = self
            .owners
            .offered
            .get(name)
            .is_none_or(|&at| now >= at.saturating_add(self.config.retransmit_ms));
        if !connected || !due || self.fenced() {
            return;
        }
        let var = match self.ks.state(name) {
            Ok(Some(state)) => Some(VarDelta {
                name: name.to_string(),
                kind: state.kind(),
                delta: codec::encode(state),
            }),
            Ok(None) => None,
            Err(e) => {
                self.events.push_back(Event::SendFailed {
                    peer: to,
                    error: e.to_string(),
                });
                return;
            }
        };
        let answers = self.kept_for(name);
        let escrow = self.escrow_of(name).ok().flatten().map(Box::new);
        let forgotten_ms = self
            .owners
            .forgotten_until
            .map_or(0, |until| until.saturating_sub(now));
        self.owners.offered.insert(name.to_string(), now);
        let offer = Message::Offer {
            name: name.to_string(),
            epoch: record.epoch + 1,
            var,
            answers,
            forgotten_ms,
            escrow,
        }
        .encode();
        // An offer travels whole, in one message: a state larger than the
        // new owner accepts stays here (the move waits, and says why).
        let (max_message_len, _) = self.peer_limits(to);
        if offer.len() > max_message_len {
            self.events.push_back(Event::SendFailed {
                peer: to,
                error: format!(
                    "the offer of {name:?} is {} bytes, over the {max_message_len} bytes the new owner accepts in a message; the move waits (raise max_message_len there, or move it elsewhere)",
                    offer.len()
                ),
            });
            return;
        }
        self.send_encoded(to, offer);
    }

    /// Every offer due (see [`Replica::offer_if_due`]).
    pub(super) fn offers_due(&mut self, now: u64) {
        let me = self.id();
        let offered: Vec<(String, Ownership)> = match self.records() {
            Ok(records) => records
                .iter()
                .filter(|(_, r)| r.handoff().is_some())
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect(),
            Err(_) => return,
        };
        let handing: Vec<String> = offered
            .into_iter()
            .filter(|(n, r)| self.decider(n, r) == me)
            .map(|(n, _)| n)
            .collect();
        for name in handing {
            self.offer_if_due(&name, now);
        }
    }

    /// When the next offer is due, if one waits and can go: to a connected
    /// peer, from a node that is not fenced (the others go when the peer
    /// connects, or the fence lifts).
    pub(super) fn next_offer(&self) -> Option<u64> {
        if self.fenced() {
            return None;
        }
        let records = self.owners.records.as_ref()?;
        self.owners
            .offered
            .iter()
            .filter(|(name, _)| {
                records
                    .get(*name)
                    .and_then(|r| r.handoff())
                    .and_then(|h| self.peers.get(&h.to))
                    .is_some_and(|p| p.connected)
            })
            .map(|(_, at)| at.saturating_add(self.config.retransmit_ms))
            .min()
    }

    /// An offer of `name` from its owner `from`: merged, then accepted by
    /// writing the offered epoch's record naming this node; or, if this
    /// node's record is at that epoch or later already, answered with it.
    pub(super) fn on_offer(
        &mut self,
        from: ReplicaId,
        name: String,
        epoch: u64,
        var: Option<(VarDelta, Result<State, DecodeError>)>,
        (answers, forgotten_ms, escrow): (
            Vec<crate::protocol::Kept>,
            u64,
            Option<Box<atoll_crdt::Escrow>>,
        ),
    ) -> Result<(), ProtocolError> {
        let now = self.last_now;
        crate::validate_name(&name)
            .map_err(|e| hostile(from, format!("offer of a bad name: {e}")))?;
        let held = self
            .ownership(&name)
            .map_err(|source| ProtocolError::Merge { peer: from, source })?;
        if held.epoch < epoch {
            if let Some((v, state)) = var {
                if v.name != name {
                    return Err(hostile(from, "an offer's state is of another variable"));
                }
                let state =
                    state.map_err(|e| hostile(from, format!("undecodable offered state: {e}")))?;
                self.merge_one(from, &name, v.kind, state, v.delta)?;
            }
            // The grants made before: the new owner's pool counts them.
            if let Some(e) = escrow {
                self.merge_escrow(from, &name, *e)?;
            }
            for k in answers {
                self.keep((k.incarnation, k.id), &name, &k.answer);
            }
            // What the old owner forgot, this one does not know either.
            let window = forgotten_ms.min(self.retry_window());
            self.forget_from(now, window);
            self.write_record(&name, Ownership::owned(epoch, self.id()))
                .map_err(|source| ProtocolError::Merge { peer: from, source })?;
            self.note_arrival(&name, now);
        }
        let record = self.ownership(&name).unwrap_or_default();
        self.send(from, &Message::Accept { name, record });
        Ok(())
    }

    /// The answer to an offer (or any record a peer sends): merged.
    pub(super) fn on_record(
        &mut self,
        from: ReplicaId,
        name: &str,
        record: Ownership,
    ) -> Result<(), ProtocolError> {
        crate::validate_name(name).map_err(|e| hostile(from, format!("bad name: {e}")))?;
        let origin = self
            .peers
            .get(&from)
            .and_then(|p| p.incarnation)
            .unwrap_or(from);
        let applied = self
            .ks
            .merge_state(
                origin,
                &owner_record(name),
                Kind::Owner,
                State::Owner(record),
                None,
                self.wall,
            )
            .map_err(|source| ProtocolError::Merge { peer: from, source })?;
        if let Some(a) = applied {
            self.events.push_back(Event::Applied(a));
            self.record_changed(name);
            self.offer_if_due(name, self.last_now);
        }
        Ok(())
    }
}
