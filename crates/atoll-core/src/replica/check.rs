//! Consistency checks: does every reachable node hold the same data as
//! this one, and if not, which variables differ, and is it lag or damage?
//!
//! [`Replica::check`] asks every connected peer for its digest tree
//! (`DigestAsk`), compares the root with its own, then the buckets, then
//! the variables of the buckets that differ. A peer whose root equals ours
//! is `ok`. A peer that differs is `in_flight` unless the two have seen the
//! same updates: it holds all of our log, and we hold all of its log. Then
//! it is `divergent` (a bug or damage), and each differing variable is
//! repaired: both send their state of it, and each joins the other's
//! (always safe for a CRDT). A peer that is not connected, or does not
//! answer within `request_timeout_ms`, is `unreachable`. The result is an
//! [`Event::Checked`] with the [`CheckReport`].

use super::*;
use crate::keyspace::{DigestTree, DIGEST_BUCKETS};
use crate::protocol::DigestReply;

/// Differing variables listed in a report, at most (the rest are
/// counted).
pub const MAX_LISTED: usize = 100;

/// Buckets asked for at once, at most.
const MAX_BUCKETS_ASKED: usize = 256;

/// Bytes of names and digests in one reply, about at most.
const MAX_NAMES_BYTES: usize = 1 << 20;

/// Variables repaired per peer and check, at most.
const MAX_REPAIRED: usize = 1024;

/// How a node compares with the node that checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// It holds the same data.
    Ok,
    /// It differs, and one of the two has not seen all the other's
    /// updates yet: replication will bring them together.
    InFlight,
    /// It differs though both have seen the same updates.
    Divergent,
    /// It was not connected, or did not answer in time.
    Unreachable,
}

impl CheckResult {
    /// The result's name in reports: `ok`, `in_flight`, `divergent`,
    /// `unreachable`.
    pub fn name(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::InFlight => "in_flight",
            CheckResult::Divergent => "divergent",
            CheckResult::Unreachable => "unreachable",
        }
    }
}

/// One node in a check's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCheck {
    /// The node.
    pub node: ReplicaId,
    /// How it compares.
    pub result: CheckResult,
    /// Its root digest (`None`: it did not answer).
    pub root: Option<u128>,
    /// How many variables it holds.
    pub variables: u64,
    /// How many variables differ from ours.
    pub differing: u64,
    /// How many of them were sent to be repaired.
    pub repaired: u64,
    /// When it answered, ms after the check began.
    pub answered_ms: Option<u64>,
}

/// A variable that differs between this node and another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Differing {
    /// The variable.
    pub name: String,
    /// The other node.
    pub node: ReplicaId,
    /// Its digest here (`None`: absent here).
    pub here: Option<u128>,
    /// Its digest there (`None`: absent there).
    pub there: Option<u128>,
}

/// What a consistency check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The check's id (per node).
    pub id: u64,
    /// The node that checked.
    pub node: ReplicaId,
    /// When it began (wall ms).
    pub started_ms: u64,
    /// How long it took (ms).
    pub duration_ms: u64,
    /// This node's root digest and variables.
    pub root: u128,
    /// How many variables it holds.
    pub variables: u64,
    /// Every peer.
    pub nodes: Vec<NodeCheck>,
    /// Differing variables, at most [`MAX_LISTED`].
    pub differing: Vec<Differing>,
    /// How many differ in all (by node and variable).
    pub differing_count: u64,
}

/// Whether this node and the peer whose `reply` it is have seen each
/// other's updates: the peer holds our log through `our_last` (what it
/// needs of it), and we hold its log through what it said it has.
fn mutual(reply: &DigestReply, me: ReplicaId, our_last: u64, we_hold: u64) -> bool {
    let they_hold_ours = reply.holds.iter().any(|&(n, h)| n == me && h >= our_last);
    they_hold_ours && we_hold >= reply.last_seq
}

/// A check under way.
pub(super) struct Running {
    started_mono: u64,
    started_wall: u64,
    tree: DigestTree,
    deadline: u64,
    nodes: BTreeMap<ReplicaId, NodeCheck>,
    /// Peers whose names are awaited: the buckets asked, and whether the
    /// two had seen each other's updates when their trees differed.
    waiting_names: BTreeMap<ReplicaId, (Vec<u16>, bool)>,
    differing: Vec<Differing>,
    differing_count: u64,
}

