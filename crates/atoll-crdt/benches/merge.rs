//! Merge throughput of atoll's delta-state CRDTs against the `crdts` crate, on
//! the same workload in the same run.
//!
//! What replication ships per operation is, for atoll, a delta (joined with
//! `Lattice::join`) and, for `crdts`, an op (applied with `CmRDT::apply`): the
//! "merge what arrives" benchmark joins/applies every one at a fresh receiver.
//! The "state merge" benchmark joins whole replica states (`CvRDT::merge`).
//!
//! Run: `cargo bench -p atoll-crdt --bench merge`

use atoll_crdt::{Lattice, OrSet, PNCounter, ReplicaId};
use crdts::{CmRDT, CvRDT};
use std::hint::black_box;
use std::time::{Duration, Instant};

const REPLICAS: u64 = 4;
const COUNTER_OPS: u64 = 50_000; // per replica
const SET_OPS: u64 = 5_000; // adds per replica; every 5th is removed again
const RUNS: usize = 7;

/// The median of `RUNS` timings of `f`, which gets fresh input from `setup`.
fn time<I, O>(mut setup: impl FnMut() -> I, mut f: impl FnMut(I) -> O) -> Duration {
    let mut t: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let input = setup();
            let start = Instant::now();
            black_box(f(input));
            start.elapsed()
        })
        .collect();
    t.sort();
    t[RUNS / 2]
}

fn row(what: &str, n: u64, ours: Duration, theirs: Duration) {
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    println!(
        "| {what:<34} | {n:>7} | {:>9.1} | {:>9.1} | {:>6.2} |",
        per(ours),
        per(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn counter() {
    // atoll: each replica increments (every 4th op decrements); collect deltas.
    let mut deltas = Vec::new();
    let mut states = Vec::new();
    for r in 0..REPLICAS {
        let mut c = PNCounter::new();
        for i in 0..COUNTER_OPS {
            let by = if i % 4 == 3 { -1 } else { 1 };
            deltas.push(c.add(ReplicaId(r), by).unwrap());
        }
        states.push(c);
    }
    // crdts: the same ops.
    let mut ops = Vec::new();
    let mut their_states = Vec::new();
    for r in 0..REPLICAS {
        let mut c = crdts::PNCounter::<u64>::new();
        for i in 0..COUNTER_OPS {
            let op = if i % 4 == 3 { c.dec(r) } else { c.inc(r) };
            c.apply(op.clone());
            ops.push(op);
        }
        their_states.push(c);
    }
    let n = deltas.len() as u64;
    let ours = time(
        || deltas.clone(),
        |ds| {
            let mut rx = PNCounter::new();
            for d in ds {
                rx.join(d);
            }
            rx
        },
    );
    let theirs = time(
        || ops.clone(),
        |os| {
            let mut rx = crdts::PNCounter::<u64>::new();
            for o in os {
                rx.apply(o);
            }
            rx
        },
    );
    row("PNCounter: merge each delta / op", n, ours, theirs);
    let ours = time(
        || states.clone(),
        |ss| {
            let mut rx = PNCounter::new();
            for s in ss {
                rx.join(s);
            }
            rx
        },
    );
    let theirs = time(
        || their_states.clone(),
        |ss| {
            let mut rx = crdts::PNCounter::<u64>::new();
            for s in ss {
                rx.merge(s);
            }
            rx
        },
    );
    row("PNCounter: merge whole states", REPLICAS, ours, theirs);
}

fn set() {
    let member = |r: u64, i: u64| r * 1_000_000 + i;
    let mut deltas = Vec::new();
    let mut states = Vec::new();
    for r in 0..REPLICAS {
        let mut s = OrSet::new();
        for i in 0..SET_OPS {
            deltas.push(s.add(ReplicaId(r), member(r, i)));
            if i % 5 == 4 {
                deltas.push(s.remove(&member(r, i - 2)));
            }
        }
        states.push(s);
    }
    let mut ops = Vec::new();
    let mut their_states = Vec::new();
    for r in 0..REPLICAS {
        let mut s = crdts::Orswot::<u64, u64>::new();
        for i in 0..SET_OPS {
            let add = s.add(member(r, i), s.read_ctx().derive_add_ctx(r));
            s.apply(add.clone());
            ops.push(add);
            if i % 5 == 4 {
                let rm = s.rm(
                    member(r, i - 2),
                    s.contains(&member(r, i - 2)).derive_rm_ctx(),
                );
                s.apply(rm.clone());
                ops.push(rm);
            }
        }
        their_states.push(s);
    }
    assert_eq!(deltas.len(), ops.len());
    let n = deltas.len() as u64;
    let ours = time(
        || deltas.clone(),
        |ds| {
            let mut rx = OrSet::new();
            for d in ds {
                rx.join(d);
            }
            rx
        },
    );
    let theirs = time(
        || ops.clone(),
        |os| {
            let mut rx = crdts::Orswot::<u64, u64>::new();
            for o in os {
                rx.apply(o);
            }
            rx
        },
    );
    row("OrSet vs Orswot: merge each delta/op", n, ours, theirs);
    let ours = time(
        || states.clone(),
        |ss| {
            let mut rx = OrSet::new();
            for s in ss {
                rx.join(s);
            }
            rx
        },
    );
    let theirs = time(
        || their_states.clone(),
        |ss| {
            let mut rx = crdts::Orswot::<u64, u64>::new();
            for s in ss {
                rx.merge(s);
            }
            rx
        },
    );
    row(
        "OrSet vs Orswot: merge whole states",
        REPLICAS,
        ours,
        theirs,
    );
    // Same result on both sides.
    let mut a = OrSet::new();
    for s in states {
        a.join(s);
    }
    let mut b = crdts::Orswot::<u64, u64>::new();
    for s in their_states {
        b.merge(s);
    }
    assert_eq!(a.len(), b.read().val.len());
}

fn main() {
    // `cargo test --benches` runs bench targets with --test-like args: do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    println!("merge throughput, {REPLICAS} replicas, median of {RUNS} runs (lower ns/op is better; ratio > 1 means atoll is faster)\n");
    println!("| workload                           |   items | atoll ns  | crdts ns  | ratio  |");
    println!("|------------------------------------|--------:|----------:|----------:|-------:|");
    counter();
    set();
}
