//! Node lifecycle: each node's replica started, driven after every input,
//! crashed, restarted, restored from a backup, and its clock moved.

use super::*;

impl Sim {
    pub(super) fn ks_config(&self, i: usize) -> KeyspaceConfig {
        // With mixed settings, odd nodes accept other delta sizes: each
        // learns from its peers' Hello what they accept.
        let max_delta_len = match (
            self.opts.mixed_configs && i % 2 == 1,
            self.opts.max_delta_len,
        ) {
            (false, n) => n,
            (true, 2_000) => 16 << 20,
            (true, _) => 2_000,
        };
        KeyspaceConfig {
            flush_each_write: self.opts.durability == Durability::Durable,
            max_clock_skew_ms: self.opts.max_clock_skew_ms,
            max_delta_len,
            checkpoint_every: self.opts.checkpoint_every,
            log_retain: self.opts.log_retain,
            coalesce_bytes: self.opts.coalesce_bytes,
            changes_retain: self.opts.changes_retain,
            cache_bytes: self.opts.cache_bytes,
        }
    }

    pub(super) fn replica_config(&self, i: usize) -> ReplicaConfig {
        let o = &self.opts;
        let config = ReplicaConfig {
            max_batch_bytes: o.max_batch_bytes,
            max_batch_entries: o.max_batch_entries,
            max_in_flight: o.max_in_flight,
            retransmit_ms: o.retransmit_ms,
            ship_whole_bytes: o.ship_whole_bytes,
            gossip_interval_ms: o.gossip_interval_ms,
            state_for_new_peers_after: o.state_for_new_peers_after,
            state_part_bytes: o.state_part_bytes,
            migration: o.workload.migration,
            rebalance: o.workload.rebalance,
            site: o.workload.placement.then(|| super::owned::site_of(i)),
            owned: if o.workload.placement {
                super::owned::rules()
            } else {
                Vec::new()
            },
            ..ReplicaConfig::default()
        };
        if !(o.mixed_configs && i % 2 == 1) {
            return config;
        }
        // Other settings on odd nodes (each differs from the drawn one).
        let other = |v: usize, a: usize, b: usize| if v == a { b } else { a };
        ReplicaConfig {
            max_batch_bytes: other(o.max_batch_bytes, 2_000, 200),
            max_in_flight: other(o.max_in_flight, 1, 4),
            retransmit_ms: (o.retransmit_ms * 2).min(2_000),
            ship_whole_bytes: other(o.ship_whole_bytes, 1_000, 100),
            gossip_interval_ms: if o.gossip_interval_ms == 0 { 10 } else { 0 },
            state_part_bytes: other(o.state_part_bytes, 300, 64 << 10),
            // Smaller messages than the others send by default.
            max_message_len: 256 << 10,
            ..config
        }
    }

    pub(super) fn start_node(&mut self, i: usize) {
        // A fresh incarnation, as the node draws one at random on every start.
        let incarnation = ReplicaId(self.fault_rng.next_u64() | 1 << 63);
        let backend = self.nodes[i].backend.clone();
        // The settings drawn must be ones a node would accept.
        let checked = self
            .ks_config(i)
            .validate()
            .and(self.replica_config(i).validate());
        if let Err(e) = checked {
            self.fail(format!("n{i} drew a configuration a node refuses: {e}"));
        }
        let ks = Keyspace::open(
            backend,
            self.ks_config(i),
            self.nodes[i].id,
            incarnation,
            self.local_now(i),
        );
        let ks = match ks {
            Ok(ks) => ks,
            Err(e) => {
                self.fail(format!("n{i} could not reopen its storage: {e}"));
                return;
            }
        };
        let mut r = Replica::new(ks, self.replica_config(i));
        for &p in &self.peers[i] {
            r.add_peer(node_id(p));
        }
        if let Err(e) = r.announce_site(self.clock(i)) {
            self.fail(format!("n{i} could not record its site: {e}"));
        }
        self.nodes[i].replica = Some(r);
        self.nodes[i].disk.clear();
        self.trace
            .record(self.now, format_args!("up n{i} as {}", incarnation.0));
        for p in self.peers[i].clone() {
            self.refresh_link(i, p);
        }
        self.after_input(i);
    }