/// The checks of this replica.
#[derive(Default)]
pub(super) struct Checks {
    pub(super) running: BTreeMap<u64, Running>,
    last_id: u64,
}

impl<B: Backend> Replica<B> {
    /// Starts a consistency check of every peer; its report comes as an
    /// [`Event::Checked`] once every peer answered, or was found
    /// unreachable.
    pub fn check(&mut self, now: impl Into<Now>) -> crate::Result<u64> {
        let now = self.input(now);
        self.observe(now);
        let tree = self.ks.digest_tree()?;
        self.checks.last_id += 1;
        let id = self.checks.last_id;
        let mut nodes = BTreeMap::new();
        let mut asked = Vec::new();
        for (&peer, p) in &self.peers {
            let result = if p.connected {
                asked.push(peer);
                CheckResult::InFlight
            } else {
                CheckResult::Unreachable
            };
            let node = NodeCheck {
                node: peer,
                result,
                root: None,
                variables: 0,
                differing: 0,
                repaired: 0,
                answered_ms: None,
            };
            nodes.insert(peer, node);
        }
        self.checks.running.insert(
            id,
            Running {
                started_mono: now,
                started_wall: self.wall,
                tree,
                deadline: now.saturating_add(self.config.request_timeout_ms),
                nodes,
                waiting_names: BTreeMap::new(),
                differing: Vec::new(),
                differing_count: 0,
            },
        );
        for peer in asked {
            let ask = Message::DigestAsk {
                check: id,
                buckets: Vec::new(),
            };
            self.send(peer, &ask);
        }
        self.finish_check_if_done(id, now);
        Ok(id)
    }

    /// The last entry of this node's log that peer `id` needs: entries at
    /// the end that came from it are never sent back to it. (Looked for
    /// among the last 64; past them, the log's end.)
    fn last_needed_by(&self, id: ReplicaId) -> u64 {
        const LOOK_BACK: u64 = 64;
        let last = self.ks.last_seq();
        let Some(inc) = self.peers.get(&id).and_then(|p| p.incarnation) else {
            return last;
        };
        let from = last.saturating_sub(LOOK_BACK);
        match self.ks.storage().log_after(from, LOOK_BACK as usize) {
            Ok(entries) if !entries.is_empty() => entries
                .iter()
                .rev()
                .find(|(_, e)| e.origin != inc)
                .map_or(from, |(seq, _)| *seq),
            _ => last,
        }
    }

    /// What this node holds of peer `id`'s log: as the last interval
    /// merged says, or the stored record of it, if it is of the peer's
    /// incarnation now (a record of another one may count another log).
    fn held_of(&self, id: ReplicaId) -> Option<u64> {
        let p = self.peers.get(&id)?;
        p.held.or_else(|| match self.ks.peer_holds(id) {
            Ok(Some((inc, seq))) if Some(inc) == p.incarnation => Some(seq),
            _ => None,
        })
    }

    /// A peer asks for our digests.
    pub(super) fn on_digest_ask(
        &mut self,
        from: ReplicaId,
        check: u64,
        buckets: Vec<u16>,
    ) -> Result<(), ProtocolError> {
        if buckets.len() > MAX_BUCKETS_ASKED
            || buckets.iter().any(|&b| usize::from(b) >= DIGEST_BUCKETS)
        {
            return Err(hostile(
                from,
                "a digest ask of too many buckets, or of buckets that do not exist",
            ));
        }
        let merge_err = |source| ProtocolError::Merge { peer: from, source };
        // Of what the two share only: nothing of the rest goes to it.
        let tree = self.tree_shared_with(from).map_err(merge_err)?;
        let mut reply = DigestReply {
            check,
            last_seq: self.last_needed_by(from),
            holds: self
                .peers
                .keys()
                .filter_map(|&id| self.held_of(id).map(|h| (id, h)))
                .collect(),
            root: tree.root,
            variables: tree.variables,
            buckets: Vec::new(),
            names: Vec::new(),
            more: 0,
        };
        if buckets.is_empty() {
            reply.buckets = tree.buckets;
        } else {
            let mut bytes = 0;
            for (name, d) in self
                .digests_shared_with(from, &buckets)
                .map_err(merge_err)?
            {
                bytes += name.len() + 17;
                if bytes > MAX_NAMES_BYTES {
                    reply.more += 1;
                } else {
                    reply.names.push((name, d));
                }
            }
        }
        self.send(from, &Message::Digests(Box::new(reply)));
        Ok(())
    }

