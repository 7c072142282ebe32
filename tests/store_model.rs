//! Model tests: the store against plain in-memory values over random operations,
//! with close and reopen (sled), and with crashes that lose unflushed writes
//! (the in-memory backend under buffered durability).

use atoll::{Config, Durability, Store};
use atoll_store::{Backend, MemoryBackend};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Incr(u8, i16),
    SetReg(u8, u16),
    Add(u8, u8),
    Remove(u8, u8),
    BagInsert(u16),
    BagTake,
    MapIncr(u8, i8),
    MapRemove(u8),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3u8, any::<i16>()).prop_map(|(k, n)| Op::Incr(k, n)),
        2 => (0..2u8, any::<u16>()).prop_map(|(k, v)| Op::SetReg(k, v)),
        3 => (0..2u8, 0..6u8).prop_map(|(k, v)| Op::Add(k, v)),
        2 => (0..2u8, 0..6u8).prop_map(|(k, v)| Op::Remove(k, v)),
        2 => any::<u16>().prop_map(Op::BagInsert),
        2 => Just(Op::BagTake),
        2 => (0..3u8, any::<i8>()).prop_map(|(k, n)| Op::MapIncr(k, n)),
        1 => (0..3u8).prop_map(Op::MapRemove),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    counters: BTreeMap<u8, i128>,
    registers: BTreeMap<u8, u16>,
    sets: BTreeMap<u8, BTreeSet<u8>>,
    bag: Vec<u16>,
    map: BTreeMap<u8, i128>,
}

fn apply(s: &Store, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Incr(k, n) => {
            let v = s
                .counter(&format!("c{k}"))
                .unwrap()
                .incr(i64::from(*n))
                .unwrap();
            *m.counters.entry(*k).or_default() += i128::from(*n);
            prop_assert_eq!(v, m.counters[k]);
        }
        Op::SetReg(k, v) => {
            s.register::<u16>(&format!("r{k}")).unwrap().set(v).unwrap();
            m.registers.insert(*k, *v);
        }
        Op::Add(k, v) => {
            s.set::<u8>(&format!("s{k}")).unwrap().add(v).unwrap();
            m.sets.entry(*k).or_default().insert(*v);
        }
        Op::Remove(k, v) => {
            let was = s.set::<u8>(&format!("s{k}")).unwrap().remove(v).unwrap();
            let model_was = m.sets.entry(*k).or_default().remove(v);
            prop_assert_eq!(was, model_was);
        }
        Op::BagInsert(v) => {
            s.bag::<u16>("bag").unwrap().insert(v).unwrap();
            m.bag.push(*v);
        }
        Op::BagTake => {
            let got = s.bag::<u16>("bag").unwrap().take().unwrap();
            match got {
                Some(v) => {
                    let i = m.bag.iter().position(|x| *x == v);
                    prop_assert!(
                        i.is_some(),
                        "took {} which was never inserted or already taken",
                        v
                    );
                    m.bag.remove(i.unwrap());
                }
                None => prop_assert!(m.bag.is_empty()),
            }
        }
        Op::MapIncr(k, n) => {
            s.map("m")
                .unwrap()
                .incr(&format!("k{k}"), i64::from(*n))
                .unwrap();
            *m.map.entry(*k).or_default() += i128::from(*n);
        }
        Op::MapRemove(k) => {
            let was = s.map("m").unwrap().remove(&format!("k{k}")).unwrap();
            prop_assert_eq!(was, m.map.remove(k).is_some());
        }
        Op::Flush | Op::Reopen => {}
    }
    Ok(())
}

