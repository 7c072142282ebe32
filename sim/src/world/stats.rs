//! The counters of a run, for its summary and a sweep's table.

/// Counters over a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Simulated events handled.
    pub events: u64,
    /// Operations acknowledged.
    pub acked: u64,
    /// Operations that changed nothing (a take from an empty bag, ...).
    pub no_ops: u64,
    /// Operations refused because the node was down.
    pub unavailable: u64,
    /// Owner-only operations refused while the node was fenced after a restart.
    pub fenced: u64,
    /// Messages put on the wire.
    pub sent: u64,
    /// Messages delivered to a replica.
    pub delivered: u64,
    /// Messages lost (loss, cut links, closed connections).
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restores from backup.
    pub restores: u64,
    /// Link cuts.
    pub cuts: u64,
    /// Clock jumps.
    pub jumps: u64,
    /// State transfers begun.
    pub state_transfers: u64,
    /// Acknowledged operations lost in a way their durability allows.
    pub allowed_losses: u64,
    /// The longest delta log seen.
    pub max_log: u64,
    /// The most messages in flight on one link.
    pub max_in_flight: u64,
    /// Operations refused because their shared name is another type at
    /// that node.
    pub mismatched: u64,
    /// Type conflicts resolved (each conflict copy created at a node counts once).
    pub conflicts: u64,
    /// Consistency checks ended.
    pub checks: u64,
    /// Damages a check had to find (not healed by replication first).
    pub damage_found: u64,
    /// Strong operations on owned variables called (ownership changes
    /// included).
    pub strong_ops: u64,
    /// Of those, how many took effect, as their answers say.
    pub strong_effects: u64,
    /// Owned variables moved to where they were used.
    pub migrations: u64,
    /// Bag elements given by a node to another's low share.
    pub bag_given: u64,
}
