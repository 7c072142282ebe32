//! The embedded API as an application sees it.

use atoll::{Config, CoreError, Durability, Error, Kind, Store};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn every_type_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let bag_id;
    {
        let s = Store::open(dir.path()).unwrap();
        s.counter("hits").unwrap().incr(5).unwrap();
        s.counter("hits").unwrap().decr(2).unwrap();
        s.register::<String>("motd")
            .unwrap()
            .set(&"hello".into())
            .unwrap();
        s.mv_register::<u32>("version").unwrap().set(&7).unwrap();
        let tags = s.set::<String>("tags").unwrap();
        tags.add(&"a".into()).unwrap();
        tags.add(&"b".into()).unwrap();
        assert!(tags.remove(&"a".into()).unwrap());
        assert!(!tags.remove(&"zz".into()).unwrap());
        let bag = s.bag::<u64>("jobs").unwrap();
        bag_id = bag.insert(&10).unwrap();
        bag.insert(&20).unwrap();
        assert_eq!(bag.take().unwrap(), Some(10));
        let m = s.map("cart").unwrap();
        m.incr("apples", 3).unwrap();
        m.set("note", &"ring twice".to_string()).unwrap();
        m.add("tags", &1u8).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.counter("hits").unwrap().value().unwrap(), 3);
    assert_eq!(
        s.register::<String>("motd")
            .unwrap()
            .get()
            .unwrap()
            .as_deref(),
        Some("hello")
    );
    assert_eq!(
        s.mv_register::<u32>("version").unwrap().get().unwrap(),
        vec![7]
    );
    assert_eq!(
        s.set::<String>("tags").unwrap().members().unwrap(),
        vec!["b".to_string()]
    );
    let bag = s.bag::<u64>("jobs").unwrap();
    let els = bag.elements().unwrap();
    assert_eq!(els.len(), 1);
    assert_eq!(els[0].value, 20);
    assert_ne!(els[0].id, bag_id);
    assert_eq!(els[0].owner, s.replica_id());
    let m = s.map("cart").unwrap();
    assert_eq!(m.counter("apples").unwrap(), 3);
    assert_eq!(
        m.get::<String>("note").unwrap().as_deref(),
        Some("ring twice")
    );
    assert_eq!(m.members::<u8>("tags").unwrap(), vec![1]);
    assert_eq!(m.keys().unwrap(), vec!["apples", "note", "tags"]);
    assert!(m.remove("apples").unwrap());
    assert_eq!(m.counter("apples").unwrap(), 0);
    let vars = s.variables().unwrap();
    let kinds: Vec<(&str, Kind)> = vars.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    assert_eq!(
        kinds,
        vec![
            ("cart", Kind::Map),
            ("hits", Kind::Counter),
            ("jobs", Kind::Bag),
            ("motd", Kind::Register),
            ("tags", Kind::Set),
            ("version", Kind::MvRegister),
        ]
    );
}

#[test]
fn a_name_used_with_another_type_is_a_typed_error() {
    let (_d, s) = open();
    s.counter("x").unwrap().incr(1).unwrap();
    match s.set::<u8>("x") {
        Err(Error::Core(CoreError::TypeMismatch {
            name,
            expected,
            found,
        })) => {
            assert_eq!(
                (name.as_str(), expected, found),
                ("x", Kind::Set, Kind::Counter)
            );
        }
        other => panic!("expected a type mismatch, got {:?}", other.err()),
    }
    // A handle taken before the variable existed is checked again on write.
    let reg = s.register::<u8>("y").unwrap();
    s.counter("y").unwrap().incr(1).unwrap();
    let e = reg.set(&1).unwrap_err();
    assert!(
        e.to_string().contains("is a counter, not a register"),
        "{e}"
    );
}

#[test]
fn bad_names_say_what_to_fix() {
    let (_d, s) = open();
    let e = s.counter("has space").err().unwrap();
    assert!(matches!(e, Error::Core(CoreError::InvalidName { .. })));
    assert!(e.to_string().contains("letters, digits"), "{e}");
}

#[test]
fn a_value_read_as_another_type_is_an_error_not_garbage() {
    let (_d, s) = open();
    s.register::<String>("r")
        .unwrap()
        .set(&"text".into())
        .unwrap();
    let e = s.register::<u64>("r").unwrap().get().unwrap_err();
    assert!(matches!(e, Error::Value { .. }), "{e}");
    let e = s.register::<Vec<String>>("r").unwrap().get().unwrap_err();
    assert!(matches!(e, Error::Value { .. }), "{e}");
}

#[test]
fn oversized_values_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path());
    cfg.max_value_len = 16;
    let s = Store::open_with(cfg).unwrap();
    let set = s.set::<String>("s").unwrap();
    let e = set.add(&"x".repeat(100)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ValueTooLarge {
                len: 101,
                max: 16,
                ..
            }
        ),
        "{e}"
    );
    assert!(s.variables().unwrap().is_empty());
    assert_eq!(s.last_seq(), 0);
}

#[test]
fn counter_overflow_is_refused_and_changes_nothing() {
    let (_d, s) = open();
    let c = s.counter("c").unwrap();
    c.incr(i64::MAX).unwrap();
    c.incr(i64::MAX).unwrap();
    c.incr(1).unwrap();
    let seq = s.last_seq();
    let e = c.incr(i64::MAX).unwrap_err();
    assert!(matches!(e, Error::Core(CoreError::Crdt { .. })), "{e}");
    assert_eq!(c.value().unwrap(), 2 * i128::from(i64::MAX) + 1);
    assert_eq!(s.last_seq(), seq);
}

