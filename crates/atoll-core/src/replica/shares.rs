//! Bag shares: elements move between nodes' shares while they are
//! connected, so that a take at any node finds an element when the bag
//! has one, without a round trip.
//!
//! Every element of a bag is owned by one node, and only its owner takes
//! or transfers it (`atoll_crdt::Bag`): so a take never waits on another
//! node, and no element is taken twice, even across a split. A node whose
//! share is empty takes nothing, though, while others hold many. So at
//! most every `Rebalance::every_ms` each node looks at the bags written or
//! merged here since its last look (every bag it knows, when its connected
//! peers changed) and, for each, at the shares of itself and its connected
//! peers as it sees them:
//! with `fair` the rounded-up mean share, a node holding more than `fair`
//! gives its surplus to the peers holding less than half of it (empty
//! ones first), at most `max_moves` elements per bag and round, as one
//! operation (`Op::BagTransfers`). Only a node with a surplus gives, and
//! never below `fair`; a receiver never gets above it: so shares do not
//! go back and forth. A fenced node gives nothing (it may run on a restored
//! backup, and hold elements it gave away).
//!
//! The bags looked at are those written or merged here since the replica
//! opened (system variables aside: a bag's conflict copy is not
//! rebalanced).

use super::owners::Route;
use super::*;
use atoll_crdt::ElementId;
use std::collections::BTreeSet;

/// When bags are rebalanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebalance {
    /// How often (ms; 0: never).
    pub every_ms: u64,
    /// The most elements one node gives away per bag per round.
    pub max_moves: usize,
}

impl Default for Rebalance {
    fn default() -> Rebalance {
        Rebalance {
            every_ms: 1_000,
            max_moves: 64,
        }
    }
}

/// The bags this replica knows, and when it next rebalances them.
#[derive(Default)]
pub(super) struct Shares {
    pub(super) bags: BTreeSet<String>,
    /// Bags written or merged since the last round: only these are looked
    /// at again, unless the connected peers changed.
    pub(super) dirty: BTreeSet<String>,
    /// The peers connected at the last round.
    pub(super) connected: Vec<ReplicaId>,
    pub(super) next_at: Option<u64>,
    /// Elements given away since opening.
    pub(super) given: u64,
}

impl<B: Backend> Replica<B> {
    /// Notes that `name`, of `kind`, was written or merged here. System
    /// variables (a bag's conflict copy) are not rebalanced.
    pub(super) fn note_bag(&mut self, name: &str, kind: Kind) {
        if kind != Kind::Bag || crate::is_reserved(name) {
            return;
        }
        if !self.shares.bags.contains(name) {
            self.shares.bags.insert(name.to_string());
        }
        if !self.shares.dirty.contains(name) {
            self.shares.dirty.insert(name.to_string());
        }
    }

    /// Notes the bags among the changes merged since event `from_event`.
    pub(super) fn bags_merged(&mut self, from_event: usize) {
        let names: Vec<String> = self
            .events
            .iter()
            .skip(from_event)
            .filter_map(|e| match e {
                Event::Applied(a) if a.kind == Kind::Bag => Some(a.name.clone()),
                _ => None,
            })
            .collect();
        for name in names {
            self.note_bag(&name, Kind::Bag);
        }
    }

    fn connected_peers(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected)
            .map(|(id, _)| *id)
    }

    /// When the next round is due, if anything could move: a bag changed,
    /// or the connected peers did, since the last round.
    pub(super) fn next_rebalance(&self) -> Option<u64> {
        let every = self.config.rebalance.every_ms;
        let peers_changed = self
            .connected_peers()
            .ne(self.shares.connected.iter().copied());
        let connected = self.peers.values().any(|p| p.connected);
        let escrows = self.has_escrows();
        if every == 0 || !connected || (self.shares.bags.is_empty() && !escrows) {
            return None;
        }
        if self.shares.dirty.is_empty() && !peers_changed && !escrows {
            return None;
        }
        Some(self.shares.next_at.unwrap_or(self.last_now))
    }

    /// Elements this node gave to others' shares since it opened.
    pub fn bag_elements_given(&self) -> u64 {
        self.shares.given
    }

    /// A round, if due: each known bag's surplus here goes to connected
    /// peers whose shares are low.
    pub(super) fn rebalance_due(&mut self, now: u64) {
        match self.next_rebalance() {
            Some(at) if now >= at => {}
            _ => return,
        }
        self.shares.next_at = Some(now.saturating_add(self.config.rebalance.every_ms));
        if self.fenced() {
            return;
        }
        self.escrow_round();
        let connected: Vec<ReplicaId> = self.connected_peers().collect();
        let dirty = std::mem::take(&mut self.shares.dirty);
        let names: Vec<String> = if connected == self.shares.connected {
            dirty.into_iter().collect()
        } else {
            self.shares.bags.iter().cloned().collect()
        };
        self.shares.connected = connected;
        for name in names {
            let Some(moves) = self.moves_for(&name) else {
                continue;
            };
            let op = Op::BagTransfers {
                moves: moves.clone(),
            };
            // A failed write (storage) leaves the bag as it was; the next
            // round tries again.
            if let Ok(Outcome {
                delta: Some(delta),
                applied: Some(applied),
                ts,
                ..
            }) = self.write_routed(now, &name, op, Route::Local)
            {
                self.shares.given += moves.len() as u64;
                self.events.push_back(Event::Rebalanced {
                    name,
                    moves,
                    delta,
                    ts,
                    applied,
                });
            }
        }
    }

    /// What this node gives away of bag `name` now (`None`: nothing).
    fn moves_for(&mut self, name: &str) -> Option<Vec<(ElementId, ReplicaId)>> {
        let me = self.id();
        let connected = self.shares.connected.clone();
        let max_moves = self.config.rebalance.max_moves;
        let Ok(Some(State::Bag(bag))) = self.ks.state(name) else {
            return None;
        };
        // Every share, in one pass over the bag.
        let mut held: BTreeMap<ReplicaId, usize> = BTreeMap::new();
        for (_, e) in bag.iter() {
            *held.entry(e.owner).or_default() += 1;
        }
        let count = |id: &ReplicaId| held.get(id).copied().unwrap_or(0);
        let mine = count(&me);
        let mut shares: Vec<(usize, ReplicaId)> =
            connected.iter().map(|p| (count(p), *p)).collect();
        let total = mine + shares.iter().map(|(n, _)| n).sum::<usize>();
        let fair = total.div_ceil(shares.len() + 1);
        if mine <= fair {
            return None;
        }
        // Empty shares first, then the smallest.
        shares.sort();
        let mut surplus = (mine - fair).min(max_moves);
        let mut plan = Vec::new();
        for (n, peer) in shares {
            if surplus == 0 || n * 2 >= fair.max(1) {
                break;
            }
            let give = (fair - n).min(surplus);
            surplus -= give;
            plan.push((peer, give));
        }
        if plan.is_empty() {
            return None;
        }
        let mut mine = bag.iter().filter(|(_, e)| e.owner == me).map(|(id, _)| id);
        let mut moves = Vec::new();
        for (peer, give) in plan {
            moves.extend(mine.by_ref().take(give).map(|id| (id, peer)));
        }
        Some(moves)
    }
}
