//! The monitor: which acknowledged writes a crash or restore lost, and
//! why; the timeline's marks and progress samples; the link-progress
//! check; the sync report.

use super::*;

/// What happened, for the report's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A node crashed.
    Crash(usize),
    /// A node came back up (from its storage, or from a backup taken at the given time).
    Up(usize, Option<u64>),
    /// A link went down (`true`: one way only, from the first to the second).
    Cut(usize, usize, bool),
    /// A link came back.
    Heal(usize, usize, bool),
    /// A node's clock jumped.
    Jump(usize, i64),
    /// The liveness phase began.
    Liveness,
    /// Every replica holds the same state.
    Converged,
}

/// One divergence sample: for each node, how many variables differ from the
/// join of every node's state (0: it has everything any node has).
#[derive(Clone, Debug)]
pub struct Sample {
    /// When.
    pub at: u64,
    /// Per node (`None`: down).
    pub behind: Vec<Option<u32>>,
}

impl Sim {
    /// After node `i` lost data (its states were `before`): marks every
    /// acknowledged operation no node holds any more as lost, and why. Only
    /// operations on variables whose state at `i` changed can have been lost.
    pub(super) fn mark_losses(
        &mut self,
        i: usize,
        before: &BTreeMap<String, State>,
        restore: bool,
    ) {
        let durable = self.opts.durability == Durability::Durable;
        let mut after = self.view(i);
        let changed: std::collections::BTreeSet<String> = before
            .iter()
            .filter(|(n, s)| after.get(*n) != Some(s))
            .map(|(n, _)| n.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        // Each node's state of a variable, copied once for the whole pass.
        let mut states: BTreeMap<String, Vec<Option<State>>> = BTreeMap::new();
        for k in 0..self.history.len() {
            if self.history[k].lost.is_some() {
                continue;
            }
            // An operation on a shared name is held under the name, or in
            // its conflict copy where another type kept the name.
            let var = self.history[k].var.clone();
            let copy = atoll_core::conflict_name(&var, self.history[k].op.kind());
            if !changed.contains(&var) && !changed.contains(&copy) {
                continue;
            }
            let delta = self.history[k].delta.clone();
            let mut held = false;
            for var in [var, copy] {
                let row = states.entry(var.clone()).or_insert_with(|| {
                    (0..self.nodes.len())
                        .map(|n| self.state_of(n, &var))
                        .collect()
                });
                // Held here, or by any node? The cheap test (nothing left once
                // stripped) everywhere first; the full one (a join that changes
                // nothing), which copies the state, only if that finds nothing.
                held = after
                    .get_mut(&var)
                    .is_some_and(|s| workload::strips_to_nothing(s, &delta))
                    || row
                        .iter_mut()
                        .flatten()
                        .any(|s| workload::strips_to_nothing(s, &delta))
                    || after
                        .get(&var)
                        .is_some_and(|s| workload::includes(s, &delta))
                    || row.iter().flatten().any(|s| workload::includes(s, &delta));
                if held {
                    break;
                }
            }
            if held {
                continue;
            }
            let (at, node) = (self.now, i);
            let why = if restore {
                Loss::Restore { at, node }
            } else if durable {
                Loss::DurableCrash { at, node }
            } else {
                Loss::BufferedCrash { at, node }
            };
            if matches!(why, Loss::DurableCrash { .. }) {
                let rec = self.history[k].to_string();
                self.fail(format!(
                    "acknowledged {rec} was lost when n{i} crashed, under durable writes"
                ));
            } else {
                self.stats.allowed_losses += 1;
            }
            self.trace
                .record(self.now, format_args!("lost op #{k}: {why:?}"));
            self.history[k].lost = Some(why);
        }
    }

    pub(super) fn sample(&mut self) {
        let views: Vec<Option<BTreeMap<String, State>>> = (0..self.nodes.len())
            .map(|i| self.is_up(i).then(|| self.view(i)))
            .collect();
        let mut all: BTreeMap<String, State> = BTreeMap::new();
        for v in views.iter().flatten() {
            for (name, s) in v {
                match all.get_mut(name) {
                    Some(a) => {
                        let _ = a.join(s.clone());
                    }
                    None => {
                        all.insert(name.clone(), s.clone());
                    }
                }
            }
        }
        let behind = views
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| all.iter().filter(|(n, s)| v.get(*n) != Some(s)).count() as u32)
            })
            .collect();
        self.samples.push(Sample {
            at: self.now,
            behind,
        });
    }

    /// Checks the link-progress invariant on every pair (see `progress`).
    pub(super) fn check_progress(&mut self) {
        let mut failures = Vec::new();
        for x in 0..self.nodes.len() {
            let Some(r) = self.nodes[x].replica.as_ref() else {
                continue;
            };
            for p in r.peers() {
                let y = index_of(p.id);
                let gen = self
                    .conns
                    .get(&pair(x, y))
                    .filter(|c| c.up && self.link_wanted(x, y))
                    .map(|c| c.gen);
                failures.extend(self.progress.observe(self.now, x, y, gen, &p));
            }
        }
        for f in failures {
            self.fail(f);
        }
    }

    /// Each node's log end and its view of each peer, for diagnosing a stall.
    pub fn sync_report(&mut self) -> String {
        let mut out = Vec::new();
        let n = self.nodes.len();
        let views: Vec<BTreeMap<String, State>> = (0..n).map(|i| self.view(i)).collect();
        let mirror = self.opts.workload.mirror;
        for (i, v) in views.iter().enumerate().skip(1) {
            // With `--mirror`: of what both must hold.
            let both = |name: &str| {
                !mirror || {
                    let who = super::audience(name, n);
                    who.contains(&0) && who.contains(&i)
                }
            };
            let differ: Vec<&String> = v
                .keys()
                .chain(views[0].keys())
                .filter(|name| both(name) && v.get(*name) != views[0].get(*name))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !differ.is_empty() {
                out.push(format!("n{i} differs from n0 on {differ:?}"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(r) = &n.replica else {
                out.push(format!("n{i} down"));
                continue;
            };
            let ks = r.keyspace_ref();
            let peers: Vec<String> = r
                .peers()
                .iter()
                .map(|p| {
                    format!(
                        "n{}: acked {} lag {}{}{}{}",
                        index_of(p.id),
                        p.acked,
                        p.lag,
                        if p.connected { "" } else { " disconnected" },
                        if p.transferring { " transferring" } else { "" },
                        if p.caught_up { "" } else { " not caught up" },
                    )
                })
                .collect();
            out.push(format!(
                "n{i} log {} (flushed {}){} [{}]",
                ks.last_seq(),
                ks.flushed_seq(),
                if r.fenced() { " fenced" } else { "" },
                peers.join(", ")
            ));
        }
        out.join("; ")
    }
}