    /// Moves a replica's outputs into the world after any input to it.
    pub(super) fn after_input(&mut self, i: usize) {
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        let atoll_core::Outputs {
            transmits: out,
            events,
            timeout: deadline,
        } = r.drain();
        let ks = r.keyspace_ref();
        let last = ks.last_seq();
        let first = ks
            .storage()
            .first_seq()
            .expect("in-memory storage cannot fail");
        let log_len = first.map_or(0, |f| last + 1 - f);
        // Entries may leave the log only once every peer acknowledged them, or
        // when the retention bound forces them out.
        let floor = r.peers().iter().map(|p| p.acked).min().unwrap_or(last);
        let allowed = self.nodes[i]
            .may_drop
            .max(floor)
            .max(last.saturating_sub(self.opts.log_retain));
        self.nodes[i].may_drop = allowed;
        if let Some(f) = first {
            if f > allowed + 1 {
                self.fail(format!(
                    "n{i} dropped log entries through {} before every peer acknowledged them (allowed through {allowed})",
                    f - 1
                ));
            }
        }
        let bound = self.opts.log_retain + self.opts.checkpoint_every;
        self.stats.max_log = self.stats.max_log.max(log_len);
        if log_len > bound {
            self.fail(format!(
                "n{i}'s delta log holds {log_len} entries, over its bound of {bound} (log_retain + checkpoint_every)"
            ));
        }
        let max_queue = ReplicaConfig::default().max_queued_transmits;
        if out.len() > max_queue {
            self.fail(format!(
                "n{i} queued {} messages, over its bound of {max_queue}",
                out.len()
            ));
        }
        for e in events {
            match e {
                Event::StateTransferStarted { peer, changed, .. } => {
                    self.stats.state_transfers += 1;
                    match changed {
                        Some(changed) => self.trace.record(
                            self.now,
                            format_args!(
                                "n{i} state transfer to n{}: {changed} variables changed",
                                index_of(peer)
                            ),
                        ),
                        None => self.trace.record(
                            self.now,
                            format_args!("n{i} state transfer to n{}", index_of(peer)),
                        ),
                    }
                }
                Event::StateTransferBlocked { peer, blocked } => {
                    // Every node here accepts states of any size the
                    // workload makes.
                    self.fail(format!(
                        "n{i}'s state transfer to n{} was held back: {blocked}",
                        index_of(peer)
                    ));
                }
                Event::SendFailed { peer, error } => {
                    self.fail(format!(
                        "n{i} could not read its log to send to n{}: {error}",
                        index_of(peer)
                    ));
                }
                Event::Unfenced => {
                    self.trace.record(self.now, format_args!("n{i} unfenced"));
                }
                Event::Checked(report) => self.on_checked(i, *report),
                Event::Repaired { name, from } => {
                    self.trace.record(
                        self.now,
                        format_args!("n{i} repaired {name} from n{}", index_of(from)),
                    );
                }
                // Only with `--mirror`, which sets up mirroring.
                Event::MirrorGained { peer, namespaces } if self.opts.workload.mirror => {
                    self.trace.record(
                        self.now,
                        format_args!("n{i} shares {namespaces:?} with n{}", index_of(peer)),
                    );
                }
                Event::MirrorRefused {
                    peer,
                    namespace,
                    variables,
                    ..
                } if self.opts.workload.mirror => {
                    self.trace.record(
                        self.now,
                        format_args!(
                            "n{i} refused {variables} of {namespace} from n{}",
                            index_of(peer)
                        ),
                    );
                }
                Event::MirrorGained { peer, .. } | Event::MirrorRefused { peer, .. } => {
                    self.fail(format!(
                        "n{i} changed mirroring with n{}, which only --mirror configures",
                        index_of(peer)
                    ));
                }
                // The merge error that begins it fails the run (`deliver`).
                Event::PeerStuck { .. } => {}
                // Checked where the last ack arrives (`deliver`).
                Event::StateTransferFinished { .. } => {}
                Event::Conflict(c) => {
                    self.stats.conflicts += 1;
                    self.trace.record(
                        self.now,
                        format_args!("n{i} conflict {} kept {} moved {}", c.name, c.kept, c.moved),
                    );
                }
                Event::Rebalanced {
                    name,
                    moves,
                    delta,
                    ts,
                    ..
                } => self.record_given(i, name, moves, &delta, ts),
                Event::Applied(a) => {
                    self.trace.record(
                        self.now,
                        format_args!("n{i} merged {} seq {}", a.name, a.seq),
                    );
                }
                Event::OwnerChanged {
                    name,
                    record,
                    conflict,
                } => {
                    self.trace
                        .record(self.now, format_args!("n{i} owner {name} {record:?}"));
                    // Nothing here overrides an owner.
                    if conflict {
                        self.fail(format!(
                            "n{i}: two owners of {name} in one epoch: {record:?}"
                        ));
                    }
                }
                Event::Answered { id, result, .. } => self.strong_answered(i, id, result),
                Event::Migrating { name, to, .. } => {
                    self.stats.migrations += 1;
                    self.trace.record(
                        self.now,
                        format_args!("n{i} migrates {name} to n{}", index_of(to)),
                    );
                }
            }
        }
        for t in out {
            self.transmit(i, index_of(t.to), t.payload);
        }
        // The replica's deadline is on its monotonic clock: the simulation's.
        let at = deadline.map(|d| d.max(self.now));
        if at != self.nodes[i].timer {
            self.nodes[i].timer = at;
            if let Some(at) = at {
                self.order += 1;
                self.queue.insert((at, self.order), Ev::Timer(i));
            }
        }
    }

