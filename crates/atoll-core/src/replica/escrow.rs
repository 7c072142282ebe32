//! Escrow: a bounded counter's decrement rights, split among nodes ahead
//! of a split, so that each decrements locally up to what it holds.
//!
//! A counter's owner enables escrow with a floor ([`Op::CounterEscrow`]);
//! from then on its record (`_atoll.escrow/{name}`, an [`Escrow`]) says
//! what each node was granted and gave back; what it spent is the
//! counter's decrements under its escrow actor ([`escrow_actor`]), so that
//! a spend and its decrement are one delta. With `V` the counter's value as
//! a node sees it, the owner's *pool* is `V - floor - held`, where `held`
//! is the sum of every node's balance. A decrement (conditional or plain)
//! of `d`:
//! - at a node that holds at least `d`, sees `V - d` at or above the floor,
//!   and is not fenced, runs there under its escrow actor, with no round
//!   trip, even cut off from the owner;
//! - else goes to the owner, which makes it only if its pool holds `d`.
//!
//! Why the counter stays at or above its floor: the owner grants and
//! decrements only out of its pool as it sees it. What it does not see yet
//! only makes its pool look smaller, or leaves it as it is: an increment
//! unseen lowers `V`; a spend comes with its decrement; a return unseen
//! leaves a balance counted. Every grant made by an earlier owner travels
//! with the offer that hands the counter on. A node spends only its own
//! balance, whose spends and returns it wrote itself, and never takes its
//! own copy below the floor; each node's log is merged in order, so a
//! replica that sees a decrement has seen the increments behind it.
//!
//! While nodes are connected, rights follow use, at most every
//! `Rebalance::every_ms`: the owner splits what the pool and the connected
//! nodes hold (`R`) into targets, half equally, half by each node's recent
//! decrements (made there, or sent to the owner from there), writes the
//! targets into the record, and grants to a node holding less than half
//! of its target the difference; a node holding more than twice its target
//! gives the surplus back. Nodes not connected to the owner keep what they
//! hold.

use super::*;
use crate::error::OwnershipError;
use crate::keyspace::{escrow_record, escrowed_by_record, ESCROW_PREFIX};
use atoll_crdt::{escrow_actor, spent_by, Escrow, PNCounter, Targets};
use std::collections::BTreeSet;

/// How many records are read at a time when the index is loaded.
const LOAD_BATCH: usize = 256;

/// What this replica knows of counters with escrow.
#[derive(Default)]
pub(super) struct Escrows {
    /// The counters with an escrow record here (`None` until first used).
    names: Option<BTreeSet<String>>,
    /// At the owner: each node's recent decrements, by counter, halved
    /// every round.
    used: BTreeMap<(String, ReplicaId), u64>,
    /// At the owner: what each node had spent at the last round.
    spent_seen: BTreeMap<(String, ReplicaId), u64>,
    /// Rights granted by this node since it opened.
    pub(super) granted: u64,
}

/// Where an operation runs, as far as escrow decides it.
pub(super) enum Escrowed {
    /// Not a decrement of a counter with escrow.
    No,
    /// A decrement this node makes out of its balance (`Route::Escrow`).
    Here,
    /// A decrement that runs at an owner, as a strong operation does.
    AtOwner,
}

/// The owner's pool: what it may decrement or grant, as `escrow` and
/// `counter` show it.
fn pool_of(escrow: &Escrow, counter: &PNCounter) -> i128 {
    let floor = i128::from(escrow.floor.unwrap_or(i64::MIN));
    counter.value() - floor - escrow.held(counter)
}

/// How much `op` takes off a counter, if it decrements one.
fn decrement_of(op: &Op) -> Option<u64> {
    match *op {
        Op::CounterAdd { by } if by < 0 => Some(by.unsigned_abs()),
        Op::CounterDecrementIf { by, .. } if by > 0 => Some(by.unsigned_abs()),
        _ => None,
    }
}

impl<B: Backend> Replica<B> {
    /// The escrow record of counter `name`, if escrow was enabled on it.
    pub fn escrow_of(&mut self, name: &str) -> crate::Result<Option<Escrow>> {
        if !self.escrow_names()?.contains(name) {
            return Ok(None);
        }
        match self.ks.state(&escrow_record(name))? {
            Some(State::Escrow(e)) if e.floor.is_some() => Ok(Some(e.clone())),
            _ => Ok(None),
        }
    }

    /// The escrow record of counter `name` and the counter, as seen here
    /// (`None`: escrow is not enabled on it): a node's balance needs both.
    pub fn escrow_and_counter(&mut self, name: &str) -> crate::Result<Option<(Escrow, PNCounter)>> {
        let Some(escrow) = self.escrow_of(name)? else {
            return Ok(None);
        };
        Ok(Some((escrow, self.counter_of(name)?)))
    }

