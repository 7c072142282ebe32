//! Owned variables in the workload: clients at every node ask for
//! ownership, move it, and run strong operations (compare-and-set, claims,
//! a bounded counter's decrements), here or forwarded to the owner. Two
//! invariants are checked as the run goes: at most one node accepts strong
//! operations on a variable at any moment, and the bounded counter is
//! never below its floor at any node, nor (with escrow) the rights held
//! above its value. The history of strong operations
//! is checked at the end (`crate::strong`).

use super::*;
use crate::strong::{StrongOp, StrongRecord};
use atoll_core::protocol::Body;
use atoll_core::{Answer, Op as StoreOp, Requested};
use atoll_crdt::variable::Bytes;

/// The owned variables: a register (compare-and-set), a set of claims,
/// and a bounded counter (floor 0).
pub const OWNED: [&str; 3] = ["o-reg", "o-claim", "o-stock"];

/// Whether a variable is one of the workload's owned ones, or an ownership
/// record: the history of ordinary operations says nothing about them.
pub fn is_owned_name(name: &str) -> bool {
    name.starts_with("o-")
        || atoll_core::owned_by_record(name).is_some()
        || atoll_core::escrowed_by_record(name).is_some()
        || name == atoll_core::SITES_VAR
}

/// Node `i`'s site, with placement rules: `s0` for even nodes, `s1` for
/// odd ones.
pub(super) fn site_of(i: usize) -> String {
    format!("s{}", i % 2)
}

/// The placement rules: `o-claim` on site `s0`, `o-reg` where first used.
pub(super) fn rules() -> Vec<atoll_core::OwnedRule> {
    vec![
        atoll_core::OwnedRule {
            prefix: "o-claim".into(),
            place: atoll_core::Place::Site("s0".into()),
        },
        atoll_core::OwnedRule {
            prefix: "o-reg".into(),
            place: atoll_core::Place::Anywhere,
        },
    ]
}

/// Whether node `i` may own variable `var` under the run's rules.
fn placeable(placement: bool, var: &str, i: usize) -> bool {
    !placement || var != "o-claim" || i % 2 == 0
}

fn bytes(x: u64) -> Bytes {
    Bytes::from(x.to_le_bytes())
}

impl Sim {
    /// One strong client operation: at the variable's favourite node
    /// (which changes every few seconds) with the workload's locality, at
    /// a random node otherwise.
    pub(super) fn strong_op(&mut self) {
        let n = self.nodes.len();
        if self.now >= self.favourites_until || self.favourites.len() != OWNED.len() {
            self.favourites = (0..OWNED.len()).map(|_| self.strong_rng.index(n)).collect();
            self.favourites_until =
                self.now + self.strong_rng.exp(self.opts.workload.favourite_every_ms);
        }
        let v = self.strong_rng.index(OWNED.len());
        let var = OWNED[v];
        let local = self.strong_rng.below(100) < u64::from(self.opts.workload.strong_locality_pct);
        let i = if self.opts.workload.strong_from_two && n > 2 {
            1 + self.strong.len() % 2
        } else if local {
            self.favourites[v]
        } else {
            self.strong_rng.index(n)
        };
        let roll = self.strong_rng.below(100);
        let changes = u64::from(self.opts.workload.strong_owner_changes_pct);
        let op = if roll < changes * 8 / 9 {
            StrongOp::Own(self.strong_rng.index(n))
        } else if roll < changes {
            StrongOp::Release
        } else {
            match var {
                "o-reg" => {
                    self.strong_values += 1;
                    let expected = self.local_register(i, var);
                    StrongOp::Cas {
                        expected,
                        new: self.strong_values,
                    }
                }
                "o-claim" => StrongOp::Claim(self.strong_rng.below(16)),
                _ if self.opts.workload.escrow && self.strong_rng.chance(0.05) => StrongOp::Escrow,
                _ if self.strong_rng.chance(0.4) => {
                    StrongOp::Incr(self.strong_rng.range(1, 4) as i64)
                }
                _ => StrongOp::DecrIf(self.strong_rng.range(1, 3) as i64),
            }
        };
        let body = match &op {
            StrongOp::Own(to) => Body::Own { to: node_id(*to) },
            StrongOp::Release => Body::Release,
            StrongOp::Cas { expected, new } => Body::Op(StoreOp::RegisterCompareAndSet {
                expected: expected.map(bytes),
                value: bytes(*new),
            }),
            StrongOp::Claim(m) => Body::Op(StoreOp::SetAddIfAbsent { member: bytes(*m) }),
            StrongOp::Incr(by) => Body::Op(StoreOp::CounterAdd { by: *by }),
            StrongOp::DecrIf(by) => Body::Op(StoreOp::CounterDecrementIf { by: *by, floor: 0 }),
            StrongOp::Escrow => Body::Op(StoreOp::CounterEscrow { floor: 0 }),
        };
        let now = self.clock(i);
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        let result = r.request(now, var, body);
        self.stats.strong_ops += 1;
        let id = self.strong.len();
        let mut rec = StrongRecord {
            node: i,
            var: var.to_string(),
            op,
            start: self.now,
            end: None,
            result: None,
        };
        match result {
            Ok(Requested::Done { answer, .. }) => {
                rec.end = Some(self.now);
                rec.result = Some(Ok(answer));
                self.stats.strong_effects += u64::from(rec.took_effect());
            }
            Ok(Requested::Sent(rid)) => {
                self.strong_pending.insert((i, rid), id);
            }
            Err(atoll_core::Error::Ownership(e)) => {
                rec.end = Some(self.now);
                rec.result = Some(Err(e));
            }
            Err(e) => {
                self.fail(format!("n{i}: strong {var} {:?} failed: {e}", rec.op));
                return;
            }
        }
        self.trace.record(
            self.now,
            format_args!("strong #{id} n{i} {var} {:?} {:?}", rec.op, rec.result),
        );
        self.strong.push(rec);
        self.after_input(i);
    }

