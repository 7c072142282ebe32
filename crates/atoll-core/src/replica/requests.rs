//! The requester's side of owned variables: an operation that must run at
//! the owner (or a change of owner, decided at the owner or the home) is
//! sent there as a [`Message::Request`], sent again until answered, and its
//! answer reported as [`Event::Answered`]. If no answer comes within
//! `request_timeout_ms`, the request fails with
//! [`OwnershipError::OwnerUnreachable`]: never a silent local write, never a
//! guess. A refusal that names another owner sends the request there, with
//! the same id (the answers the old owner kept moved with the variable, so
//! a request it applied is not applied again).

use super::owners::Route;
use super::*;
use crate::error::OwnershipError;
use crate::protocol::{Body, Refusal, Replied};

/// How many times one request follows a refusal to another node before it
/// fails: ownership that keeps moving, or nodes that disagree on who
/// decides (different peer sets).
const MAX_HOPS: u32 = 4;

/// A request sent, waiting for its answer.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) name: String,
    pub(super) body: Body,
    /// The node asked.
    pub(super) to: ReplicaId,
    /// The ownership epoch it is asked in (see `Message::Request`).
    pub(super) epoch: u64,
    /// Its incarnation when the request was first sent to it: an answer
    /// kept there is lost if it restarts.
    pub(super) incarnation: Option<ReplicaId>,
    /// When it was last sent (monotonic ms).
    pub(super) sent_at: Option<u64>,
    /// It was sent at least once, to some node.
    pub(super) sent_before: bool,
    pub(super) started: u64,
    pub(super) deadline: u64,
    pub(super) hops: u32,
    /// The last refusal that did not end it (fenced, in transfer).
    pub(super) last: Option<Refusal>,
}

/// What [`Replica::request`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// It ran here: its answer, and the change it made here, if any (local
    /// writes are reported by the caller).
    Done {
        /// The answer.
        answer: Answer,
        /// Where the change went in the log.
        applied: Option<Applied>,
        /// It is an operation that runs at the owner, and this node owns
        /// the variable.
        at_owner: bool,
    },
    /// It was sent to the node that decides; the answer comes as
    /// [`Event::Answered`] with this id.
    Sent(u64),
}

impl<B: Backend> Replica<B> {
    /// Runs `body` on the variable `name` where it must run: here (an
    /// operation that needs no owner, or this node decides about the
    /// variable), or at the node that decides, to which it is sent. A
    /// strong operation on a variable nobody owns is refused
    /// ([`OwnershipError::NotOwned`]).
    pub fn request(
        &mut self,
        now: impl Into<Now>,
        name: &str,
        body: Body,
    ) -> crate::Result<Requested> {
        let mono = self.input(now);
        self.observe(mono);
        if let Body::Op(op) = &body {
            let me = self.id();
            self.grant_by_rule(name, op, me)?;
        }
        let route = self.route(name, &body)?;
        match route {
            Route::At(node) => {
                // An operation carries the namespace's data: not to a node
                // it is not mirrored to.
                self.check_mirrored(name, node)?;
                self.send_request(mono, name, body, node)
                    .map(Requested::Sent)
            }
            here => {
                let at_owner = here == Route::Here && matches!(body, Body::Op(_));
                let (answer, applied) = self.run_here(mono, name, body, here)?;
                Ok(Requested::Done {
                    answer,
                    applied,
                    at_owner,
                })
            }
        }
    }

    /// Runs `body` here (the route said so).
    fn run_here(
        &mut self,
        now: u64,
        name: &str,
        body: Body,
        route: Route,
    ) -> crate::Result<(Answer, Option<Applied>)> {
        match (route, body) {
            (route @ (Route::Local | Route::Escrow), Body::Op(op)) => {
                let out = self.write_routed(now, name, op, route)?;
                Ok((out.answer, out.applied))
            }
            (_, body) => {
                let me = self.id();
                let (answer, _, applied) = self.decide(name, body, me)?;
                self.update_fence();
                Ok((answer, applied))
            }
        }
    }

    fn send_request(
        &mut self,
        now: u64,
        name: &str,
        body: Body,
        to: ReplicaId,
    ) -> crate::Result<u64> {
        if !self.peers.contains_key(&to) {
            return Err(OwnershipError::OwnerUnreachable {
                name: name.to_string(),
                owner: Some(to),
                waited_ms: 0,
                last: Some("it is not a peer of this node".to_string()),
            }
            .into());
        }
        let in_flight = self.owners.pending.values().filter(|p| p.to == to).count();
        if in_flight >= self.config.max_requests_per_peer {
            return Err(OwnershipError::Busy {
                name: name.to_string(),
                owner: to,
                in_flight,
            }
            .into());
        }
        let epoch = self.ownership(name)?.epoch;
        self.owners.last_id += 1;
        let id = self.owners.last_id;
        self.owners.pending.insert(
            id,
            Pending {
                name: name.to_string(),
                body,
                to,
                epoch,
                incarnation: None,
                sent_at: None,
                sent_before: false,
                started: now,
                deadline: now.saturating_add(self.config.request_timeout_ms),
                hops: 0,
                last: None,
            },
        );
        self.send_pending(id, now);
        Ok(id)
    }

