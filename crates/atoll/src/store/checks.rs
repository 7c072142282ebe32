//! Consistency checks as the store offers them: a caller waits for the
//! report of a check its node runs (`Replica::check`), and the last
//! report and the repairs are kept for `/metrics` (docs/consistency.md).

use super::{blocking, clock, Store};
use crate::Result;
use atoll_core::{CheckReport, CheckResult};
use atoll_crdt::ReplicaId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::mpsc::SyncSender;

/// The checks of a store: callers waiting, and what the last one found.
#[derive(Default)]
pub(crate) struct Checks {
    waiting: HashMap<u64, SyncSender<CheckReport>>,
    /// The last report.
    pub(crate) last: Option<CheckReport>,
    /// Checks ended since the store opened.
    pub(crate) runs: u64,
    /// Variables joined with a peer's state by a repair.
    pub(crate) repaired: u64,
    /// Where reports go, and which.
    export: Option<(crate::CheckExporter, crate::CheckReporting)>,
}

impl Store {
    fn checks(&self) -> std::sync::MutexGuard<'_, Checks> {
        self.inner.checks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that every reachable peer holds the same data as this node,
    /// and repairs the variables that diverge (docs/consistency.md). Needs
    /// a running node ([`crate::Node::check`] calls it).
    pub fn check_consistency(&self) -> Result<CheckReport> {
        if self.is_standalone() {
            return Err(crate::Error::InvalidInput {
                what: "a consistency check asks the node's peers: run it on a running node".into(),
            });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = {
            let mut r = self.replica();
            let id = r.check(clock())?;
            // Registered under the lock: the driver reads the report under
            // it, so it cannot come first.
            self.checks().waiting.insert(id, tx);
            r.config().request_timeout_ms
        };
        self.wake();
        let wait = std::time::Duration::from_millis(timeout.saturating_add(2_000));
        blocking(|| rx.recv_timeout(wait)).map_err(|_| crate::Error::InvalidInput {
            what: "the check did not end: the node stopped".into(),
        })
    }

    /// Where the reports of the checks this node runs go, and which
    /// (the node sets it from its configuration).
    pub(crate) fn set_check_export(&self, to: crate::CheckExporter, which: crate::CheckReporting) {
        self.checks().export = Some((to, which));
    }

    /// A check ended (the node's driver calls this, with the node's status
    /// for the addresses of the nodes, when it exports reports).
    pub(crate) fn checked(&self, report: CheckReport, status: impl FnOnce() -> crate::NodeStatus) {
        let export = self.checks().export.clone();
        if let Some((to, which)) = export {
            self.export_report(&report, &to, which, &status());
        }
        let mut c = self.checks();
        c.runs += 1;
        for n in &report.nodes {
            if n.result == CheckResult::Divergent {
                tracing::warn!(node = %n.node, differing = n.differing, repaired = n.repaired, "check: divergent");
            }
        }
        if let Some(tx) = c.waiting.remove(&report.id) {
            let _ = tx.try_send(report.clone());
        }
        c.last = Some(report);
    }

    /// A variable was joined with a peer's state by a repair.
    pub(crate) fn repaired(&self, name: &str, from: ReplicaId) {
        self.checks().repaired += 1;
        tracing::warn!(%name, %from, "check: a divergent variable was joined with the peer's state");
    }

    /// The last check's report, and how many checks and repairs there were.
    pub fn last_check(&self) -> (Option<CheckReport>, u64, u64) {
        let c = self.checks();
        (c.last.clone(), c.runs, c.repaired)
    }
}

impl Store {
    /// Exports `report` as the node's configuration says.
    fn export_report(
        &self,
        report: &CheckReport,
        to: &crate::CheckExporter,
        which: crate::CheckReporting,
        status: &crate::NodeStatus,
    ) {
        let all_ok = report.nodes.iter().all(|n| n.result == CheckResult::Ok);
        if which == crate::CheckReporting::OnConflict && all_ok {
            return;
        }
        let line = self.check_json(report, status).to_string();
        write_report(&line, to);
    }

    /// A check's report as JSON (docs/consistency.md), with the type
    /// conflicts this node knows the cluster resolved, and each node's
    /// address as this node's status `s` knows it.
    pub(crate) fn check_json(&self, r: &CheckReport, s: &crate::NodeStatus) -> Value {
        let mut v = check_json(r);
        if let Some(nodes) = v["nodes"].as_array_mut() {
            for n in nodes {
                let addr = match n["self"].as_bool() {
                    Some(true) => Some(s.listen.to_string()),
                    _ => s
                        .peers
                        .iter()
                        .find(|(p, _)| Some(p.id.to_string().as_str()) == n["node"].as_str())
                        .and_then(|(_, a)| a.map(|a| a.to_string())),
                };
                n["address"] = json!(addr);
            }
        }
        let conflicts: Vec<Value> = self
            .conflicts()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, kept, moved, copy)| {
                json!({"name": name, "kept": kept.name(), "moved": moved.name(), "copy": copy})
            })
            .collect();
        v["conflicts"] = json!(conflicts);
        v
    }
}

/// Writes a report's line where `to` says.
fn write_report(line: &str, to: &crate::CheckExporter) {
    match to {
        crate::CheckExporter::Log => {
            tracing::info!(target: "atoll::check", report = %line, "consistency check");
        }
        crate::CheckExporter::File(path) => {
            use std::io::Write;
            // Opened for each report: a file moved away by rotation is
            // followed by a new one at the path.
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "could not write the check report: {e}");
            }
        }
    }
}

/// A digest as reports show it: 32 hex digits.
fn hex(d: u128) -> String {
    format!("{d:032x}")
}

/// A check's report as JSON, without the conflicts.
fn check_json(r: &CheckReport) -> Value {
    let mut nodes = vec![json!({
        "node": r.node.to_string(),
        "self": true,
        "result": "ok",
        "checksum": hex(r.root),
        "variables": r.variables,
    })];
    for n in &r.nodes {
        nodes.push(json!({
            "node": n.node.to_string(),
            "result": n.result.name(),
            "checksum": n.root.map(hex),
            "variables": n.variables,
            "differing": n.differing,
            "repaired": n.repaired,
            "duration_ms": n.answered_ms,
        }));
    }
    let differing: Vec<Value> = r
        .differing
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "node": d.node.to_string(),
                "here": d.here.map(hex),
                "there": d.there.map(hex),
            })
        })
        .collect();
    json!({
        "check": r.id,
        "started_ms": r.started_ms,
        "duration_ms": r.duration_ms,
        "nodes": nodes,
        "differing": differing,
        "differing_count": r.differing_count,
    })
}
