//! The decider's side of requests: a request is answered from the answers
//! kept if it ran before, refused if its answer may have been forgotten,
//! run here if this node decides about the variable in the epoch it names,
//! or refused with the record that says who decides now.

use super::owners::Route;
use super::*;
use crate::error::OwnershipError;
use crate::protocol::{Body, Kept, Refusal, Replied};

impl<B: Backend> Replica<B> {
    /// A request from peer `from`: answered from what was kept if it was
    /// applied before; else run here if this node decides about the
    /// variable in the `epoch` the request names, or refused with the
    /// record that says who decides now.
    pub(super) fn on_request(
        &mut self,
        now: u64,
        from: ReplicaId,
        id: u64,
        name: String,
        (epoch, retry): (u64, bool),
        body: Body,
    ) -> Result<(), ProtocolError> {
        crate::validate_name(&name)
            .map_err(|e| hostile(from, format!("request for a bad name: {e}")))?;
        let incarnation = known(&mut self.peers, from)?.incarnation.unwrap_or(from);
        let key = (incarnation, id);
        if let Some((kept_name, answer)) = self.owners.kept.get(&key) {
            let result = if *kept_name == name {
                Ok(Replied {
                    answer: answer.clone(),
                    change: None,
                })
            } else {
                return Err(hostile(from, "a request id used for two variables"));
            };
            self.send(
                from,
                &Message::Reply {
                    id,
                    result: Box::new(result),
                },
            );
            return Ok(());
        }
        if retry && self.may_have_forgotten(now) {
            let result = Box::new(Err(Refusal::Forgotten));
            self.send(from, &Message::Reply { id, result });
            return Ok(());
        }
        let held = self.ownership(&name).map(|r| r.epoch);
        // A first use of a variable a placement rule owns: granted here,
        // if this is its home.
        let granted = match &body {
            Body::Op(op) if held.as_ref().is_ok_and(|e| *e == epoch) => {
                self.grant_by_rule(&name, op, from)
            }
            _ => Ok(()),
        };
        let route = match (granted, held) {
            (Err(e), _) => Err(e),
            (_, Ok(e)) if e != epoch => Ok(Route::Local),
            _ => self.route(&name, &body),
        };
        // A take sent to an owned bag's owner (its requester's share was
        // empty) runs here, out of this node's own elements, unless it is
        // fenced: a take is a local operation here otherwise.
        let route = match (&body, route) {
            (Body::Op(Op::BagTake), Ok(Route::Local))
                if self
                    .ownership(&name)
                    .is_ok_and(|r| r.owner() == Some(self.id())) =>
            {
                match self.fenced() {
                    true => Err(OwnershipError::Fenced {
                        name: name.clone(),
                        waiting: self.fence_waiting(),
                    }
                    .into()),
                    false => Ok(Route::Here),
                }
            }
            (_, route) => route,
        };
        let result = match route {
            Ok(Route::Here) => {
                let read = matches!(body, Body::Op(Op::Read { .. }));
                match self.decide(&name, body, from) {
                    Ok((answer, change, applied)) => {
                        self.keep(key, &name, &answer);
                        if let Some(a) = applied {
                            self.events.push_back(Event::Applied(a));
                        }
                        // The requester decodes a change under its
                        // max_delta_len: a larger one reaches it by
                        // gossip, and a read it would not cover fails.
                        let (_, max_delta) = self.peer_limits(from);
                        match change {
                            Some(c) if c.delta.len() > max_delta && read => {
                                Err(Refusal::Failed {
                                    why: format!(
                                        "the state is {} bytes, over the {max_delta} a reply may carry; read it here once replicated",
                                        c.delta.len()
                                    ),
                                })
                            }
                            Some(c) if c.delta.len() > max_delta => Ok(Replied {
                                answer,
                                change: None,
                            }),
                            change => Ok(Replied { answer, change }),
                        }
                    }
                    Err(e) => Err(self.refusal(&name, e)),
                }
            }
            // Another epoch, or not decided here: the record says who.
            Ok(Route::Local | Route::Escrow | Route::At(_)) => Err(self.not_owner(&name)),
            Err(e) => Err(self.refusal(&name, e)),
        };
        let result = Box::new(result);
        self.send(from, &Message::Reply { id, result });
        Ok(())
    }

    /// The refusal that tells a requester who decides about `name`.
    fn not_owner(&mut self, name: &str) -> Refusal {
        Refusal::NotOwner {
            record: self.ownership(name).unwrap_or_default(),
        }
    }

    /// A request's error, as the requester is told it.
    fn refusal(&mut self, name: &str, e: Error) -> Refusal {
        match e {
            Error::Ownership(OwnershipError::Fenced { .. }) => Refusal::Fenced,
            Error::Ownership(OwnershipError::InTransfer { to, since_ms, .. }) => {
                Refusal::InTransfer { to, since_ms }
            }
            Error::Ownership(OwnershipError::NotOwned { .. }) => self.not_owner(name),
            e => Refusal::Failed { why: e.to_string() },
        }
    }

    /// How long a requester may send a request again: twice the timeout
    /// (requesters are configured alike; the margin covers the difference
    /// between their clocks' rates).
    pub(super) fn retry_window(&self) -> u64 {
        self.config.request_timeout_ms.saturating_mul(2)
    }

    /// Whether a request sent again may concern an answer no longer kept
    /// here (see `Refusal::Forgotten`).
    pub(super) fn may_have_forgotten(&self, now: u64) -> bool {
        self.owners.forgotten_until.is_some_and(|until| now < until)
    }

    /// Notes that answers of requests may have been forgotten here now (at
    /// opening, or when one is dropped): requests sent again within the
    /// retry window are refused as [`Refusal::Forgotten`].
    pub(super) fn forget_from(&mut self, now: u64, window: u64) {
        let until = now.saturating_add(window);
        let at = self.owners.forgotten_until.get_or_insert(until);
        *at = (*at).max(until);
    }

    /// Keeps the answer of a request applied here, dropping the oldest
    /// past `answers_kept`.
    pub(super) fn keep(&mut self, key: (ReplicaId, u64), name: &str, answer: &Answer) {
        if self
            .owners
            .kept
            .insert(key, (name.to_string(), answer.clone()))
            .is_none()
        {
            self.owners.kept_order.push_back(key);
        }
        while self.owners.kept_order.len() > self.config.answers_kept {
            if let Some(old) = self.owners.kept_order.pop_front() {
                self.owners.kept.remove(&old);
                let (now, window) = (self.last_now, self.retry_window());
                self.forget_from(now, window);
            }
        }
    }

    /// The answers kept of requests applied to `name`, for its new owner.
    pub(super) fn kept_for(&self, name: &str) -> Vec<Kept> {
        self.owners
            .kept
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(&(incarnation, id), (_, answer))| Kept {
                incarnation,
                id,
                answer: answer.clone(),
            })
            .collect()
    }
}