    /// Sends request `id` to the node it is for, if connected.
    fn send_pending(&mut self, id: u64, now: u64) {
        let Some(p) = self.owners.pending.get_mut(&id) else {
            return;
        };
        let Some(peer) = self.peers.get(&p.to).filter(|peer| peer.connected) else {
            return;
        };
        p.incarnation = p.incarnation.or(peer.incarnation);
        p.sent_at = Some(now);
        let retry = std::mem::replace(&mut p.sent_before, true);
        let (to, msg) = (
            p.to,
            Message::Request {
                id,
                name: p.name.clone(),
                epoch: p.epoch,
                retry,
                body: Box::new(p.body.clone()),
            },
        );
        self.send(to, &msg);
    }

    /// Ends request `id` with `result`.
    fn answer(&mut self, id: u64, result: Result<Answer, OwnershipError>) {
        if let Some(p) = self.owners.pending.remove(&id) {
            self.events.push_back(Event::Answered {
                id,
                name: p.name,
                result,
            });
        }
    }

    /// Requests past their deadline fail; those whose last sending was
    /// `retransmit_ms` ago go again.
    pub(super) fn requests_due(&mut self, now: u64) {
        let retransmit = self.config.retransmit_ms;
        let mut late = Vec::new();
        let mut resend = Vec::new();
        for (id, p) in &self.owners.pending {
            if now >= p.deadline {
                late.push(*id);
            } else if p
                .sent_at
                .is_none_or(|at| now >= at.saturating_add(retransmit))
            {
                resend.push(*id);
            }
        }
        for id in late {
            let Some(p) = self.owners.pending.get(&id) else {
                continue;
            };
            let waited_ms = now.saturating_sub(p.started);
            let error = match p.last {
                Some(Refusal::InTransfer { to, since_ms }) => OwnershipError::InTransfer {
                    name: p.name.clone(),
                    owner: p.to,
                    to,
                    since_ms,
                },
                ref last => OwnershipError::OwnerUnreachable {
                    name: p.name.clone(),
                    owner: Some(p.to),
                    waited_ms,
                    last: match last {
                        Some(Refusal::Fenced) => Some(
                            "it waits for its peers to bring it up to date since it opened"
                                .to_string(),
                        ),
                        Some(Refusal::NoHome) => Some("it does not know all its peers".to_string()),
                        _ if p.sent_at.is_none() => Some("not connected".to_string()),
                        _ => None,
                    },
                },
            };
            self.answer(id, Err(error));
        }
        for id in resend {
            self.send_pending(id, now);
        }
    }

    /// When a request next needs attention (a deadline, or sending again).
    pub(super) fn next_request(&self) -> Option<u64> {
        let retransmit = self.config.retransmit_ms;
        self.owners
            .pending
            .values()
            .map(|p| {
                let connected = self.peers.get(&p.to).is_some_and(|peer| peer.connected);
                match p.sent_at {
                    Some(at) if connected => p.deadline.min(at.saturating_add(retransmit)),
                    _ => p.deadline,
                }
            })
            .min()
    }

    /// Peer `id` connected as `incarnation`: requests it was sent as
    /// another incarnation fail (it restarted, and what it kept of their
    /// answers with it: sent again, they might be applied twice); the
    /// others go now.
    pub(super) fn requests_reconnected(&mut self, id: ReplicaId, incarnation: ReplicaId, now: u64) {
        let restarted: Vec<u64> = self
            .owners
            .pending
            .iter()
            .filter(|(_, p)| p.to == id && p.incarnation.is_some_and(|i| i != incarnation))
            .map(|(k, _)| *k)
            .collect();
        for rid in restarted {
            if let Some(name) = self.owners.pending.get(&rid).map(|p| p.name.clone()) {
                self.answer(rid, Err(OwnershipError::OutcomeUnknown { name, owner: id }));
            }
        }
        let waiting: Vec<u64> = self
            .owners
            .pending
            .iter()
            .filter(|(_, p)| p.to == id)
            .map(|(k, _)| *k)
            .collect();
        for rid in waiting {
            self.send_pending(rid, now);
        }
    }

