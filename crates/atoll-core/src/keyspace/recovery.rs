//! Loading and recovery: a variable's state is its checkpointed state joined
//! with every logged delta after the checkpoint; opening replays the log.

use super::*;
use std::ops::Bound;

impl<B: Backend> Keyspace<B> {
    /// Loads a variable into the cache; `None` if it does not exist.
    pub(super) fn load(&mut self, name: &str) -> Result<Option<&mut Var>> {
        if let Some(var) = self.vars.get_mut(name) {
            var.used = true;
        } else {
            let Some(meta) = self.storage.meta(name)? else {
                return Ok(None);
            };
            // A variable created since the last checkpoint has no stored state
            // yet: it starts at bottom, and recovery replays its logged deltas.
            let stored = self.storage.state(name)?;
            let bytes = resident_size(name, stored.as_ref().map_or(0, Vec::len));
            let state: State = match stored {
                Some(bytes) => {
                    codec::decode(&bytes, atoll_store::MAX_RECORD_LEN).map_err(|source| {
                        atoll_store::StoreError::Corrupt {
                            key: format!("state of {name}"),
                            source,
                        }
                    })?
                }
                None => State::new(meta.kind),
            };
            if state.kind() != meta.kind {
                return Err(atoll_store::StoreError::Corrupt {
                    key: format!("state of {name}"),
                    source: codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                        "state kind differs from the variable's metadata",
                    )),
                }
                .into());
            }
            // Writes after a restart must order after the writes they replace,
            // even if the wall clock has not moved past them.
            if let Some(ts) = state.max_timestamp() {
                self.clock.witness(ts);
            }
            self.versions = self.versions.wrapping_add(1);
            let version = self.versions;
            self.vars.insert(
                name.to_string(),
                Var {
                    meta,
                    state,
                    version,
                    indexed: Vec::new(),
                    bytes,
                    used: true,
                },
            );
            self.resident_bytes += bytes;
        }
        Ok(self.vars.get_mut(name))
    }

    /// Joins a logged delta into its variable during recovery.
    pub(super) fn replay(&mut self, seq: u64, entry: &LogEntry) -> Result<()> {
        let corrupt = |source| atoll_store::StoreError::Corrupt {
            key: format!("log entry {seq}"),
            source,
        };
        let delta = entry.decode_delta(seq)?;
        let no_meta = || {
            corrupt(codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                "log entry for a variable with no metadata",
            )))
        };
        let held = self.load(&entry.name)?.ok_or_else(no_meta)?.meta.kind;
        // An entry written before its name went to another kind in a type
        // conflict belongs to the conflict copy (see `merge_state`).
        let name = if held == entry.kind {
            entry.name.clone()
        } else {
            let copy = conflict_name(&entry.name, entry.kind);
            self.load(&copy)?.ok_or_else(no_meta)?;
            copy
        };
        self.versions = self.versions.wrapping_add(1);
        let version = self.versions;
        let Some(var) = self.vars.get_mut(&name) else {
            return Err(no_meta().into());
        };
        var.version = version;
        var.state.join(delta).map_err(|_| {
            corrupt(codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                "log entry kind differs from its variable",
            )))
        })?;
        if let Some(ts) = var.state.max_timestamp() {
            self.clock.witness(ts);
        }
        self.note_dirty(&name, entry.origin);
        Ok(())
    }

    /// Rebuilds the state of every variable from the checkpoint and the log after it.
    pub(super) fn recover(&mut self) -> Result<usize> {
        let mut after = self.storage.checkpoint_seq();
        let mut replayed = 0;
        loop {
            let batch = self.storage.log_after(after, 1024)?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(replayed);
            };
            for (seq, entry) in &batch {
                self.replay(*seq, entry)?;
            }
            replayed += batch.len();
            after = last;
        }
    }

    /// Drops the cached state of `name` and rebuilds it from storage: after a
    /// failed write, the cache must not keep what storage does not hold.
    pub(super) fn reload(&mut self, name: &str) {
        self.forget(name);
        let rebuilt = (|| -> Result<()> {
            let mut after = self.storage.checkpoint_seq();
            loop {
                let batch = self.storage.log_after(after, 1024)?;
                let Some(&(last, _)) = batch.last() else {
                    return Ok(());
                };
                // Its own entries, and for a conflict copy those of the name
                // it copies, of its kind.
                let copy_of = conflict_of(name);
                let mine =
                    |e: &LogEntry| e.name == name || copy_of == Some((e.name.as_str(), e.kind));
                for (seq, entry) in batch.iter().filter(|(_, e)| mine(e)) {
                    self.replay(*seq, entry)?;
                }
                after = last;
            }
        })();
        if let Err(e) = rebuilt {
            self.failed = Some(format!(
                "could not reload {name:?} after a failed write: {e}"
            ));
        }
    }

    /// Drops `name` from memory (its state is on disk, or was never
    /// written).
    pub(super) fn forget(&mut self, name: &str) {
        if let Some(var) = self.vars.remove(name) {
            self.resident_bytes = self.resident_bytes.saturating_sub(var.bytes);
        }
    }

    /// Drops variables from memory while their encoded size is over
    /// [`KeyspaceConfig::cache_bytes`]: a clock sweep in name order, which
    /// spares once each variable used since it last passed, and never
    /// drops one changed since the last checkpoint (its state is not on
    /// disk yet). Called where an operation begins, when no variable is
    /// borrowed.
    pub(super) fn evict_over_budget(&mut self) {
        let Some(budget) = self.config.cache_bytes else {
            return;
        };
        // A variable changed since the last checkpoint is always resident:
        // when every resident one is, there is nothing to drop (a node
        // catching up merges into a new variable at every step).
        if self.resident_bytes <= budget || self.vars.len() <= self.dirty.len() {
            return;
        }
        let mut over = self.resident_bytes - budget;
        let hand = std::mem::take(&mut self.hand);
        let mut victims: Vec<String> = Vec::new();
        // Round the clock from the hand, twice at most: the first round may
        // only clear the marks. (Until over budget no more, so that the
        // hand stops at the last variable dropped.)
        'sweep: for _ in 0..2 {
            let rounds = [
                (Bound::Excluded(hand.as_str()), Bound::Unbounded),
                (Bound::Unbounded, Bound::Included(hand.as_str())),
            ];
            for range in rounds {
                for (name, var) in self.vars.range_mut::<str, _>(range) {
                    if self.dirty.contains_key(name) {
                        continue;
                    }
                    if var.used {
                        var.used = false;
                        continue;
                    }
                    victims.push(name.clone());
                    // So that a second round passes it by.
                    var.used = true;
                    over = over.saturating_sub(var.bytes);
                    if over == 0 {
                        break 'sweep;
                    }
                }
            }
        }
        // Where it stopped: at the last variable dropped, or (two whole
        // rounds) where it began.
        self.hand = victims.last().cloned().unwrap_or(hand);
        for name in victims {
            self.forget(&name);
        }
    }
}

/// What a variable in memory counts against [`KeyspaceConfig::cache_bytes`]:
/// its state's encoded size, and what keeping it costs besides (its entry
/// in the map of variables, its name twice, a share of the map's node).
/// Without the second part, a million small counters (20 bytes encoded,
/// several hundred in memory) all fitted a 16 MiB budget.
pub(super) fn resident_size(name: &str, encoded: usize) -> usize {
    const MAP_ENTRY: usize = std::mem::size_of::<Var>() + std::mem::size_of::<String>() + 64;
    encoded + MAP_ENTRY + 2 * name.len()
}
