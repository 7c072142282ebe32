//! The operations' own tests: each applied to a state, as the keyspace
//! applies it.

use super::*;

fn ctx(node: u64) -> OpCtx {
    OpCtx {
        replica: ReplicaId(node * 10),
        node: ReplicaId(node),
        ts: Timestamp::default(),
    }
}

/// An operation travels: an owned variable's operations go to its owner.
#[test]
fn an_op_round_trips_through_the_wire_encoding() {
    let ops = [
        Op::CounterAdd { by: -3 },
        Op::SetChange {
            add: vec![Bytes::from(vec![1, 2])],
            remove: vec![Bytes::from(vec![3])],
        },
        Op::MapChange {
            key: "k".into(),
            incr: Some(1),
            set: Some(Bytes::from(vec![9])),
            add: None,
        },
        Op::BagTransfer {
            id: ElementId::new(ReplicaId(4), 7),
            to: ReplicaId(5),
        },
    ];
    for op in ops {
        let bytes = postcard::to_allocvec(&op).unwrap();
        assert_eq!(postcard::from_bytes::<Op>(&bytes).unwrap(), op);
    }
}

#[test]
fn an_op_on_a_state_of_another_kind_is_refused_and_changes_nothing() {
    let mut state = State::new(Kind::Set);
    let before = state.clone();
    let r = Op::CounterAdd { by: 1 }.apply("s", &mut state, &ctx(1));
    assert!(
        matches!(
            r,
            Err(Error::TypeMismatch {
                found: Kind::Set,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(state, before);
}

#[test]
fn a_map_change_that_overflows_its_counter_changes_no_field() {
    let mut state = State::new(Kind::Map);
    let op = |incr| Op::MapChange {
        key: "k".into(),
        incr: Some(incr),
        set: Some(Bytes::from(vec![1])),
        add: Some(Bytes::from(vec![2])),
    };
    // The field counts increments in 64 bits: the third overflows.
    for _ in 0..2 {
        op(i64::MAX).apply("m", &mut state, &ctx(1)).unwrap();
    }
    let before = state.clone();
    let r = op(i64::MAX).apply("m", &mut state, &ctx(1));
    assert!(matches!(r, Err(Error::Crdt { .. })), "{r:?}");
    assert_eq!(state, before);
}

/// A strong operation decides on the state as seen here, and one it
/// refuses writes nothing (no delta), so that it leaves no trace.
#[test]
fn strong_operations_decide_on_the_state_and_a_refusal_writes_nothing() {
    let b = |x: u8| Bytes::from(vec![x]);
    // Compare-and-set.
    let mut reg = State::new(Kind::Register);
    let cas = |expected: Option<Bytes>, value| Op::RegisterCompareAndSet { expected, value };
    let (d, a) = cas(None, b(1)).apply("r", &mut reg, &ctx(1)).unwrap();
    assert!(d.is_some() && a == Answer::Swapped(true));
    let (d, a) = cas(None, b(2)).apply("r", &mut reg, &ctx(1)).unwrap();
    assert!(
        d.is_none() && a == Answer::Swapped(false),
        "written once only"
    );
    let (d, a) = cas(Some(b(1)), b(3)).apply("r", &mut reg, &ctx(1)).unwrap();
    assert!(d.is_some() && a == Answer::Swapped(true));
    let State::Register(r) = &reg else { panic!() };
    assert_eq!(r.get(), Some(&b(3)));
    // Decrement-if: never below the floor.
    let mut counter = State::new(Kind::Counter);
    Op::CounterAdd { by: 5 }
        .apply("c", &mut counter, &ctx(1))
        .unwrap();
    let dec = |by| Op::CounterDecrementIf { by, floor: 0 };
    let (d, a) = dec(3).apply("c", &mut counter, &ctx(1)).unwrap();
    assert!(d.is_some());
    assert_eq!(
        a,
        Answer::Decremented {
            done: true,
            value: 2
        }
    );
    let (d, a) = dec(3).apply("c", &mut counter, &ctx(1)).unwrap();
    assert!(d.is_none());
    assert_eq!(
        a,
        Answer::Decremented {
            done: false,
            value: 2
        }
    );
    // Compare-and-set of a map entry's register; the other fields stay.
    let mut map = State::new(Kind::Map);
    let mcas = |expected: Option<Bytes>, value| Op::MapCompareAndSet {
        key: "k".into(),
        expected,
        value,
    };
    Op::MapChange {
        key: "k".into(),
        incr: Some(4),
        set: None,
        add: None,
    }
    .apply("m", &mut map, &ctx(1))
    .unwrap();
    let (d, a) = mcas(Some(b(1)), b(2))
        .apply("m", &mut map, &ctx(1))
        .unwrap();
    assert!(d.is_none() && a == Answer::Swapped(false), "never written");
    let (d, a) = mcas(None, b(2)).apply("m", &mut map, &ctx(1)).unwrap();
    assert!(d.is_some() && a == Answer::Swapped(true));
    let (d, a) = mcas(None, b(3)).apply("m", &mut map, &ctx(2)).unwrap();
    assert!(
        d.is_none() && a == Answer::Swapped(false),
        "written once only"
    );
    let State::Map(m) = &map else { panic!() };
    let entry = m.get(&"k".to_string()).unwrap();
    assert_eq!(entry.register.get(), Some(&b(2)));
    assert_eq!(entry.counter.value(), 4);
    // A claim: exactly one add of a member wins.
    let mut set = State::new(Kind::Set);
    let claim = || Op::SetAddIfAbsent { member: b(9) };
    let (d, a) = claim().apply("s", &mut set, &ctx(1)).unwrap();
    assert!(d.is_some() && a == Answer::Claimed(true));
    let (d, a) = claim().apply("s", &mut set, &ctx(2)).unwrap();
    assert!(d.is_none() && a == Answer::Claimed(false));
}

#[test]
fn a_bag_transfer_to_its_owner_changes_nothing_and_others_elements_are_refused() {
    let mut state = State::new(Kind::Bag);
    let insert = Op::BagInsert {
        values: vec![Bytes::from(vec![1])],
    };
    let (_, answer) = insert.apply("b", &mut state, &ctx(1)).unwrap();
    let Answer::Inserted(ids) = answer else {
        panic!("{answer:?}")
    };
    let to_self = Op::BagTransfer {
        id: ids[0],
        to: ReplicaId(1),
    };
    let (delta, _) = to_self.clone().apply("b", &mut state, &ctx(1)).unwrap();
    assert!(delta.is_none());
    // Node 2 owns none of it, whether it names itself or another.
    for to in [ReplicaId(2), ReplicaId(3)] {
        let op = Op::BagTransfer { id: ids[0], to };
        let r = op.apply("b", &mut state, &ctx(2));
        assert!(matches!(r, Err(Error::Crdt { .. })), "{r:?}");
    }
}