    /// Crashes node `i`: it stops, and its storage loses whatever was not flushed
    /// (some of the newest unflushed batches may survive).
    pub fn crash(&mut self, i: usize) {
        if !self.is_up(i) {
            return;
        }
        let before = self.view(i);
        self.nodes[i].replica = None;
        self.strong_crashed(i);
        self.stats.crashes += 1;
        let backend = self.nodes[i].backend.clone();
        let keep = self.fault_rng.range(0, backend.unflushed() as u64) as usize;
        backend.crash(keep);
        self.trace.record(
            self.now,
            format_args!("crash n{i} keeping {keep} unflushed"),
        );
        self.marks.push((self.now, Mark::Crash(i)));
        self.nodes[i].timer = None;
        // What its storage holds now: open a copy, so the real one is untouched.
        let copy = Keyspace::open(
            backend.snapshot(),
            self.ks_config(i),
            self.nodes[i].id,
            ReplicaId(0),
            self.local_now(i),
        );
        self.nodes[i].disk = match copy {
            Ok(mut ks) => read_all(&mut ks),
            Err(e) => {
                self.fail(format!(
                    "n{i}'s storage cannot be opened after a crash: {e}"
                ));
                BTreeMap::new()
            }
        };
        for p in self.peers[i].clone() {
            self.refresh_link(i, p);
        }
        self.mark_losses(i, &before, false);
    }

    /// Restarts node `i` from its storage, if it is down.
    pub fn restart(&mut self, i: usize) {
        if self.is_up(i) {
            return;
        }
        self.marks.push((self.now, Mark::Up(i, None)));
        self.start_node(i);
    }

    /// Crashes node `i` (if up) and brings it back from backup number `which`
    /// (the oldest if `None`; nothing happens if it has no backup).
    pub fn restore(&mut self, i: usize, which: Option<usize>) {
        if self.nodes[i].backups.is_empty() {
            return;
        }
        self.crash(i);
        let before = self.view(i);
        let k = which.unwrap_or(0).min(self.nodes[i].backups.len() - 1);
        let (taken, backup) = &self.nodes[i].backups[k];
        let taken = *taken;
        self.nodes[i].backend = backup.snapshot();
        self.stats.restores += 1;
        self.trace.record(
            self.now,
            format_args!("restore n{i} from backup of {taken}"),
        );
        self.marks.push((self.now, Mark::Up(i, Some(taken))));
        self.start_node(i);
        self.mark_losses(i, &before, true);
    }

    pub(super) fn backup(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.is_up(i) {
                continue;
            }
            let snap = self.nodes[i].backend.snapshot();
            let b = &mut self.nodes[i].backups;
            // Keep the first backup (the oldest) and the four newest.
            if b.len() >= 5 {
                b.remove(1);
            }
            b.push((self.now, snap));
        }
        self.trace.record(self.now, format_args!("backup"));
    }

    /// Moves node `i`'s clock by `by` ms, within the configured skew bound.
    pub fn jump_clock(&mut self, i: usize, by: i64) {
        let bound = (self.opts.max_clock_skew_ms / 4) as i64;
        let before = self.nodes[i].offset;
        self.nodes[i].offset = (before + by).clamp(-bound, bound);
        let moved = self.nodes[i].offset - before;
        self.stats.jumps += 1;
        self.trace
            .record(self.now, format_args!("clock n{i} {moved:+}ms"));
        self.marks.push((self.now, Mark::Jump(i, moved)));
        // Its timers run on the monotonic clock, which did not move: its
        // keyspace sees the new wall time at its next input.
    }
}