    /// A peer's digests, for a check of ours.
    pub(super) fn on_digests(
        &mut self,
        now: u64,
        from: ReplicaId,
        reply: Box<DigestReply>,
    ) -> Result<(), ProtocolError> {
        let id = reply.check;
        if !self.checks.running.contains_key(&id) {
            return Ok(());
        }
        // Compared with this node as it is now, not as the check began.
        let last_seq = self.last_needed_by(from);
        let held_of_peer = self.held_of(from).unwrap_or(0);
        let me = self.id();
        let tree = self
            .tree_shared_with(from)
            .map_err(|source| ProtocolError::Merge { peer: from, source })?;
        let Some(run) = self.checks.running.get_mut(&id) else {
            return Ok(());
        };
        let Some(node) = run.nodes.get_mut(&from) else {
            return Ok(());
        };
        if node.answered_ms.is_some() && !run.waiting_names.contains_key(&from) {
            return Ok(());
        }
        node.root = Some(reply.root);
        node.variables = reply.variables;
        node.answered_ms = Some(now.saturating_sub(run.started_mono));
        if reply.root == tree.root {
            node.result = CheckResult::Ok;
            run.waiting_names.remove(&from);
            self.finish_check_if_done(id, now);
            return Ok(());
        }
        if !reply.buckets.is_empty() {
            if reply.buckets.len() != DIGEST_BUCKETS {
                return Err(hostile(from, "a digest tree of the wrong size"));
            }
            let differ: Vec<u16> = (0..DIGEST_BUCKETS)
                .filter(|&b| reply.buckets[b] != tree.buckets[b])
                .take(MAX_BUCKETS_ASKED)
                .map(|b| b as u16)
                .collect();
            // Both have seen every update of the other, and still differ:
            // not in flight (asked again with the names, below).
            let mutual = mutual(&reply, me, last_seq, held_of_peer);
            run.waiting_names.insert(from, (differ.clone(), mutual));
            self.send(
                from,
                &Message::DigestAsk {
                    check: id,
                    buckets: differ,
                },
            );
            return Ok(());
        }
        // The names of the buckets that differ: compared with ours.
        let Some((buckets, mutual_before)) = run.waiting_names.remove(&from) else {
            return Ok(());
        };
        // Seen each other's updates both when the trees and when the names
        // were compared: a change in between is in flight.
        let mutual = mutual_before && mutual(&reply, me, last_seq, held_of_peer);
        let theirs: BTreeMap<String, u128> = reply.names.into_iter().collect();
        let mine: BTreeMap<String, u128> = self
            .digests_shared_with(from, &buckets)
            .map_err(|source| ProtocolError::Merge { peer: from, source })?
            .into_iter()
            .collect();
        let asked: std::collections::BTreeSet<u16> = buckets.into_iter().collect();
        let names: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
        let mut differing = Vec::new();
        for name in names {
            // Only the buckets asked for are compared.
            if !asked.contains(&crate::keyspace::bucket_of(name)) {
                continue;
            }
            let (here, there) = (mine.get(name).copied(), theirs.get(name).copied());
            if here != there {
                differing.push(Differing {
                    name: name.clone(),
                    node: from,
                    here,
                    there,
                });
            }
        }
        let divergent = mutual && !differing.is_empty();
        let Some(run) = self.checks.running.get_mut(&id) else {
            return Ok(());
        };
        let count = differing.len() as u64 + reply.more;
        if let Some(node) = run.nodes.get_mut(&from) {
            node.differing = count;
            node.result = match (divergent, count) {
                (true, _) => CheckResult::Divergent,
                (false, 0) => CheckResult::Ok,
                (false, _) => CheckResult::InFlight,
            };
            if divergent {
                node.repaired = differing.len().min(MAX_REPAIRED) as u64;
            }
        }
        run.differing_count += count;
        let room = MAX_LISTED.saturating_sub(run.differing.len());
        run.differing.extend(differing.iter().take(room).cloned());
        if divergent {
            let names: Vec<String> = differing
                .into_iter()
                .take(MAX_REPAIRED)
                .map(|d| d.name)
                .collect();
            self.send_repair(from, names, true);
        }
        self.finish_check_if_done(id, now);
        Ok(())
    }

