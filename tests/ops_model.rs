//! The shared operations layer (`atoll::ops`, what the HTTP API and the CLI
//! run) on three replicas, under random operations with extreme values
//! (counter bounds, empty and large batches, names shared by several types,
//! reserved and invalid names), with every delta delivered everywhere in a
//! random order. Whatever was accepted or refused: nothing panics, every
//! variable reads on every replica, and the replicas converge.

use atoll::ops::Request;
use atoll::{Config, Store};
use proptest::prelude::*;
use serde_json::Value;

const NAMES: [&str; 7] = [
    "a",
    "shared",
    "_atoll.peers",
    "_atoll.conflict/set/shared",
    "bad name",
    "",
    // 255 bytes: the longest a name may be.
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
];

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES.to_vec()).prop_map(String::from)
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(0),
        Just(1),
        any::<i64>(),
    ]
}

fn members() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec("[a-c]{0,2}", 1..4),
        // A large batch: one operation all the same.
        (0..3u32).prop_map(|k| (0..2_000).map(|i| format!("{k}-{i}")).collect()),
    ]
}

fn op() -> impl Strategy<Value = Request> {
    prop_oneof![
        (name(), amount()).prop_map(|(name, by)| Request::CounterAdd { name, by }),
        (name(), "[a-z]{0,3}").prop_map(|(name, value)| Request::RegisterSet { name, value }),
        (name(), members(), members()).prop_map(|(name, add, remove)| Request::SetChange {
            name,
            add,
            remove
        }),
        (name(), members()).prop_map(|(name, values)| Request::BagInsert { name, values }),
        name().prop_map(|name| Request::BagTake { name }),
        (
            name(),
            "[a-c]",
            prop::option::of(amount()),
            prop::option::of("[a-z]{0,3}"),
            prop::option::of("[a-z]{0,3}")
        )
            .prop_map(|(name, key, incr, set, add)| Request::MapChange {
                name,
                key,
                incr,
                set,
                add
            }),
        (name(), "[a-c]").prop_map(|(name, key)| Request::MapRemove { name, key }),
    ]
}

/// Every variable of `store` as the read operations answer it.
fn read_all(store: &Store) -> Vec<(String, Value)> {
    let vars = Request::Vars.apply(store).unwrap();
    let mut out = Vec::new();
    for v in vars["variables"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        let kind = v["type"].as_str().unwrap();
        let read = match kind {
            "counter" => Request::CounterGet { name: name.clone() },
            "register" => Request::RegisterGet { name: name.clone() },
            "set" => Request::SetList { name: name.clone() },
            "bag" => Request::BagList { name: name.clone() },
            "map" => Request::MapKeys { name: name.clone() },
            other => panic!("{other}"),
        };
        let answer = match read.apply(store) {
            Ok(v) => v,
            // The system's own variables are not for the data API.
            Err(atoll::Error::Reserved { .. }) if name.starts_with("_atoll.") => Value::Null,
            Err(e) => panic!("{name} ({kind}) unreadable: {e}"),
        };
        if kind == "map" {
            for key in answer["keys"].as_array().unwrap() {
                let key = key.as_str().unwrap().to_string();
                let entry = Request::MapGet {
                    name: name.clone(),
                    key,
                }
                .apply(store)
                .unwrap();
                out.push((name.clone(), entry));
            }
        }
        out.push((name, answer));
    }
    out
}

/// Ships every store's new log entries to every other store, shuffled by
/// `order`, until no store has anything new (a conflict's move is new).
fn deliver(stores: &[Store], shipped: &mut [u64], order: &[usize]) {
    for _round in 0..20 {
        let mut batch = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            let entries = s.deltas_since(shipped[i], usize::MAX).unwrap();
            if let Some((last, _)) = entries.last() {
                shipped[i] = *last;
            }
            batch.extend(entries.into_iter().map(|(_, e)| (i, e)));
        }
        if batch.is_empty() {
            return;
        }
        for (k, pick) in order.iter().enumerate() {
            let n = batch.len();
            batch.swap(k % n, pick % n);
        }
        for (from, e) in &batch {
            for (to, s) in stores.iter().enumerate() {
                if to != *from {
                    s.merge(e.origin, &e.name, e.kind, &e.delta).unwrap();
                }
            }
        }
    }
    panic!("deliveries did not settle");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_operations_anywhere_leave_every_replica_readable_and_converged(
        ops in prop::collection::vec((0..3usize, op()), 1..40),
        order in prop::collection::vec(any::<usize>(), 0..64),
        split_at in 0..40usize,
    ) {
        let stores: Vec<Store> = (0..3).map(|_| Store::open_with(Config::in_memory()).unwrap()).collect();
        let mut shipped = vec![0u64; 3];
        for (k, (i, op)) in ops.iter().enumerate() {
            // Apart until `split_at`, then deltas flow after each operation.
            if k >= split_at {
                deliver(&stores, &mut shipped, &order);
            }
            // Accepted or refused, never a panic; a refusal is a typed error.
            let _ = op.apply(&stores[*i]);
        }
        deliver(&stores, &mut shipped, &order);
        let views: Vec<_> = stores.iter().map(read_all).collect();
        prop_assert_eq!(&views[0], &views[1]);
        prop_assert_eq!(&views[0], &views[2]);
        // Conflict copies are read-only through the operations layer.
        for s in &stores {
            for (name, kept, moved, copy) in s.conflicts().unwrap() {
                prop_assert!(kept < moved, "{name}: {kept} kept, {moved} moved");
                let write = Request::SetChange { name: copy, add: vec!["x".into()], remove: vec![] };
                prop_assert!(write.apply(s).is_err(), "a conflict copy was written");
            }
        }
    }
}