#[test]
fn change_feed_reports_local_writes_and_merges() {
    let (_d, a) = open();
    let (_e, b) = open();
    let mut all = b.changes();
    let mut only_x = b.watch("x").unwrap();
    a.counter("x").unwrap().incr(2).unwrap();
    a.counter("y").unwrap().incr(3).unwrap();
    b.counter("z").unwrap().incr(1).unwrap();
    // Ship a's log to b, as replication will.
    for (_, entry) in a.deltas_since(0, 100).unwrap() {
        b.merge(entry.origin, &entry.name, entry.kind, &entry.delta)
            .unwrap();
    }
    let got: Vec<(String, bool)> = std::iter::from_fn(|| all.try_recv().unwrap())
        .map(|c| (c.name, c.local))
        .collect();
    assert_eq!(
        got,
        vec![("z".into(), true), ("x".into(), false), ("y".into(), false)]
    );
    let x = only_x.try_recv().unwrap().unwrap();
    assert_eq!((x.name.as_str(), x.origin), ("x", a.incarnation()));
    assert_eq!(only_x.try_recv().unwrap(), None);
    assert_eq!(b.counter("x").unwrap().value().unwrap(), 2);
}

#[test]
fn merging_a_delta_twice_writes_once() {
    let (_d, a) = open();
    let (_e, b) = open();
    a.set::<u8>("s").unwrap().add(&1).unwrap();
    let (_, entry) = a.deltas_since(0, 1).unwrap().remove(0);
    assert!(b
        .merge(entry.origin, "s", Kind::Set, &entry.delta)
        .unwrap()
        .is_some());
    assert_eq!(
        b.merge(entry.origin, "s", Kind::Set, &entry.delta).unwrap(),
        None
    );
    assert_eq!(b.last_seq(), 1);
}

#[test]
fn hostile_deltas_are_refused_and_change_nothing() {
    let (_d, b) = open();
    let origin = atoll::ReplicaId(42);
    let e = b.merge(origin, "s", Kind::Set, &[1, 99, 3]).unwrap_err();
    assert!(matches!(e, Error::Core(CoreError::BadDelta { .. })), "{e}");
    let big = vec![0u8; b.config().max_delta_len + 1];
    let e = b.merge(origin, "s", Kind::Set, &big).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    // A register write from a clock an hour ahead is refused, with the skew reported.
    let (_f, far) = open();
    far.register::<u8>("r").unwrap().set(&1).unwrap();
    let (_, mut entry) = far.deltas_since(0, 1).unwrap().remove(0);
    let mut state: atoll_crdt::variable::State =
        atoll_crdt::codec::decode(&entry.delta, 1 << 20).unwrap();
    let atoll_crdt::variable::State::Register(r) = &mut state else {
        unreachable!()
    };
    let mut ahead = atoll_crdt::LwwRegister::new();
    let mut ts = r.entry().unwrap().ts;
    ts.physical_ms += 3_600_000;
    ahead.set(ts, origin, atoll_crdt::variable::Bytes::from(vec![2]));
    entry.delta = atoll_crdt::codec::encode(&atoll_crdt::variable::State::Register(ahead));
    let e = b
        .merge(origin, "r", Kind::Register, &entry.delta)
        .unwrap_err();
    assert!(matches!(e, Error::Core(CoreError::ClockSkew { .. })), "{e}");
    assert!(e.to_string().contains("ahead of the local clock"), "{e}");
    assert!(b.variables().unwrap().is_empty());
    assert_eq!(b.last_seq(), 0);
}

#[test]
fn buffered_durability_works_and_flush_makes_it_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open_with(
            Config::new(dir.path()).durability(Durability::Buffered { flush_every_ms: 50 }),
        )
        .unwrap();
        s.counter("c").unwrap().incr(9).unwrap();
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.counter("c").unwrap().value().unwrap(), 9);
}

#[test]
fn replica_id_is_stable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = Store::open(dir.path()).unwrap().replica_id();
    assert_eq!(Store::open(dir.path()).unwrap().replica_id(), id);
}

#[test]
fn the_delta_log_is_bounded_and_checkpoints_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path());
    cfg.checkpoint_every = 5;
    cfg.log_retain = 10;
    {
        let s = Store::open_with(cfg.clone()).unwrap();
        let c = s.counter("c").unwrap();
        for _ in 0..50 {
            c.incr(1).unwrap();
        }
        let log = s.deltas_since(0, 1000).unwrap();
        assert!(log.len() <= 15, "log holds {} entries", log.len());
        assert_eq!(log.last().unwrap().0, 50);
        assert_eq!(s.last_seq(), 50);
    }
    let s = Store::open_with(cfg).unwrap();
    assert_eq!(s.counter("c").unwrap().value().unwrap(), 50);
    assert_eq!(s.last_seq(), 50);
    s.counter("c").unwrap().incr(1).unwrap();
    assert_eq!(s.last_seq(), 51);
}

/// docs/architecture.md promises this: a store can be shared across threads.
#[test]
fn a_store_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let (_d, s) = open();
    send_sync(&s);
    let c = s.counter("n").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    c.incr(1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.value().unwrap(), 100);
}
