//! The clients: operations at random nodes, and what each node holds.

use super::*;

impl Sim {
    pub(super) fn client_op(&mut self) {
        let ids: Vec<ReplicaId> = (0..self.nodes.len()).map(node_id).collect();
        let i = self.work_rng.index(self.nodes.len());
        let (var, op) = workload::next_op(&mut self.work_rng, &self.opts.workload, &ids);
        let var = self.mirrored_name(i, var, &op);
        let now = self.clock(i);
        let Some(r) = self.nodes[i].replica.as_mut() else {
            self.stats.unavailable += 1;
            return;
        };
        if op.owner_only() && r.fenced() {
            self.stats.fenced += 1;
            self.trace
                .record(self.now, format_args!("n{i} fenced {var} {op:?}"));
            return;
        }
        let actor = r.keyspace_ref().incarnation();
        let owned = match op {
            workload::Op::BagTransfer { .. } => {
                let node = r.keyspace_ref().replica_id();
                r.keyspace()
                    .read(&var, Kind::Bag, |s| {
                        Ok::<_, atoll_core::Error>(workload::owned_by(s, node))
                    })
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let store_op = op.to_store(&owned);
        let res = r.write(now, &var, store_op.clone()).map(|out| {
            let outcome = workload::Op::outcome(&store_op, &out.answer);
            (out.delta.map(|d| (d, outcome, out.ts)), out.applied)
        });
        match res {
            Ok((Some((delta, outcome, ts)), applied)) => {
                debug_assert!(applied.is_some());
                self.stats.acked += 1;
                let id = self.history.len() as u64;
                let rec = Record {
                    id,
                    at: self.now,
                    node: i,
                    actor,
                    ts,
                    var,
                    op,
                    outcome,
                    delta,
                    lost: None,
                };
                self.trace.record(self.now, format_args!("ack {rec}"));
                self.history.push(rec);
                self.after_input(i);
            }
            Ok((None, _)) => {
                self.stats.no_ops += 1;
            }
            // A shared name that is another type here: refused, as the
            // store's handles refuse it.
            Err(atoll_core::Error::TypeMismatch { .. }) if workload::shared_name(&var) => {
                self.stats.mismatched += 1;
                self.trace
                    .record(self.now, format_args!("n{i} mismatched {var} {op:?}"));
            }
            Err(e) => self.fail(format!("n{i}: {var} {op:?} failed: {e}")),
        }
    }

    /// Node `i` gave elements of its share of bag `var` to low shares: a
    /// write made by the replica, acknowledged like a client's (one record
    /// per element, each with the write's whole delta).
    pub(super) fn record_given(
        &mut self,
        i: usize,
        var: String,
        moves: Vec<(atoll_crdt::ElementId, ReplicaId)>,
        delta: &State,
        ts: atoll_crdt::Timestamp,
    ) {
        let Some(r) = self.nodes[i].replica.as_ref() else {
            return;
        };
        let actor = r.keyspace_ref().incarnation();
        self.stats.bag_given += moves.len() as u64;
        for (id, to) in moves {
            let rec = Record {
                id: self.history.len() as u64,
                at: self.now,
                node: i,
                actor,
                ts,
                var: var.clone(),
                op: workload::Op::BagGive { to },
                outcome: workload::Outcome::Element(id),
                delta: delta.clone(),
                lost: None,
            };
            self.trace.record(self.now, format_args!("ack {rec}"));
            self.history.push(rec);
        }
    }

    /// The state of every variable at node `i` (its storage's, if it is down).
    pub fn view(&mut self, i: usize) -> BTreeMap<String, State> {
        match self.nodes[i].replica.as_mut() {
            Some(r) => read_all(r.keyspace()),
            None => self.nodes[i].disk.clone(),
        }
    }

    pub(super) fn state_of(&mut self, i: usize, var: &str) -> Option<State> {
        match self.nodes[i].replica.as_mut() {
            Some(r) => r
                .keyspace()
                .state(var)
                .expect("in-memory storage cannot fail")
                .cloned(),
            None => self.nodes[i].disk.get(var).cloned(),
        }
    }
}