    /// Reads the index of counters with escrow again: after a record was
    /// merged outside the replica (the store's own `merge`).
    pub fn reload_escrows(&mut self) {
        self.escrows.names = None;
        let _ = self.escrow_names();
    }

    /// Rights granted by this node since it opened.
    pub fn escrow_granted(&self) -> u64 {
        self.escrows.granted
    }

    pub(super) fn escrow_names(&mut self) -> crate::Result<&mut BTreeSet<String>> {
        if self.escrows.names.is_none() {
            let mut names = BTreeSet::new();
            let mut after = ESCROW_PREFIX.to_string();
            'scan: loop {
                let batch = self.ks.variables_after(&after, LOAD_BATCH)?;
                let done = batch.len() < LOAD_BATCH;
                for (record, _) in batch {
                    let Some(name) = escrowed_by_record(&record) else {
                        break 'scan;
                    };
                    names.insert(name.to_string());
                    after = record;
                }
                if done {
                    break;
                }
            }
            self.escrows.names = Some(names);
        }
        Ok(self.escrows.names.get_or_insert_with(BTreeSet::new))
    }

    /// The counter's value here.
    fn counter_value(&mut self, name: &str) -> crate::Result<i128> {
        Ok(self.counter_of(name)?.value())
    }

    /// The counter's state here (a counter is small).
    fn counter_of(&mut self, name: &str) -> crate::Result<PNCounter> {
        match self.ks.state(name)? {
            Some(State::Counter(c)) => Ok(c.clone()),
            None => Ok(PNCounter::new()),
            Some(other) => Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: Kind::Counter,
                found: other.kind(),
            }),
        }
    }

    /// Where a decrement of a counter with escrow runs (see [`Escrowed`]):
    /// here, out of this node's balance, if it holds enough, its copy stays
    /// at or above the floor, and it is neither the owner (which
    /// decrements out of its pool) nor fenced; else at an owner, even on a
    /// counter released since.
    pub(super) fn escrow_route(
        &mut self,
        name: &str,
        op: &Op,
        owner: Option<ReplicaId>,
    ) -> crate::Result<Escrowed> {
        let Some(by) = decrement_of(op) else {
            return Ok(Escrowed::No);
        };
        let Some(escrow) = self.escrow_of(name)? else {
            return Ok(Escrowed::No);
        };
        let me = self.id();
        let counter = self.counter_of(name)?;
        let floor = i128::from(escrow.floor.unwrap_or(i64::MAX));
        if owner.is_some_and(|o| o != me)
            && !self.fenced()
            && escrow.balance(me, &counter) >= i128::from(by)
            && counter.value() - i128::from(by) >= floor
        {
            return Ok(Escrowed::Here);
        }
        Ok(Escrowed::AtOwner)
    }

    /// A decrement out of this node's balance (the route said
    /// [`Route::Escrow`]): made under the node's escrow actor, which is
    /// what records the spend, in the same delta.
    pub(super) fn spend_escrow(&mut self, now: u64, name: &str, op: Op) -> crate::Result<Outcome> {
        let actor = escrow_actor(self.id());
        let out = self.ks.apply_as(name, op, self.wall, actor)?;
        if out.applied.is_some() {
            self.observe(now);
        }
        Ok(out)
    }

    /// At the owner, before `op` runs on `name`: enables escrow, or
    /// refuses a decrement its pool does not cover (`Some`: the answer and
    /// the change, instead of running `op`). `requester` made the request.
    pub(super) fn escrow_at_owner(
        &mut self,
        name: &str,
        op: &Op,
        requester: ReplicaId,
    ) -> crate::Result<Option<(Answer, Option<VarDelta>)>> {
        if let Op::CounterEscrow { floor } = *op {
            // The record reaches the requester by gossip: a reply carries
            // a change of the variable asked about only.
            self.enable_escrow(name, floor)?;
            return Ok(Some((Answer::Done, None)));
        }
        let Some(by) = decrement_of(op) else {
            return Ok(None);
        };
        let Some(escrow) = self.escrow_of(name)? else {
            return Ok(None);
        };
        let counter = self.counter_of(name)?;
        let pool = pool_of(&escrow, &counter);
        let key = (name.to_string(), requester);
        *self.escrows.used.entry(key).or_default() += by;
        if i128::from(by) <= pool {
            return Ok(None);
        }
        // Rights granted to this node before it owned the counter go back
        // to its pool, and may cover it.
        let me = self.id();
        let mine = u64::try_from(escrow.balance(me, &counter)).unwrap_or(0);
        if mine > 0 && !self.fenced() {
            self.write_escrow(name, |e| e.give_back(me, mine))?;
            let pool = match self.escrow_of(name)? {
                Some(e) => pool_of(&e, &counter),
                None => pool,
            };
            if i128::from(by) <= pool {
                return Ok(None);
            }
        }
        let floor = escrow.floor.unwrap_or_default();
        match *op {
            Op::CounterDecrementIf { .. } => {
                let value = counter.value();
                Ok(Some((Answer::Decremented { done: false, value }, None)))
            }
            _ => Err(OwnershipError::BelowFloor {
                name: name.to_string(),
                by,
                floor,
                available: pool.max(0),
            }
            .into()),
        }
    }

    /// Enables escrow on counter `name`, owned here, with `floor`.
    fn enable_escrow(&mut self, name: &str, floor: i64) -> crate::Result<()> {
        let refuse = |why: String| -> crate::Result<()> {
            Err(OwnershipError::Escrow {
                name: name.to_string(),
                why,
            }
            .into())
        };
        let value = self.counter_value(name)?;
        match self.escrow_of(name)? {
            Some(e) if e.floor == Some(floor) => return Ok(()),
            Some(e) => {
                return refuse(format!(
                    "it has escrow with floor {} already; a floor does not change",
                    e.floor.unwrap_or_default()
                ))
            }
            None => {}
        }
        if value < i128::from(floor) {
            return refuse(format!("its value {value} is below the floor {floor}"));
        }
        self.write_escrow(name, |_| Ok(Escrow::enabled(floor)))?;
        Ok(())
    }

    /// Writes this node's change of the escrow record of `name` (`change`
    /// gets the record held, and returns the delta); returns it for the
    /// peers.
    fn write_escrow(
        &mut self,
        name: &str,
        change: impl FnOnce(&mut Escrow) -> Result<Escrow, atoll_crdt::CrdtError>,
    ) -> crate::Result<Option<VarDelta>> {
        let record = escrow_record(name);
        let mut held = match self.ks.state(&record)? {
            Some(State::Escrow(e)) => e.clone(),
            _ => Escrow::default(),
        };
        let delta = change(&mut held).map_err(|source| Error::Crdt {
            name: record.clone(),
            source,
        })?;
        let incarnation = self.ks.incarnation();
        let state = State::Escrow(delta);
        let encoded = codec::encode(&state);
        let applied =
            self.ks
                .merge_state(incarnation, &record, Kind::Escrow, state, None, self.wall)?;
        self.escrow_names()?.insert(name.to_string());
        if applied.is_none() {
            return Ok(None);
        }
        let now = self.last_now;
        self.observe(now);
        Ok(Some(VarDelta {
            name: record,
            kind: Kind::Escrow,
            delta: encoded,
        }))
    }

    /// An escrow record that came with an offer of `name`: merged before
    /// the offer is accepted.
    pub(super) fn merge_escrow(
        &mut self,
        from: ReplicaId,
        name: &str,
        escrow: Escrow,
    ) -> Result<(), ProtocolError> {
        let state = State::Escrow(escrow);
        let encoded = codec::encode(&state);
        self.merge_one(from, &escrow_record(name), Kind::Escrow, state, encoded)
    }

    /// After changes merged: the escrow records among them join the index.
    pub(super) fn escrows_merged(&mut self, from_event: usize) {
        let names: Vec<String> = self
            .events
            .iter()
            .skip(from_event)
            .filter_map(|e| match e {
                Event::Applied(a) => escrowed_by_record(&a.name).map(str::to_string),
                _ => None,
            })
            .collect();
        if let Some(index) = self.escrows.names.as_mut() {
            index.extend(names);
        }
    }

    /// Whether a round could move rights: some counter has escrow here.
    pub(super) fn has_escrows(&self) -> bool {
        self.escrows.names.as_ref().is_some_and(|n| !n.is_empty())
    }

    /// One round over every counter with escrow (see the module's doc).
    pub(super) fn escrow_round(&mut self) {
        if self.fenced() {
            return;
        }
        let names: Vec<String> = match self.escrow_names() {
            Ok(n) => n.iter().cloned().collect(),
            Err(_) => return,
        };
        let me = self.id();
        for name in names {
            let Ok(record) = self.ownership(&name) else {
                continue;
            };
            let Ok(Some(escrow)) = self.escrow_of(&name) else {
                continue;
            };
            // A failed write (storage) changes nothing; the next round
            // tries again.
            match record.owner() {
                Some(o) if o == me && record.handoff().is_none() => {
                    let _ = self.grant_round(&name, &escrow, record.epoch);
                }
                Some(o) if self.peers.get(&o).is_some_and(|p| p.connected) => {
                    let _ = self.give_back_round(&name, &escrow);
                }
                _ => {}
            }
        }
    }

    /// The owner's round: targets by use, and grants to those below half
    /// of theirs.
    fn grant_round(&mut self, name: &str, escrow: &Escrow, epoch: u64) -> crate::Result<()> {
        let me = self.id();
        let mut nodes: Vec<ReplicaId> = vec![me];
        nodes.extend(
            self.peers
                .iter()
                .filter(|(_, p)| p.connected)
                .map(|(id, _)| *id),
        );
        nodes.sort();
        // Recent use: what each node spent since the last round, and what
        // reached the owner from it; halved every round.
        let mut use_of = BTreeMap::new();
        let counter = self.counter_of(name)?;
        for &n in &nodes {
            let key = (name.to_string(), n);
            let spent = spent_by(&counter, n);
            let before = self.escrows.spent_seen.insert(key.clone(), spent);
            let fresh = spent.saturating_sub(before.unwrap_or(spent));
            let used = self.escrows.used.entry(key).or_default();
            *used = (*used / 2).saturating_add(fresh);
            use_of.insert(n, *used);
        }
        // What the owner was granted before it owned the counter goes
        // back to its pool, where the targets count it.
        let mine = u64::try_from(escrow.balance(me, &counter)).unwrap_or(0);
        let returned;
        let escrow = if mine > 0 {
            self.write_escrow(name, |e| e.give_back(me, mine))?;
            returned = self.escrow_of(name)?.unwrap_or_else(|| escrow.clone());
            &returned
        } else {
            escrow
        };
        let pool = pool_of(escrow, &counter);
        let balance = |n: ReplicaId| escrow.balance(n, &counter).max(0);
        let total: i128 = pool
            + nodes
                .iter()
                .filter(|&&n| n != me)
                .map(|&n| balance(n))
                .sum::<i128>();
        if total <= 0 {
            return Ok(());
        }
        let count = nodes.len() as i128;
        let all_use: i128 = use_of.values().map(|&u| i128::from(u)).sum();
        let base = total / 2 / count;
        let rest = total - base * count;
        let target = |n: ReplicaId| -> i128 {
            let by_use = if all_use == 0 {
                rest / count
            } else {
                rest.saturating_mul(i128::from(use_of.get(&n).copied().unwrap_or(0))) / all_use
            };
            base + by_use
        };
        let shares: BTreeMap<ReplicaId, u64> = nodes
            .iter()
            .map(|&n| (n, u64::try_from(target(n)).unwrap_or(u64::MAX)))
            .collect();
        // Targets are written when one moved by more than a quarter.
        let moved = escrow.targets().is_none_or(|t| {
            t.epoch != epoch
                || shares.iter().any(|(n, &s)| {
                    let old = t.shares.get(n).copied().unwrap_or(0);
                    s.abs_diff(old).saturating_mul(4) > old.max(1)
                })
        });
        // Grants, out of what the pool holds beyond the owner's target.
        let mut spare = pool - target(me);
        let mut grants = Vec::new();
        for &n in nodes.iter().filter(|&&n| n != me) {
            let (t, b) = (target(n), balance(n));
            if spare <= 0 || b * 2 >= t {
                continue;
            }
            let give = (t - b).min(spare);
            spare -= give;
            grants.push((n, u64::try_from(give).unwrap_or(0)));
        }
        if moved {
            let round = escrow.targets().map_or(0, |t| t.round) + 1;
            let targets = Targets {
                epoch,
                round,
                by: me,
                shares,
            };
            self.write_escrow(name, |e| Ok(e.set_targets(targets)))?;
        }
        if !grants.is_empty() {
            let given: u64 = grants.iter().map(|(_, g)| g).sum();
            self.write_escrow(name, |e| {
                let mut delta = Escrow::default();
                for (to, n) in grants {
                    atoll_crdt::Lattice::join(&mut delta, e.grant(me, to, n)?);
                }
                Ok(delta)
            })?;
            self.escrows.granted = self.escrows.granted.saturating_add(given);
        }
        Ok(())
    }

    /// A node's round: a balance over twice its target goes back to the
    /// pool, down to the target.
    fn give_back_round(&mut self, name: &str, escrow: &Escrow) -> crate::Result<()> {
        let me = self.id();
        let Some(targets) = escrow.targets() else {
            return Ok(());
        };
        let target = i128::from(targets.shares.get(&me).copied().unwrap_or(0));
        let balance = escrow.balance(me, &self.counter_of(name)?);
        if balance <= target * 2 || balance <= 0 {
            return Ok(());
        }
        let surplus = u64::try_from(balance - target).unwrap_or(0);
        self.write_escrow(name, |e| e.give_back(me, surplus))?;
        Ok(())
    }
}
