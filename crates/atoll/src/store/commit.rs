//! Group commit: durable local writes are appended under the store's lock
//! without a flush of their own, and made durable by shared flushes made
//! outside it. A caller returns once a flush that covers its entry has
//! completed, never before; while one flush runs, every write that arrives
//! is appended and waits for the next, which covers them all (as Redis's
//! `appendfsync always`, PostgreSQL and TigerBeetle make one fsync serve
//! many writes).

use super::{blocking, Store};
use crate::{CoreError, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// The most flushes a caller makes in a row for writes that arrived while
/// it flushed, before it returns and leaves the next to another.
const LEADER_ROUNDS: usize = 4;

/// The flush under way, if any, and those waiting for it.
#[derive(Default)]
pub(super) struct Commit {
    /// A flush runs (its caller lets the store's lock go meanwhile).
    flushing: Mutex<bool>,
    /// Signalled when a flush ends.
    ended: Condvar,
    /// The log is on disk through here, as far as shared flushes know (a
    /// waiter reads it without the store's lock).
    durable: AtomicU64,
    /// A shared flush failed: the keyspace refuses writes, and says why.
    failed: AtomicBool,
    /// The last entry a local write appended (read without the lock).
    appended: AtomicU64,
}

/// How long a flush waits at most for writes still arriving, so that it
/// covers them too (as PostgreSQL's `commit_delay`). It waits only while
/// they keep arriving: a lone writer's flush starts at once.
const GATHER: std::time::Duration = std::time::Duration::from_micros(200);

impl Store {
    /// Whether local writes are made durable by shared flushes (durable
    /// stores): see [`Store::commit`].
    pub(super) fn group_commit(&self) -> bool {
        self.inner.config.durability == crate::Durability::Durable
    }

    /// Returns once the log through `seq` is on disk: at once if a flush
    /// covered it, else after the flush under way and, if that one began
    /// before `seq` was appended, the next, which this caller makes if no
    /// one else does. A failed flush fails every caller waiting for it (the
    /// keyspace then refuses writes: what the disk holds is unknown).
    pub(super) fn commit(&self, seq: u64) -> Result<()> {
        self.inner.commit.appended.fetch_max(seq, Ordering::AcqRel);
        blocking(|| self.commit_blocking(seq))
    }

    fn commit_blocking(&self, seq: u64) -> Result<()> {
        let c = &self.inner.commit;
        // Lock order: this one, then the replica's; never the other way.
        let mut flushing = c.flushing.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if c.durable.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if c.failed.load(Ordering::Acquire) {
                return Err(self.flush_failure());
            }
            if *flushing {
                flushing = c.ended.wait(flushing).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            *flushing = true;
            drop(flushing);
            // A flush made elsewhere (a merge's, a checkpoint's) may cover it.
            let flushed = self.replica().keyspace_ref().flushed_seq();
            c.durable.fetch_max(flushed, Ordering::AcqRel);
            if flushed < seq {
                // Flushes while writes keep arriving (a few rounds at most,
                // so that this caller's own answer is not held up long):
                // each round's waiters are released, and the next round
                // covers what they append meanwhile without a hand-over.
                for _ in 0..LEADER_ROUNDS {
                    let through = self.flush_shared();
                    c.ended.notify_all();
                    if c.failed.load(Ordering::Acquire)
                        || self.replica().keyspace_ref().last_seq() <= through
                    {
                        break;
                    }
                }
            }
            flushing = c.flushing.lock().unwrap_or_else(|e| e.into_inner());
            *flushing = false;
            c.ended.notify_all();
        }
    }

    /// The error a caller gets when a shared flush failed.
    fn flush_failure(&self) -> crate::Error {
        let why = self.replica().keyspace_ref().failure().map(str::to_string);
        CoreError::Failed(why.unwrap_or_else(|| "a flush failed".into())).into()
    }

    /// One shared flush: of everything appended when it begins, made
    /// without the store's lock; then recorded, and the node's driver woken
    /// to ship what it made durable. Returns the sequence it covered.
    fn flush_shared(&self) -> u64 {
        // Writers the last flush released append their next write now:
        // while they keep coming (briefly), let them, so that this flush
        // covers them too.
        let appended = &self.inner.commit.appended;
        let started = std::time::Instant::now();
        let mut seen = appended.load(Ordering::Acquire);
        loop {
            std::thread::yield_now();
            let now = appended.load(Ordering::Acquire);
            if now == seen || started.elapsed() >= GATHER {
                break;
            }
            seen = now;
        }
        let (through, flusher) = {
            let r = self.replica();
            let ks = r.keyspace_ref();
            (ks.last_seq(), ks.flusher())
        };
        let done = match flusher {
            Some(flush) => {
                let done = flush();
                let mut r = self.replica();
                match &done {
                    Ok(()) => r.keyspace().note_flushed(through),
                    Err(e) => r
                        .keyspace()
                        .note_flush_failed(format!("a flush failed: {e}")),
                }
                done.map_err(|e| e.to_string())
            }
            // A backend that cannot flush from elsewhere flushes under the
            // lock (the keyspace records a failure itself).
            None => self.replica().keyspace().sync().map_err(|e| e.to_string()),
        };
        let c = &self.inner.commit;
        match done {
            Ok(()) => {
                c.durable.fetch_max(through, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!("flush failed; the store refuses writes until reopened: {e}");
                c.failed.store(true, Ordering::Release);
            }
        }
        self.inner.wake.notify_one();
        through
    }
}
