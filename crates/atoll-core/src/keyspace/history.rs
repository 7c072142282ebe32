//! The openings' history and what peers hold: where a peer that names an
//! incarnation and a sequence may resume, and what this replica holds of
//! each peer's log.

use super::*;

/// The most incarnations remembered: a peer that last heard from an older
/// one is sent everything again.
pub(super) const MAX_INCARNATIONS: usize = 64;

impl<B: Backend> Keyspace<B> {
    /// The sequence number from which the log holds every change (some
    /// joined into later entries of their variable), if it holds any.
    pub fn log_from(&self) -> Result<Option<u64>> {
        Ok(self.storage.first_seq()?)
    }

    /// Whether `origin` is one of this store's openings (of those
    /// remembered): a change from it was written here.
    pub fn is_own(&self, origin: ReplicaId) -> bool {
        self.history.iter().any(|o| o.incarnation == origin)
    }

    /// Whether this store was opened before this opening (a restart, or a
    /// copy or backup of a store that ran): whatever that opening kept only
    /// in memory is gone.
    pub(crate) fn opened_before(&self) -> bool {
        self.history.len() > 1
    }

    /// Where to resume sending to a peer that holds this replica's log
    /// through `seq` as incarnation `incarnation` of it numbered it: `seq` if
    /// that is this opening; for an earlier opening, no later than where the
    /// log was settled when the next one opened (this store may be a copy
    /// taken before `seq`, or before a join that incarnation did); 0 if that
    /// incarnation is not in this store's history (a copy older than it, or
    /// forgotten).
    pub fn resume_point(&self, incarnation: ReplicaId, seq: u64) -> u64 {
        let Some(i) = self
            .history
            .iter()
            .position(|o| o.incarnation == incarnation)
        else {
            return 0;
        };
        let Some(next) = self.history.get(i + 1) else {
            // This opening's own numbering, as the peer saw it. Joining runs
            // moves content only to later entries, so what the peer lacks is
            // after `seq` here too.
            return seq.min(self.storage.last_seq());
        };
        // An earlier opening. Only through where the log was settled when
        // the next one opened is this copy numbered as the earlier opening
        // numbered it when the peer heard from it: after that, it may have
        // joined runs into later entries (a crash lost the join, or this
        // copy is a backup taken before it), so content the peer never got
        // may sit below `seq` here. (That point is before the next opening's
        // first entry, from which this store numbered entries after it.)
        debug_assert!(next.settled < next.first_seq);
        seq.min(next.settled).min(self.storage.last_seq())
    }

    /// What this store holds of peer `node`'s log: through a sequence number,
    /// as the named incarnation of the peer numbered it.
    pub fn peer_holds(&self, node: ReplicaId) -> Result<Option<(ReplicaId, u64)>> {
        Ok(self.storage.peer_holds(node)?)
    }

    /// A state transfer owed to peer `node` (see `Storage::owed_transfer`).
    pub(crate) fn owed_transfer(&self, node: ReplicaId) -> Result<Option<u64>> {
        Ok(self.storage.owed_transfer(node)?)
    }

    /// Records or forgets a state transfer owed to peer `node`, flushed.
    pub(crate) fn set_owed_transfer(&mut self, node: ReplicaId, from: Option<u64>) -> Result<()> {
        Ok(self.storage.put_owed_transfer(node, from)?)
    }

    /// Records what this store holds of peer `node`'s log (after the entries
    /// it covers were written). Flushed with them.
    pub(crate) fn set_peer_holds(
        &mut self,
        node: ReplicaId,
        holds: (ReplicaId, u64),
    ) -> Result<()> {
        self.check_writable()?;
        Ok(self.storage.put_peer_holds(node, holds)?)
    }
}