    /// Makes node `i` the favourite of every owned variable until further
    /// notice: a user who moved to that node's site (a scenario's step).
    pub fn user_moves_to(&mut self, i: usize) -> Result<(), String> {
        if i >= self.nodes.len() {
            return Err(format!("no node n{i}"));
        }
        self.favourites = vec![i; OWNED.len()];
        self.favourites_until = u64::MAX;
        self.trace
            .record(self.now, format_args!("the user moves to n{i}"));
        Ok(())
    }

    /// Ownership works once the cluster heals: in the liveness phase, each
    /// owned variable is asked to be owned by a chosen node (variable `v`
    /// by node `v mod n`, or node 0 where a rule places it on site `s0`),
    /// and the run converges only once every node says so. Asked again every 10 s until then; a run that never gets there
    /// fails as not converged.
    pub(super) fn owners_probed(&mut self) -> bool {
        if self.opts.workload.strong_every_ms == 0 {
            return true;
        }
        let n = self.nodes.len();
        let placement = self.opts.workload.placement;
        let chosen = |v: usize| match v % n {
            k if placeable(placement, OWNED[v], k) => k,
            _ => 0,
        };
        let done = OWNED.iter().enumerate().all(|(v, var)| {
            (0..n).all(|i| {
                self.nodes[i].replica.as_mut().is_some_and(|r| {
                    r.ownership(var).is_ok_and(|o| {
                        o.owner() == Some(node_id(chosen(v))) && o.handoff().is_none()
                    })
                })
            })
        });
        if done {
            return true;
        }
        if self.probed_at.is_none_or(|at| self.now >= at + 10_000) {
            self.probed_at = Some(self.now);
            for (v, var) in OWNED.iter().enumerate() {
                let k = chosen(v);
                self.trace
                    .record(self.now, format_args!("probe: n{k} asks to own {var}"));
                // A refusal (in transfer, say) is asked again later.
                let _ = self.request_at(k, var, Body::Own { to: node_id(k) });
            }
        }
        false
    }

    /// A request at node `i` (a scenario's step): sent, or run there.
    pub fn request_at(&mut self, i: usize, var: &str, body: Body) -> Result<Requested, String> {
        let now = self.clock(i);
        let r = self.nodes[i]
            .replica
            .as_mut()
            .ok_or(format!("n{i} is down"))?;
        let out = r.request(now, var, body).map_err(|e| e.to_string());
        self.after_input(i);
        out
    }

