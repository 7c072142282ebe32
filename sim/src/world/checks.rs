//! Consistency checks in the simulator. In runs that draw them, a node
//! that is up starts a check every few seconds, under every fault: a check
//! may find peers `in_flight` or `unreachable`, never `divergent` (nothing
//! damages a store in a random run: a divergent report is a false alarm).
//! After the final invariants, a check from n0 must find every node `ok`;
//! then one counter is damaged in n1's storage while it is down (its
//! largest increment lost, in a state that still decodes), and a check
//! must find exactly that variable divergent, and after its repair every
//! node `ok` again. (Unless replication brought the lost increment back
//! first, as it often does for a node that restarts: the run counts the
//! damages left to find, `Stats::damage_found`.)

use super::*;
use atoll_core::{CheckReport, CheckResult};
use atoll_store::{Backend, BatchOp};

impl Sim {
    /// A check from a node that is up, drawn from the checks' own stream.
    pub(super) fn start_check(&mut self) -> Option<(usize, u64)> {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect();
        if up.is_empty() {
            return None;
        }
        let i = up[self.check_rng.index(up.len())];
        self.check_from(i)
    }

    fn check_from(&mut self, i: usize) -> Option<(usize, u64)> {
        let now = self.clock(i);
        let r = self.nodes[i].replica.as_mut()?;
        let started = r.check(now);
        self.after_input(i);
        match started {
            Ok(id) => {
                self.trace
                    .record(self.now, format_args!("check #{id} from n{i}"));
                Some((i, id))
            }
            Err(e) => {
                self.fail(format!("n{i} could not start a check: {e}"));
                None
            }
        }
    }

    /// A check's report, from node `i`.
    pub(super) fn on_checked(&mut self, i: usize, report: CheckReport) {
        self.stats.checks += 1;
        let results: Vec<String> = report
            .nodes
            .iter()
            .map(|n| format!("n{} {}", index_of(n.node), n.result.name()))
            .collect();
        self.trace.record(
            self.now,
            format_args!("n{i} check #{} {}", report.id, results.join(", ")),
        );
        for n in &report.nodes {
            if n.result != CheckResult::Divergent {
                continue;
            }
            let names: Vec<&str> = report
                .differing
                .iter()
                .filter(|d| d.node == n.node)
                .map(|d| d.name.as_str())
                .collect();
            let damaged = self.damaged.as_deref();
            if names.iter().any(|name| Some(*name) != damaged) || damaged.is_none() {
                self.fail(format!(
                    "check #{} at n{i} found n{} divergent on {names:?}, which nothing damaged",
                    report.id,
                    index_of(n.node)
                ));
            }
        }
        self.reports.push((i, report));
    }

    /// Runs a check from node `i` to its end.
    fn check_to_end(&mut self, i: usize) -> Result<CheckReport, String> {
        let (_, id) = self.check_from(i).ok_or(format!("n{i} is down"))?;
        let seen = self.reports.len();
        let end = self.now + 30_000;
        while self.now < end {
            let step = self.now + 50;
            self.run_until(step);
            if let Some((_, r)) = self.reports[seen..]
                .iter()
                .find(|(n, r)| *n == i && r.id == id)
            {
                return Ok(r.clone());
            }
        }
        Err(format!("check #{id} from n{i} never ended"))
    }

