//! Write throughput of the durable and buffered store against raw sled writing
//! the same bytes with the same flush policy, in the same run.
//!
//! The baseline's bytes are the store's own: the workload is first run on a
//! recording backend, which captures every batch the store commits (state,
//! log entry, sequence number, metadata); raw sled then inserts those keys and
//! values, one `insert` each, flushing after each operation's inserts when the
//! store would have flushed.
//!
//! Then group commit: durable writes from 16 concurrent threads against one
//! thread, on the same store setup (each thread its own counter).
//!
//! (Many variables, their memory and a new peer's catch-up: the
//! `variables` benchmark.)
//!
//! Run: `cargo bench -p atoll --bench store`

use atoll::{Config, Durability, Store};
use atoll_store::{Backend, BatchOp, MemoryBackend, SledBackend};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records the batches a store applies.
struct Recorder {
    inner: MemoryBackend,
    batches: Arc<Mutex<Vec<Vec<BatchOp>>>>,
}

impl Backend for Recorder {
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
        self.batches.lock().unwrap().push(ops.clone());
        self.inner.apply(ops)
    }
    fn flush(&self) -> atoll_store::Result<()> {
        self.inner.flush()
    }
}

#[derive(Clone, Copy)]
enum Workload {
    CounterIncr,
    SetAdd,
}

fn run(store: &Store, w: Workload, n: u64) {
    match w {
        Workload::CounterIncr => {
            let c = store.counter("hits").unwrap();
            for _ in 0..n {
                c.incr(1).unwrap();
            }
        }
        Workload::SetAdd => {
            let s = store.set::<u64>("members").unwrap();
            for i in 0..n {
                s.add(&i).unwrap();
            }
        }
    }
    store.flush().unwrap();
}

fn measure(w: Workload, d: Durability, n: u64) -> (Duration, Duration, Duration, usize) {
    // 1. The bytes: the same workload on a recording backend.
    let batches = Arc::new(Mutex::new(Vec::new()));
    let rec = Recorder {
        inner: MemoryBackend::new(),
        batches: batches.clone(),
    };
    let store = Store::open_backend(Box::new(rec), Config::in_memory().durability(d)).unwrap();
    run(&store, w, n);
    drop(store);
    let mut batches = std::mem::take(&mut *batches.lock().unwrap());
    batches.remove(0); // the store's one-time node metadata
    let bytes: usize = batches
        .iter()
        .flatten()
        .map(|op| match op {
            BatchOp::Put(k, v) => k.len() + v.len(),
            BatchOp::Delete(k) => k.len(),
        })
        .sum();

    // 2. atoll on sled.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(Config::new(dir.path()).durability(d)).unwrap();
    let t = Instant::now();
    run(&store, w, n);
    let ours = t.elapsed();
    drop(store);

    // 3. Raw sled, the same keys and values, the same flush policy: sled's
    //    flush followed by the same fsyncs atoll adds (SledBackend::flush).
    let raw_same = raw_sled(&batches, d, true);
    // 4. For reference: raw sled with only sled's own flush (sync_file_range).
    let raw_sled_only = raw_sled(&batches, d, false);
    (ours, raw_same, raw_sled_only, bytes)
}

fn raw_sled(batches: &[Vec<BatchOp>], d: Durability, atoll_fsyncs: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let every = match d {
        Durability::Durable => None,
        Durability::Buffered { flush_every_ms } => Some(flush_every_ms),
    };
    let backend = SledBackend::open(dir.path(), every, atoll_store::STATES).unwrap();
    let db = backend.db();
    // The same layout as atoll's: variable states (keys from b's') in a tree
    // of their own, away from the log's newest leaf.
    let states = db.open_tree("states").unwrap();
    let flush = || {
        if atoll_fsyncs {
            backend.flush().unwrap();
        } else {
            db.flush().unwrap();
        }
    };
    let t = Instant::now();
    for batch in batches {
        for op in batch {
            if let BatchOp::Put(k, v) = op {
                let tree: &sled::Tree = if k.first() == Some(&b's') {
                    &states
                } else {
                    db
                };
                tree.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        if d == Durability::Durable {
            flush();
        }
    }
    flush();
    t.elapsed()
}

/// Durable `incr`s per second from `threads` threads at once, each on its
/// own counter, `per_thread` each, on a fresh store.
fn concurrent_durable(threads: usize, per_thread: u64) -> f64 {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open_with(Config::new(dir.path())).expect("opens");
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = store.counter(&format!("c{t}")).expect("a counter");
            s.spawn(move || {
                for _ in 0..per_thread {
                    c.incr(1).expect("durable write");
                }
            });
        }
    });
    (threads as u64 * per_thread) as f64 / start.elapsed().as_secs_f64()
}

fn group_commit() {
    println!("\ndurable writes from concurrent threads (group commit), each on its own counter:");
    println!("| writers | ops | ops/s | vs one writer |");
    println!("|--------:|----:|------:|--------------:|");
    // The median of three of each.
    let median = |threads: usize, per: u64| {
        let mut r: Vec<f64> = (0..3).map(|_| concurrent_durable(threads, per)).collect();
        r.sort_by(f64::total_cmp);
        r[1]
    };
    let one = median(1, 2_000);
    for (threads, per) in [(1, 2_000), (4, 1_000), (16, 500)] {
        let ops = if threads == 1 {
            one
        } else {
            median(threads, per)
        };
        println!(
            "| {threads:>7} | {:>3} | {ops:>5.0} | {:>13.2} |",
            threads as u64 * per,
            ops / one
        );
    }
    println!("target: 16 writers at least 8x one writer's op/s");
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "--group-commit") {
        group_commit();
        return;
    }
    println!(
        "store write throughput vs raw sled inserting the same bytes with the same flush policy"
    );
    println!("(ratio = atoll / raw, target >= 0.7; the last column is raw sled with only sled's own flush)\n");
    println!("| workload     | durability     |    ops | bytes/op | atoll ops/s | raw sled ops/s | ratio | sled-flush-only ops/s |");
    println!("|--------------|----------------|-------:|---------:|------------:|---------------:|------:|----------------------:|");
    let buffered = Durability::Buffered {
        flush_every_ms: 100,
    };
    for (w, wname) in [
        (Workload::CounterIncr, "counter incr"),
        (Workload::SetAdd, "set add"),
    ] {
        for (d, dname, n) in [
            (Durability::Durable, "durable", 2_000),
            (buffered, "buffered 100ms", 20_000),
        ] {
            // The run with the median ratio of three.
            let mut runs: Vec<_> = (0..3).map(|_| measure(w, d, n)).collect();
            let ratio =
                |x: &(Duration, Duration, Duration, usize)| x.1.as_secs_f64() / x.0.as_secs_f64();
            runs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
            let run = runs[1];
            let ops = |t: Duration| n as f64 / t.as_secs_f64();
            println!(
                "| {wname:<12} | {dname:<14} | {n:>6} | {:>8} | {:>11.0} | {:>14.0} | {:>5.2} | {:>21.0} |",
                run.3 / n as usize,
                ops(run.0),
                ops(run.1),
                ratio(&run),
                ops(run.2),
            );
        }
    }
    group_commit();
}