    /// Node `i` hands `var`, which it owns, to node `to` (a scenario's step).
    pub fn move_owner_at(&mut self, i: usize, var: &str, to: usize) -> Result<(), String> {
        let now = self.clock(i);
        let r = self.nodes[i]
            .replica
            .as_mut()
            .ok_or(format!("n{i} is down"))?;
        let out = r
            .move_owner(now, var, node_id(to))
            .map_err(|e| e.to_string());
        self.after_input(i);
        out
    }

    /// The register's value at node `i`, as a client there reads it.
    fn local_register(&mut self, i: usize, var: &str) -> Option<u64> {
        match self.state_of(i, var) {
            Some(State::Register(r)) => r.get().and_then(|b| {
                let a: [u8; 8] = b.as_slice().try_into().ok()?;
                Some(u64::from_le_bytes(a))
            }),
            _ => None,
        }
    }

    /// A request sent by node `i` was answered.
    pub(super) fn strong_answered(
        &mut self,
        i: usize,
        rid: u64,
        result: Result<Answer, atoll_core::OwnershipError>,
    ) {
        if let Some(k) = self.strong_pending.remove(&(i, rid)) {
            self.trace
                .record(self.now, format_args!("strong #{k} answered {result:?}"));
            // The requester reads its own decrement at once, with what the
            // owner decided on: never below the floor.
            if matches!(result, Ok(Answer::Decremented { done: true, .. })) {
                if let Some(State::Counter(c)) = self.state_of(i, "o-stock") {
                    if c.value() < 0 {
                        self.fail(format!(
                            "o-stock reads {} at n{i} right after its decrement was answered",
                            c.value()
                        ));
                    }
                }
            }
            let rec = &mut self.strong[k];
            rec.end = Some(self.now);
            rec.result = Some(result);
            self.stats.strong_effects += u64::from(rec.took_effect());
        }
    }

    /// Node `i` crashed: the requests it waited on stay without an answer
    /// (their outcome is unknown).
    pub(super) fn strong_crashed(&mut self, i: usize) {
        self.strong_pending.retain(|(n, _), _| *n != i);
    }

    /// At most one node accepts strong operations on each owned variable,
    /// and the bounded counter is at or above its floor everywhere.
    pub(super) fn check_owned(&mut self) {
        if self.opts.workload.strong_every_ms == 0 {
            return;
        }
        for var in OWNED {
            let accepting: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    self.nodes[i]
                        .replica
                        .as_mut()
                        .is_some_and(|r| r.accepts_strong(var).unwrap_or(false))
                })
                .collect();
            if accepting.len() > 1 {
                self.fail(format!(
                    "{var}: nodes {accepting:?} all accept strong operations at once"
                ));
            }
            // Placement wins: never owned off its site.
            let placement = self.opts.workload.placement;
            if let Some(i) = accepting.iter().find(|&&i| !placeable(placement, var, i)) {
                self.fail(format!(
                    "{var}: n{i} accepts strong operations off the site its rule places it on"
                ));
            }
        }
        // At every replica: each merges a peer's log in its order, so it
        // never holds the owner's decrement without the increments that
        // allowed it.
        for i in 0..self.nodes.len() {
            let counter = match self.state_of(i, "o-stock") {
                Some(State::Counter(c)) => c,
                _ => atoll_crdt::PNCounter::new(),
            };
            let value = counter.value();
            if value < 0 {
                self.fail(format!("o-stock is {value} at n{i}, below its floor of 0"));
            }
            // Escrow: the owner's pool, as it sees it, is never negative:
            // the rights held are covered by the value. (Another node may
            // see less: a reply carries the counter without the escrow
            // record, so it can hold the owner's decrement before a return
            // behind it.)
            let owner = self.nodes[i]
                .replica
                .as_mut()
                .is_some_and(|r| r.accepts_strong("o-stock").unwrap_or(false));
            let record = atoll_core::escrow_record("o-stock");
            if let (true, Some(State::Escrow(e))) = (owner, self.state_of(i, &record)) {
                if e.held(&counter) > value {
                    self.fail(format!(
                        "o-stock: its owner n{i} sees {} rights held, over its value {value}",
                        e.held(&counter)
                    ));
                }
            }
        }
    }
}