    /// Sends our states of `names` to `to`, to join; with `answer`, asks
    /// for its states back.
    fn send_repair(&mut self, to: ReplicaId, names: Vec<String>, answer: bool) {
        let (max_message, max_delta) = self.peer_limits(to);
        let mut vars = Vec::new();
        let mut bytes = 0;
        for name in &names {
            if !self.sends_to(to, name) {
                continue;
            }
            if let Ok(Some(state)) = self.ks.state(name) {
                let delta = codec::encode(state);
                // What does not fit reaches it by the next check's repair.
                if delta.len() > max_delta || bytes + delta.len() > max_message / 2 {
                    continue;
                }
                bytes += delta.len();
                vars.push(VarDelta {
                    name: name.clone(),
                    kind: state.kind(),
                    delta,
                });
            }
        }
        self.send(
            to,
            &Message::Repair {
                names,
                vars,
                answer,
            },
        );
    }

    /// States a check found divergent: joined here; with `answer`, ours go
    /// back.
    pub(super) fn on_repair(
        &mut self,
        from: ReplicaId,
        names: Vec<String>,
        vars: Vec<VarDelta>,
        states: Vec<Result<State, atoll_crdt::codec::DecodeError>>,
        answer: bool,
    ) -> Result<(), ProtocolError> {
        if names.len() > MAX_REPAIRED || vars.len() > names.len() {
            return Err(hostile(from, "a repair of too many variables"));
        }
        for (v, state) in vars.into_iter().zip(states) {
            let state = state.map_err(|e| hostile(from, format!("undecodable repair: {e}")))?;
            crate::validate_name(&v.name)
                .map_err(|e| hostile(from, format!("repair of a bad name: {e}")))?;
            self.merge_one(from, &v.name.clone(), v.kind, state, v.delta)?;
            self.events
                .push_back(Event::Repaired { name: v.name, from });
        }
        if answer {
            self.send_repair(from, names, false);
        }
        Ok(())
    }

    /// Ends check `id` if every peer answered, or `now` is past its
    /// deadline (the rest are unreachable).
    pub(super) fn finish_check_if_done(&mut self, id: u64, now: u64) {
        let Some(run) = self.checks.running.get_mut(&id) else {
            return;
        };
        let late = now >= run.deadline;
        let pending = |n: &NodeCheck, waiting: bool| {
            n.result != CheckResult::Unreachable && (n.answered_ms.is_none() || waiting)
        };
        let open = run
            .nodes
            .values()
            .any(|n| pending(n, run.waiting_names.contains_key(&n.node)));
        if open && !late {
            return;
        }
        let Some(mut run) = self.checks.running.remove(&id) else {
            return;
        };
        for n in run.nodes.values_mut() {
            if pending(n, run.waiting_names.contains_key(&n.node)) {
                n.result = CheckResult::Unreachable;
            }
        }
        let report = CheckReport {
            id,
            node: self.id(),
            started_ms: run.started_wall,
            duration_ms: now.saturating_sub(run.started_mono),
            root: run.tree.root,
            variables: run.tree.variables,
            nodes: run.nodes.into_values().collect(),
            differing: run.differing,
            differing_count: run.differing_count,
        };
        self.events.push_back(Event::Checked(Box::new(report)));
    }

    /// Checks past their deadline end.
    pub(super) fn checks_due(&mut self, now: u64) {
        let due: Vec<u64> = self
            .checks
            .running
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.finish_check_if_done(id, now);
        }
    }

    /// When the next check ends by its deadline.
    pub(super) fn next_check_deadline(&self) -> Option<u64> {
        self.checks.running.values().map(|r| r.deadline).min()
    }
}
