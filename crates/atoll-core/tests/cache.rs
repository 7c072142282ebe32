//! The variables held in memory stay within `cache_bytes` (by encoded
//! size, plus a fixed cost each), however many are used: those least lately used, and unchanged
//! since the last checkpoint, are dropped and read again from disk when
//! used; those changed since are never dropped.

use atoll_core::testkit::{id, inc};
use atoll_core::{Keyspace, KeyspaceConfig, Op};
use atoll_crdt::variable::{Kind, State};
use atoll_store::MemoryBackend;

const VARS: usize = 2_000;

fn counter(ks: &mut Keyspace<MemoryBackend>, name: &str) -> i128 {
    ks.read(name, Kind::Counter, |s| {
        Ok::<_, atoll_core::Error>(match s {
            Some(State::Counter(c)) => c.value(),
            _ => 0,
        })
    })
    .unwrap()
}

#[test]
fn variables_in_memory_stay_within_the_budget_and_read_back_whole() {
    let budget = 20_000;
    // What one small variable counts, at most: its encoded size and the
    // fixed cost of keeping it.
    let one = 1_000;
    let config = KeyspaceConfig {
        checkpoint_every: 64,
        cache_bytes: Some(budget),
        ..KeyspaceConfig::default()
    };
    let disk = MemoryBackend::new();
    let mut ks = Keyspace::open(disk.clone(), config.clone(), id(0), inc(0), 0).unwrap();
    for v in 0..VARS {
        ks.apply(&format!("c{v:05}"), Op::CounterAdd { by: v as i64 + 1 }, 0)
            .unwrap();
    }
    // Only those changed since the last checkpoint may be over it.
    let changed_since = 64 * one;
    assert!(
        ks.resident_bytes() <= budget + changed_since,
        "{} bytes resident",
        ks.resident_bytes()
    );
    ks.checkpoint().unwrap();
    // Every variable read back, in two orders: each is whole, and memory
    // stays within the budget (and one variable) throughout.
    for pass in 0..2 {
        for v in 0..VARS {
            let v = if pass == 0 { v } else { VARS - 1 - v };
            assert_eq!(counter(&mut ks, &format!("c{v:05}")), v as i128 + 1);
            assert!(
                ks.resident_bytes() <= budget + one,
                "{}",
                ks.resident_bytes()
            );
        }
    }
    assert!(
        ks.loaded() < VARS / 4,
        "{} variables in memory",
        ks.loaded()
    );
    // Written again after being dropped: the write joins the state on
    // disk, and a variable changed since the last checkpoint stays in
    // memory, however far over the budget, until it is checkpointed.
    for v in 0..VARS {
        ks.apply(&format!("c{v:05}"), Op::CounterAdd { by: 1_000 }, 0)
            .unwrap();
    }
    for v in 0..VARS {
        assert_eq!(counter(&mut ks, &format!("c{v:05}")), v as i128 + 1_001);
    }
    ks.apply("c00007", Op::CounterAdd { by: 100 }, 0).unwrap();
    assert_eq!(counter(&mut ks, "c00007"), 1_108);
    ks.flush().unwrap();
    drop(ks);
    let mut ks = Keyspace::open(disk, config, id(0), inc(1), 0).unwrap();
    assert_eq!(counter(&mut ks, "c00007"), 1_108);
    assert_eq!(counter(&mut ks, "c01999"), 3_000);
}

#[test]
fn without_a_budget_every_variable_used_stays() {
    let mut ks = Keyspace::open(
        MemoryBackend::new(),
        KeyspaceConfig::default(),
        id(0),
        inc(0),
        0,
    )
    .unwrap();
    for v in 0..500 {
        ks.apply(&format!("c{v:05}"), Op::CounterAdd { by: 1 }, 0)
            .unwrap();
    }
    ks.checkpoint().unwrap();
    assert_eq!(ks.loaded(), 500);
    assert!(ks.resident_bytes() > 0);
}
