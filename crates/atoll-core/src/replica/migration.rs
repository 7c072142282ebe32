//! Migration by use: an owner counts the operations it runs on each owned
//! variable, by the node that asked, over a sliding window. When another
//! node asked for most of them, the owner hands the variable to that node
//! (`handoff`), so that its strong operations run there without a round
//! trip. A cooldown after each move keeps a variable from going back and
//! forth between two equally busy nodes; so does the share, which two
//! such nodes never reach.

use super::*;

/// The most operations remembered per variable: the window is the last
/// this many, if they came faster than it.
const MAX_SEEN: usize = 1024;

/// The operations run on one owned variable, by requester.
#[derive(Default)]
pub(super) struct Usage {
    /// When each was run (monotonic ms) and for which node, oldest first.
    seen: VecDeque<(u64, ReplicaId)>,
    /// When the variable last moved away from here, or arrived.
    settled_at: Option<u64>,
}

/// When to move a variable to where it is used (see the module's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The least number of operations in the window before a move is
    /// considered (0: never move by use).
    pub min_ops: u32,
    /// The share of them, in percent, one other node must have asked for.
    pub share_pct: u8,
    /// The window (ms).
    pub window_ms: u64,
    /// The least time between two moves of one variable, and from a
    /// variable's arrival to its first move (ms).
    pub cooldown_ms: u64,
}

impl Default for Migration {
    fn default() -> Migration {
        Migration {
            min_ops: 32,
            share_pct: 75,
            window_ms: 10_000,
            cooldown_ms: 30_000,
        }
    }
}

impl<B: Backend> Replica<B> {
    /// Counts an operation run here, as the owner of `name`, for node `by`;
    /// hands the variable to `by` if it now asked for most of them.
    pub(super) fn note_use(&mut self, name: &str, by: ReplicaId, now: u64) {
        let m = self.config.migration;
        if m.min_ops == 0 {
            return;
        }
        let usage = self.owners.usage.entry(name.to_string()).or_default();
        usage.settled_at.get_or_insert(now);
        usage.seen.push_back((now, by));
        let since = now.saturating_sub(m.window_ms);
        while usage.seen.front().is_some_and(|(at, _)| *at < since) || usage.seen.len() > MAX_SEEN {
            usage.seen.pop_front();
        }
        let cooled = usage
            .settled_at
            .is_none_or(|at| now >= at.saturating_add(m.cooldown_ms));
        let total = usage.seen.len();
        if !cooled || total < m.min_ops as usize {
            return;
        }
        let mut counts: BTreeMap<ReplicaId, usize> = BTreeMap::new();
        for (_, node) in &usage.seen {
            *counts.entry(*node).or_default() += 1;
        }
        let Some((&top, &n)) = counts.iter().max_by_key(|(id, n)| (**n, **id)) else {
            return;
        };
        if top == self.id() || n * 100 < total * usize::from(m.share_pct) {
            return;
        }
        if !self.peers.get(&top).is_some_and(|p| p.connected) {
            return;
        }
        // Placement wins over use.
        if self.check_placement(name, top).is_err() {
            return;
        }
        let record = match self.ownership(name) {
            Ok(r) => r,
            Err(_) => return,
        };
        if record.handoff().is_some() || record.owner() != Some(self.id()) {
            return;
        }
        let why = format!(
            "{n} of the last {total} operations within {} ms came from node {top}",
            m.window_ms
        );
        if self.hand_off(name, top).is_ok() {
            self.owners.migrations += 1;
            self.owners.usage.remove(name);
            self.events.push_back(Event::Migrating {
                name: name.to_string(),
                to: top,
                why,
            });
        }
    }

    /// The variable `name` arrived here (this node accepted it): its first
    /// move waits for the cooldown.
    pub(super) fn note_arrival(&mut self, name: &str, now: u64) {
        if self.config.migration.min_ops == 0 {
            return;
        }
        let usage = self.owners.usage.entry(name.to_string()).or_default();
        usage.seen.clear();
        usage.settled_at = Some(now);
    }

    /// How many variables this node moved by use since it opened.
    pub fn migrations(&self) -> u64 {
        self.owners.migrations
    }
}
