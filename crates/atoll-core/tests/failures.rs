//! A write that fails at a receiver (its disk refuses a batch) is not
//! acknowledged: what the receiver holds of the sender's log does not move,
//! the sender sends the interval again on its next cycle, and once the
//! disk takes writes again the receiver merges it and only then moves on.
//!
//! A real disk cannot be made to refuse one write portably, so this runs
//! on a backend that refuses batches while told to; everything else is
//! the replicas' own code.

use atoll_core::testkit::{id, inc};
use atoll_core::{Keyspace, KeyspaceConfig, Op, Replica, ReplicaConfig};
use atoll_crdt::variable::State;
use atoll_store::{Backend, BatchOp, MemoryBackend, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A memory backend whose batches fail while `refuse` is set.
struct Refusing {
    inner: MemoryBackend,
    refuse: Arc<AtomicBool>,
}

impl Backend for Refusing {
    fn get(&self, key: &[u8]) -> atoll_store::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> atoll_store::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.range(from, to, limit, max_bytes)
    }
    fn last_in(&self, from: &[u8], to: &[u8]) -> atoll_store::Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.last_in(from, to)
    }
    fn apply(&mut self, ops: Vec<BatchOp>) -> atoll_store::Result<()> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::other("the disk refuses")));
        }
        self.inner.apply(ops)
    }
    fn flush(&self) -> atoll_store::Result<()> {
        self.inner.flush()
    }
}

/// Delivers every transmit of one replica to the other until nothing is
/// sent, or a message fails to merge at the receiver: how many failed.
fn exchange(a: &mut Replica<MemoryBackend>, b: &mut Replica<Refusing>, now: u64) -> usize {
    let mut failed = 0;
    for _ in 0..100 {
        let to_b = a.drain().transmits;
        let to_a = b.drain().transmits;
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        for t in to_b {
            failed += usize::from(b.handle_message(now, id(0), &t.payload).is_err());
        }
        for t in to_a {
            a.handle_message(now, id(1), &t.payload).unwrap();
        }
    }
    failed
}

fn counter(b: &mut Replica<Refusing>) -> i128 {
    match b.keyspace().state("hits").unwrap() {
        Some(State::Counter(c)) => c.value(),
        _ => 0,
    }
}

#[test]
fn a_write_that_fails_at_the_receiver_is_sent_again_and_progress_moves_only_on_commit() {
    let config = ReplicaConfig {
        retransmit_ms: 100,
        ..ReplicaConfig::default()
    };
    let ks = KeyspaceConfig::default();
    let mut a = Replica::new(
        Keyspace::open(MemoryBackend::new(), ks.clone(), id(0), inc(0), 0).unwrap(),
        config.clone(),
    );
    let refuse = Arc::new(AtomicBool::new(false));
    let disk = Refusing {
        inner: MemoryBackend::new(),
        refuse: refuse.clone(),
    };
    let mut b = Replica::new(Keyspace::open(disk, ks, id(1), inc(1), 0).unwrap(), config);
    a.add_peer(id(1));
    b.add_peer(id(0));
    a.set_connected(id(1), Some(inc(1)), 0);
    b.set_connected(id(0), Some(inc(0)), 0);
    a.write(0, "hits", Op::CounterAdd { by: 2 }).unwrap();
    assert_eq!(exchange(&mut a, &mut b, 0), 0);
    assert_eq!(counter(&mut b), 2);
    let held = b.peers()[0].holds;
    let acked = a.peers()[0].acked;
    assert!(held.is_some() && acked > 0, "{held:?} {acked}");

    // The receiver's disk refuses: the interval is not merged, not
    // acknowledged, and what each side records of the other stays.
    refuse.store(true, Ordering::SeqCst);
    a.write(10, "hits", Op::CounterAdd { by: 3 }).unwrap();
    assert!(exchange(&mut a, &mut b, 10) > 0, "the merge failed");
    assert_eq!(counter(&mut b), 2, "nothing of the failed write is held");
    assert_eq!(b.peers()[0].holds, held, "the receiver's progress stays");
    assert_eq!(a.peers()[0].acked, acked, "the sender's too");

    // Still refused on the next cycle: sent again, refused again.
    a.handle_timeout(200);
    assert!(exchange(&mut a, &mut b, 200) > 0, "sent again");
    assert_eq!(b.peers()[0].holds, held);

    // The disk takes writes again: the next cycle commits, then progress moves.
    refuse.store(false, Ordering::SeqCst);
    a.handle_timeout(400);
    assert_eq!(exchange(&mut a, &mut b, 400), 0);
    assert_eq!(counter(&mut b), 5);
    assert!(b.peers()[0].holds > held, "{:?}", b.peers()[0].holds);
    assert!(a.peers()[0].acked > acked);
}
