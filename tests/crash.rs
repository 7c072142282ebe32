//! Crash test: a child process writes through the durable store and reports each
//! acknowledged operation on stdout; it is killed (SIGKILL) at a random moment,
//! the store is reopened, and every acknowledged operation must be there.
//! Repeated over several rounds on the same data dir, with concurrent
//! writers whose writes share flushes (group commit). (After sled's
//! tests/test_crash_recovery.rs.)

use atoll::Store;
use rand::Rng;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHILD_ENV: &str = "ATOLL_CRASH_CHILD_DIR";
const ROUNDS: usize = 6;
/// Threads writing concurrently besides the main one.
const WRITERS: u64 = 8;

fn child(dir: &str, start: u64) -> ! {
    let store = Store::open(dir).expect("child opens the store");
    let c = store.counter("c").unwrap();
    let s = store.set::<u64>("s").unwrap();
    let r = store.register::<u64>("r").unwrap();
    let b = store.bag::<u64>("b").unwrap();
    let m = store.map("m").unwrap();
    // Concurrent durable writers too: their writes share flushes (group
    // commit), and each reports its own once acknowledged.
    for t in 0..WRITERS {
        let w = store.set::<u64>("w").unwrap();
        std::thread::spawn(move || {
            let out = std::io::stdout();
            for k in 0.. {
                let id = start * 1_000_000 + t * 100_000 + k;
                w.add(&id).unwrap();
                let mut o = out.lock();
                writeln!(o, "w {id}").unwrap();
                o.flush().unwrap();
            }
        });
    }
    let out = std::io::stdout();
    for i in start.. {
        let line = match i % 5 {
            0 => {
                c.incr(1).unwrap();
                format!("c {i}")
            }
            1 => {
                s.add(&i).unwrap();
                format!("s {i}")
            }
            2 => {
                r.set(&i).unwrap();
                format!("r {i}")
            }
            3 => {
                b.insert(&i).unwrap();
                format!("b {i}")
            }
            _ => {
                m.add("k", &i).unwrap();
                format!("m {i}")
            }
        };
        // The op returned: it is acknowledged. Report it.
        let mut o = out.lock();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    }
    unreachable!()
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let start = std::env::var("ATOLL_CRASH_START").unwrap().parse().unwrap();
        child(&dir, start);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked: Vec<String> = Vec::new();
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, dir.path())
            .env("ATOLL_CRASH_START", next.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = proc.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            })
        };
        // Let it start and acknowledge something (however loaded the machine
        // is), write for a while more, then pull the plug.
        let started = std::time::Instant::now();
        while lines.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let wait_ms = rng.gen_range(0..600);
        std::thread::sleep(Duration::from_millis(wait_ms));
        proc.kill().unwrap();
        proc.wait().unwrap();
        reader.join().unwrap();
        let got = std::mem::take(&mut *lines.lock().unwrap());
        assert!(
            !got.is_empty(),
            "round {round}: the child acknowledged nothing in {:?}",
            started.elapsed()
        );
        next += got.len() as u64 + 1;
        acked.extend(got);
        verify(dir.path(), &acked, round);
    }
    let concurrent = acked.iter().filter(|l| l.starts_with("w ")).count();
    assert!(
        concurrent > 0,
        "the concurrent writers acknowledged nothing"
    );
    println!(
        "crash: {ROUNDS} rounds, {} acknowledged ops ({concurrent} from {WRITERS} concurrent writers) all present after SIGKILL",
        acked.len()
    );
    println!("1 passed, 0 failed");
}

fn verify(dir: &std::path::Path, acked: &[String], round: usize) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
    let ids = |p: &str| -> BTreeSet<u64> {
        acked
            .iter()
            .filter_map(|l| l.strip_prefix(p))
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let counter = store.counter("c").unwrap().value().unwrap();
    let incs = ids("c ").len() as i128;
    // One more increment than acknowledged is allowed: it committed, then the kill came.
    assert!(
        counter >= incs && counter <= incs + ROUNDS as i128,
        "round {round}: counter {counter}, acknowledged {incs}"
    );
    let set: BTreeSet<u64> = store
        .set::<u64>("s")
        .unwrap()
        .members()
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<_> = ids("s ").difference(&set).copied().collect();
    assert!(
        missing.is_empty(),
        "round {round}: set lost acknowledged adds {missing:?}"
    );
    let bag: BTreeSet<u64> = store
        .bag::<u64>("b")
        .unwrap()
        .elements()
        .unwrap()
        .into_iter()
        .map(|e| e.value)
        .collect();
    let missing: Vec<_> = ids("b ").difference(&bag).copied().collect();
    assert!(
        missing.is_empty(),
        "round {round}: bag lost acknowledged inserts {missing:?}"
    );
    let map: BTreeSet<u64> = store
        .map("m")
        .unwrap()
        .members::<u64>("k")
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<_> = ids("m ").difference(&map).copied().collect();
    assert!(
        missing.is_empty(),
        "round {round}: map lost acknowledged adds {missing:?}"
    );
    let written: BTreeSet<u64> = store
        .set::<u64>("w")
        .unwrap()
        .members()
        .unwrap()
        .into_iter()
        .collect();
    let acked_w = ids("w ");
    let missing: Vec<_> = acked_w.difference(&written).copied().collect();
    assert!(
        missing.is_empty(),
        "round {round}: concurrent writers lost acknowledged adds {missing:?}"
    );
    if let Some(last) = ids("r ").last() {
        let reg = store.register::<u64>("r").unwrap().get().unwrap().unwrap();
        assert!(
            reg >= *last,
            "round {round}: register {reg}, last acknowledged write {last}"
        );
    }
}
