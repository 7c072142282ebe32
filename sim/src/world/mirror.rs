//! Mirroring under faults (`--mirror`): n0 mirrors namespace `pair` over
//! the link n0-n1 only, at the start, and namespace `loc` is never
//! mirrored. A third of the client operations (but bag operations) go to
//! `loc` (as `loc/n{i}.NAME`, at the node `i` that makes them) or, from n0
//! and n1, to `pair`. Each variable then has an audience, the nodes that
//! must hold it and no other: everyone for the default namespace, n0 and
//! n1 for `pair`, its writer for `loc`. Convergence and the final checks
//! compare each node with the others over what their audiences share, and
//! a variable held outside its audience fails the run.

use super::*;
use atoll_core::{data_namespace, namespaced, DEFAULT_NS};

/// The namespace mirrored over n0-n1 only.
pub(super) const PAIR: &str = "pair";
/// The namespace never mirrored.
pub(super) const LOCAL: &str = "loc";

/// The nodes that must hold variable `name` (of `n` nodes), and no other.
pub fn audience(name: &str, n: usize) -> Vec<usize> {
    match data_namespace(name) {
        None | Some(DEFAULT_NS) => (0..n).collect(),
        Some(PAIR) => vec![0, 1],
        // `loc/n{i}.NAME`: its writer's only (anything else: nobody's).
        Some(_) => writer(name).into_iter().collect(),
    }
}

/// The node that wrote a `loc` variable, from its name.
fn writer(name: &str) -> Option<usize> {
    let at = name.find("/loc/n")? + "/loc/n".len();
    let digits: String = name[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `view` less the variables both `a` and `b` need not hold.
pub fn shared(
    view: &BTreeMap<String, State>,
    a: usize,
    b: usize,
    n: usize,
) -> BTreeMap<String, State> {
    view.iter()
        .filter(|(name, _)| {
            let who = audience(name, n);
            who.contains(&a) && who.contains(&b)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Sim {
    /// At the start, with `--mirror`: n0 mirrors `pair` over n0-n1, and
    /// flushes it (what is lost to a crash before it is sent would leave
    /// `pair` local, by design, and the run's checks could not tell).
    pub(super) fn set_up_mirroring(&mut self) {
        if !self.opts.workload.mirror || self.nodes.len() < 2 {
            return;
        }
        let now = self.clock(0);
        let Some(r) = self.nodes[0].replica.as_mut() else {
            return;
        };
        let set = r
            .set_mirrored(now, PAIR, true)
            .and_then(|()| r.set_mirror_link(now, PAIR, node_id(1), true))
            .and_then(|()| r.keyspace().sync());
        if let Err(e) = set {
            self.fail(format!("n0 could not set the mirroring: {e}"));
        }
        self.trace
            .record(self.now, format_args!("n0 mirrors {PAIR} over n0-n1"));
        self.after_input(0);
    }

    /// The name a client operation at node `i` goes to: with `--mirror`,
    /// a third of them to `loc` or `pair` (but bag operations, whose
    /// elements the workload follows by name).
    pub(super) fn mirrored_name(&mut self, i: usize, var: String, op: &workload::Op) -> String {
        if !self.opts.workload.mirror || op.kind() == Kind::Bag || self.nodes.len() < 2 {
            return var;
        }
        match self.work_rng.below(6) {
            0 | 1 if i < 2 => namespaced(PAIR, &var),
            0 | 1 => namespaced(LOCAL, &format!("n{i}.{var}")),
            2 => namespaced(LOCAL, &format!("n{i}.{var}")),
            _ => var,
        }
    }

    /// Variables node `i` holds outside their audience.
    pub fn misplaced(&mut self, i: usize) -> Vec<String> {
        let n = self.nodes.len();
        self.view(i)
            .into_keys()
            .filter(|name| !audience(name, n).contains(&i))
            .collect()
    }
}