    /// After the final invariants (see the module's doc).
    pub fn checks_at_end(&mut self) -> Vec<String> {
        if self.opts.workload.check_every_ms == 0 || self.converged_at.is_none() {
            return Vec::new();
        }
        // Deliveries and timers run again, from where the run stopped (the
        // liveness phase moved the clock to its end); nothing else is drawn.
        if let Some(at) = self.converged_at {
            self.now = at;
        }
        self.phase = Phase::Liveness;
        let mut bad = Vec::new();
        let all_ok = |r: &CheckReport| r.nodes.iter().all(|n| n.result == CheckResult::Ok);
        // The cluster lives on after it converged (escrow rounds, owners
        // asked for): a change may be in flight; it settles within seconds.
        let mut last = None;
        for _ in 0..5 {
            match self.check_to_end(0) {
                Ok(r) if all_ok(&r) => {
                    last = None;
                    break;
                }
                Ok(r) => last = Some(format!("{:?}", r.nodes)),
                Err(e) => last = Some(e),
            }
            self.run_until(self.now + 3_000);
        }
        if let Some(why) = last {
            bad.push(format!(
                "the checks after convergence are not ok everywhere: {why}"
            ));
        }
        // Damage: a counter of n1's, in its storage while it is down.
        let k = 1;
        let view = self.view(k);
        let Some((name, State::Counter(c))) = view.iter().find(|(n, s)| {
            // One its peers hold too (not of a namespace only it holds).
            matches!(s, State::Counter(_))
                && !atoll_core::is_reserved(n)
                && atoll_core::data_namespace(n) == Some(atoll_core::DEFAULT_NS)
        }) else {
            self.phase = Phase::Done;
            return bad;
        };
        // Lost data, as a damaged disk loses it: the counter without its
        // largest increment (a state that spreads nothing when joined).
        let largest = c.increments().totals().max_by_key(|&(_, n)| n);
        let Some((dropped, _)) = largest else {
            self.phase = Phase::Done;
            return bad;
        };
        let mut damaged = atoll_crdt::PNCounter::new();
        let mut rebuilt = Ok(());
        for (r, n) in c.increments().totals().filter(|(r, _)| *r != dropped) {
            rebuilt = rebuilt.and(damaged.add(r, n as i64).map(drop));
        }
        for (r, n) in c.decrements().totals() {
            rebuilt = rebuilt.and(damaged.add(r, -(n as i64)).map(drop));
        }
        if let Err(e) = rebuilt {
            bad.push(format!("damage: {e}"));
            return bad;
        }
        let name = name.clone();
        self.crash(k);
        let bytes = atoll_crdt::codec::encode(&State::Counter(damaged));
        let mut disk = self.nodes[k].backend.clone();
        let put = disk
            .apply(vec![BatchOp::Put(
                [b"s".as_slice(), name.as_bytes()].concat(),
                bytes,
            )])
            .and_then(|()| disk.flush());
        if let Err(e) = put {
            bad.push(format!("damage: {e}"));
            return bad;
        }
        self.damaged = Some(name.clone());
        self.trace
            .record(self.now, format_args!("damage n{k} {name}"));
        self.restart(k);
        // A write there after the restart: its peers then hold an interval
        // of its log again, as a check needs to tell lag from damage.
        let now = self.clock(k);
        if let Some(r) = self.nodes[k].replica.as_mut() {
            let _ = r.write(now, "z-after-restart", atoll_core::Op::CounterAdd { by: 1 });
        }
        self.after_input(k);
        self.run_until(self.now + 10_000);
        // Replication may have brought the lost increment back already (a
        // restarted node is sent what it lacks): then there is nothing to
        // find.
        if self.state_of(k, &name) == self.state_of(0, &name) {
            self.trace.record(
                self.now,
                format_args!("damage of {name} healed by replication"),
            );
            self.phase = Phase::Done;
            return bad;
        }
        self.stats.damage_found += 1;
        // Found exactly, once what is in flight (the node catching up after
        // its restart) settled.
        let mut last = String::new();
        let mut found = false;
        for _ in 0..5 {
            let r = match self.check_to_end(0) {
                Ok(r) => r,
                Err(e) => {
                    last = e;
                    break;
                }
            };
            let listed: Vec<&str> = r.differing.iter().map(|d| d.name.as_str()).collect();
            let at_k = r
                .nodes
                .iter()
                .find(|n| n.node == node_id(k))
                .map(|n| n.result);
            // Healed by replication while the check ran: fine.
            let healed =
                at_k == Some(CheckResult::Ok) && self.state_of(k, &name) == self.state_of(0, &name);
            if healed || (at_k == Some(CheckResult::Divergent) && listed == [name.as_str()]) {
                found = true;
                break;
            }
            last = format!("{at_k:?} and {listed:?}");
            if at_k != Some(CheckResult::InFlight) {
                break;
            }
            self.run_until(self.now + 3_000);
        }
        if !found {
            bad.push(format!(
                "the check after damaging {name} at n{k} found {last}"
            ));
        }
        self.run_until(self.now + 10_000);
        for from in [0, k] {
            match self.check_to_end(from) {
                Ok(r) if all_ok(&r) => {}
                Ok(r) => bad.push(format!(
                    "after the repair of {name}, a check from n{from} is not ok everywhere: {:?}",
                    r.nodes
                )),
                Err(e) => bad.push(e),
            }
        }
        self.phase = Phase::Done;
        bad
    }
}