    /// The answer to request `id`, from `from`.
    pub(super) fn on_reply(
        &mut self,
        now: u64,
        from: ReplicaId,
        id: u64,
        result: Result<Replied, Refusal>,
        change: Option<Result<State, DecodeError>>,
    ) -> Result<(), ProtocolError> {
        // A late answer, or one to a request sent elsewhere since: nothing
        // waits for it.
        let Some(Pending {
            name, body, epoch, ..
        }) = self
            .owners
            .pending
            .get(&id)
            .filter(|p| p.to == from)
            .cloned()
        else {
            return Ok(());
        };
        match result {
            Ok(Replied { answer, .. }) if !fits(&body, &answer) => {
                return Err(hostile(
                    from,
                    format!("an answer that does not fit its request: {answer:?}"),
                ));
            }
            Ok(Replied { answer, change: v }) => {
                if let (Some(v), Some(state)) = (v, change) {
                    let state = state.map_err(|e| {
                        hostile(from, format!("undecodable change in a reply: {e}"))
                    })?;
                    let known = v.name == name || v.name == crate::owner_record(&name);
                    if !known {
                        return Err(hostile(from, "a reply's change is of another variable"));
                    }
                    self.merge_one(from, &v.name, v.kind, state, v.delta)?;
                    if let Some(n) = crate::owned_by_record(&v.name) {
                        self.record_changed(n);
                    }
                }
                self.answer(id, Ok(answer));
            }
            // An answer to an earlier attempt, in an epoch before the one
            // the request was sent again in (the network held it back):
            // that attempt may since have run, at this node as the owner;
            // the answer to the latest attempt is the one that counts.
            Err(Refusal::NotOwner { record }) if record.epoch < epoch => {
                self.on_record(from, &name, record)?;
            }
            Err(Refusal::NotOwner { record }) => {
                self.on_record(from, &name, record.clone())?;
                // The node that decides about a variable nobody owns says so.
                let strong = matches!(&body, Body::Op(op) if op.strong());
                if strong && record.owner().is_none() && self.decider(&name, &record) == from {
                    self.answer(id, Err(OwnershipError::NotOwned { name }));
                } else {
                    self.reroute(now, id);
                }
            }
            Err(refusal @ (Refusal::Fenced | Refusal::InTransfer { .. } | Refusal::NoHome)) => {
                // Sent again when due, until the deadline.
                if let Some(p) = self.owners.pending.get_mut(&id) {
                    p.last = Some(refusal);
                }
            }
            Err(Refusal::Forgotten) => {
                self.answer(
                    id,
                    Err(OwnershipError::OutcomeUnknown { name, owner: from }),
                );
            }
            Err(Refusal::Failed { why }) => {
                let error = OwnershipError::Refused {
                    name,
                    owner: from,
                    why,
                };
                self.answer(id, Err(error));
            }
        }
        Ok(())
    }

    /// Request `id` was refused by a node that does not decide: it goes
    /// where the record now says, or runs here.
    fn reroute(&mut self, now: u64, id: u64) {
        let Some(p) = self.owners.pending.get(&id).cloned() else {
            return;
        };
        if p.hops >= MAX_HOPS {
            let error = OwnershipError::OwnerUnreachable {
                name: p.name.clone(),
                owner: Some(p.to),
                waited_ms: now.saturating_sub(p.started),
                last: Some(format!(
                    "sent on {MAX_HOPS} times without reaching the node that decides (ownership moving, or nodes that know different peers)"
                )),
            };
            return self.answer(id, Err(error));
        }
        let route = self.route(&p.name, &p.body);
        let epoch = self.ownership(&p.name).map(|r| r.epoch).unwrap_or(p.epoch);
        match route {
            Ok(Route::At(to)) => {
                if let Some(q) = self.owners.pending.get_mut(&id) {
                    q.to = to;
                    q.epoch = epoch;
                    q.hops += 1;
                    q.incarnation = None;
                    q.sent_at = None;
                    q.last = None;
                }
                self.send_pending(id, now);
            }
            Ok(here) => {
                self.owners.pending.remove(&id);
                let result = match self.run_here(now, &p.name, p.body, here) {
                    Ok((answer, applied)) => {
                        if let Some(a) = applied {
                            self.events.push_back(Event::Applied(a));
                        }
                        Ok(answer)
                    }
                    Err(e) => Err(as_ownership_error(&p.name, self.id(), e)),
                };
                self.events.push_back(Event::Answered {
                    id,
                    name: p.name,
                    result,
                });
            }
            Err(e) => self.answer(id, Err(as_ownership_error(&p.name, self.id(), e))),
        }
    }
}

/// Whether `answer` is one `body` can be answered with.
fn fits(body: &Body, answer: &Answer) -> bool {
    match body {
        Body::Op(op) => op.answers_with(answer),
        Body::Own { .. } | Body::Release => *answer == Answer::Done,
    }
}

/// An error met running a request here, as its answer reports it.
fn as_ownership_error(name: &str, here: ReplicaId, e: Error) -> OwnershipError {
    match e {
        Error::Ownership(e) => e,
        e => OwnershipError::Refused {
            name: name.to_string(),
            owner: here,
            why: e.to_string(),
        },
    }
}