fn check(s: &Store, m: &Model) -> Result<(), TestCaseError> {
    for k in 0..3u8 {
        let want = m.counters.get(&k).copied().unwrap_or(0);
        prop_assert_eq!(s.counter(&format!("c{k}")).unwrap().value().unwrap(), want);
        let want = m.map.get(&k).copied().unwrap_or(0);
        prop_assert_eq!(s.map("m").unwrap().counter(&format!("k{k}")).unwrap(), want);
    }
    // A key incremented by 0 is present with 0: presence is checked too.
    let keys: BTreeSet<String> = s.map("m").unwrap().keys().unwrap().into_iter().collect();
    let want: BTreeSet<String> = m.map.keys().map(|k| format!("k{k}")).collect();
    prop_assert_eq!(keys, want);
    for k in 0..2u8 {
        prop_assert_eq!(
            s.register::<u16>(&format!("r{k}")).unwrap().get().unwrap(),
            m.registers.get(&k).copied()
        );
        let members: BTreeSet<u8> = s
            .set::<u8>(&format!("s{k}"))
            .unwrap()
            .members()
            .unwrap()
            .into_iter()
            .collect();
        prop_assert_eq!(members, m.sets.get(&k).cloned().unwrap_or_default());
    }
    let mut bag: Vec<u16> = s
        .bag::<u16>("bag")
        .unwrap()
        .elements()
        .unwrap()
        .into_iter()
        .map(|e| e.value)
        .collect();
    bag.sort_unstable();
    let mut want = m.bag.clone();
    want.sort_unstable();
    prop_assert_eq!(bag, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Durable sled store: every acknowledged op survives close and reopen.
    #[test]
    fn sled_store_matches_model_across_reopen(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.checkpoint_every = 5;
        let mut store = Store::open_with(config.clone()).unwrap();
        let mut model = Model::default();
        for o in &ops {
            if let Op::Reopen = o {
                drop(store);
                store = Store::open_with(config.clone()).unwrap();
                check(&store, &model)?;
            }
            apply(&store, &mut model, o)?;
        }
        check(&store, &model)?;
        drop(store);
        check(&Store::open(dir.path()).unwrap(), &model)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Buffered in-memory store: a crash keeps everything up to the last flush,
    /// and may keep later operations (checkpoints flush too), but always whole
    /// operations and in order: the store after recovery equals the model after
    /// some operation since the last flush.
    #[test]
    fn memory_store_crash_keeps_a_prefix_of_whole_ops(ops in prop::collection::vec(op(), 1..80)) {
        let mem = MemoryBackend::new();
        let mut config = Config::in_memory().durability(Durability::Buffered { flush_every_ms: 1_000 });
        // Checkpoint and truncate often, so crashes fall between them.
        config.checkpoint_every = 7;
        config.log_retain = 10;
        let open = || Store::open_backend(Box::new(mem.clone()) as Box<dyn Backend>, config.clone()).unwrap();
        let mut store = open();
        let mut model = Model::default();
        // The model after the last flush, then after each operation since.
        let mut since_flush = vec![Model::default()];
        for o in &ops {
            match o {
                Op::Flush => {
                    store.flush().unwrap();
                    since_flush = vec![model.clone()];
                }
                Op::Reopen => {
                    // A crash: the disk keeps what was flushed, and no destructor
                    // runs (dropping the store would checkpoint its cache).
                    mem.crash(0);
                    std::mem::forget(store);
                    store = open();
                    let found = since_flush.iter().rev().find(|m| check(&store, m).is_ok());
                    prop_assert!(found.is_some(), "recovered state matches no prefix of the operations since the last flush");
                    model = found.unwrap().clone();
                    since_flush = vec![model.clone()];
                }
                _ => {
                    apply(&store, &mut model, o)?;
                    since_flush.push(model.clone());
                }
            }
        }
        check(&store, &model)?;
    }

    /// Durable in-memory store: a crash between checkpoints loses nothing
    /// acknowledged; recovery replays the log after the checkpoint.
    #[test]
    fn memory_store_durable_crash_loses_nothing(ops in prop::collection::vec(op(), 1..80)) {
        let mem = MemoryBackend::new();
        let mut config = Config::in_memory();
        config.checkpoint_every = 7;
        config.log_retain = 10;
        let open = || Store::open_backend(Box::new(mem.clone()) as Box<dyn Backend>, config.clone()).unwrap();
        let mut store = open();
        let mut model = Model::default();
        for o in &ops {
            match o {
                Op::Flush => store.flush().unwrap(),
                Op::Reopen => {
                    mem.crash(0);
                    std::mem::forget(store);
                    store = open();
                    check(&store, &model)?;
                }
                _ => apply(&store, &mut model, o)?,
            }
        }
        check(&store, &model)?;
    }
}
