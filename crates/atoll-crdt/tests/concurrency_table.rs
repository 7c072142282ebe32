//! Each row of the table "What concurrent operations give" in docs/data-types.md.

use atoll_crdt::variable::{Bytes, Map, MapValue};
use atoll_crdt::*;

const A: ReplicaId = ReplicaId(1);
const B: ReplicaId = ReplicaId(2);

fn ts(ms: u64) -> Timestamp {
    Timestamp {
        physical_ms: ms,
        logical: 0,
    }
}

/// Both replicas join each other's delta; returns A's state after checking both agree.
fn exchange<L: Lattice + std::fmt::Debug>(mut a: L, mut b: L, da: L, db: L) -> L {
    a.join(db);
    b.join(da);
    assert_eq!(a, b, "replicas diverged");
    a
}

#[test]
fn counter_incr_and_decr() {
    let mut base = PNCounter::new();
    base.add(A, 10).unwrap();
    let (mut a, mut b) = (base.clone(), base);
    let (da, db) = (a.add(A, 5).unwrap(), b.add(B, -2).unwrap());
    assert_eq!(exchange(a, b, da, db).value(), 13);
}

#[test]
fn lww_later_timestamp_then_higher_replica() {
    let (mut a, mut b) = (LwwRegister::new(), LwwRegister::new());
    let (da, db) = (a.set(ts(100), A, "x"), b.set(ts(105), B, "y"));
    assert_eq!(exchange(a, b, da, db).get(), Some(&"y"));
    let (mut a, mut b) = (LwwRegister::new(), LwwRegister::new());
    let (da, db) = (a.set(ts(100), A, "x"), b.set(ts(100), B, "y"));
    assert_eq!(
        exchange(a, b, da, db).get(),
        Some(&"y"),
        "B has the higher replica id"
    );
}

#[test]
fn mv_register_keeps_both() {
    let (mut a, mut b) = (MvRegister::new(), MvRegister::new());
    let (da, db) = (a.write(A, "x"), b.write(B, "y"));
    let mut r = exchange(a, b, da, db);
    assert_eq!(r.values().copied().collect::<Vec<_>>(), vec!["x", "y"]);
    r.write(A, "z");
    assert_eq!(r.values().copied().collect::<Vec<_>>(), vec!["z"]);
}

#[test]
fn set_rows() {
    let mut base = OrSet::new();
    base.add(A, "e");
    // remove vs add: add wins
    let (mut a, mut b) = (base.clone(), base.clone());
    let (da, db) = (a.remove(&"e"), b.add(B, "e"));
    assert!(exchange(a, b, da, db).contains(&"e"));
    // remove vs remove
    let (mut a, mut b) = (base.clone(), base);
    let (da, db) = (a.remove(&"e"), b.remove(&"e"));
    assert!(exchange(a, b, da, db).is_empty());
    // add vs add
    let (mut a, mut b) = (OrSet::new(), OrSet::new());
    let (da, db) = (a.add(A, "e"), b.add(B, "e"));
    let r = exchange(a, b, da, db);
    assert_eq!(r.iter().collect::<Vec<_>>(), vec![&"e"]);
}

fn map_update(m: &mut Map, f: impl FnOnce(&MapValue, &CausalContext) -> Causal<MapValue>) -> Map {
    m.update("k".to_string(), |v, c| Ok::<_, CrdtError>(f(v, c)))
        .unwrap()
}

#[test]
fn map_rows() {
    // set {1}; A removes k, B adds 2
    let mut base = Map::new();
    map_update(&mut base, |v, c| {
        MapValue::with_set(set_add(&v.set, c, A, Bytes::from(vec![1])))
    });
    let (mut a, mut b) = (base.clone(), base);
    let da = a.remove(&"k".to_string());
    let db = map_update(&mut b, |v, c| {
        MapValue::with_set(set_add(&v.set, c, B, Bytes::from(vec![2])))
    });
    let r = exchange(a, b, da, db);
    let set: Vec<_> = r
        .get(&"k".to_string())
        .unwrap()
        .set
        .0
        .keys()
        .cloned()
        .collect();
    assert_eq!(set, vec![Bytes::from(vec![2u8])]);

    // counter 5 from A; A removes k, B increments by 1
    let mut base = Map::new();
    base.update("k".to_string(), |v, c| {
        v.counter.add(c, A, 5).map(MapValue::with_counter)
    })
    .unwrap();
    let (mut a, mut b) = (base.clone(), base);
    let da = a.remove(&"k".to_string());
    let db = b
        .update("k".to_string(), |v, c| {
            v.counter.add(c, B, 1).map(MapValue::with_counter)
        })
        .unwrap();
    let r = exchange(a, b, da, db);
    assert_eq!(r.get(&"k".to_string()).unwrap().counter.value(), 1);

    // register x; A removes k, B sets y
    let mut base = Map::new();
    map_update(&mut base, |v, c| {
        MapValue::with_register(v.register.set(c, A, ts(1), Bytes::from(vec![b'x'])))
    });
    let (mut a, mut b) = (base.clone(), base);
    let da = a.remove(&"k".to_string());
    let db = map_update(&mut b, |v, c| {
        MapValue::with_register(v.register.set(c, B, ts(2), Bytes::from(vec![b'y'])))
    });
    let r = exchange(a, b, da, db);
    assert_eq!(
        r.get(&"k".to_string()).unwrap().register.get(),
        Some(&Bytes::from(vec![b'y']))
    );
}

#[test]
fn bag_rows() {
    let mut base = Bag::new();
    let (e, _) = base.insert(A, "e");
    // A takes e, B tries to take: B owns nothing.
    let (mut a, mut b) = (base.clone(), base.clone());
    let (id, v, da) = a.take(A).unwrap();
    assert_eq!((id, v), (e, "e"));
    assert!(b.take(B).is_none());
    let r = exchange(a, b, da, Bag::new());
    assert!(r.is_empty());
    // A transfers e to B; B can take it only once the transfer arrives.
    let (mut a, mut b) = (base.clone(), base);
    let t = a.transfer(A, e, B).unwrap();
    assert!(b.take(B).is_none());
    b.join(t);
    let (_, v, dt) = b.take(B).unwrap();
    assert_eq!(v, "e");
    a.join(dt);
    assert!(a.is_empty() && b.is_empty());
    // insert x twice: two distinct elements
    let (mut a, mut b) = (Bag::new(), Bag::new());
    let ((ia, da), (ib, db)) = (a.insert(A, "x"), b.insert(B, "x"));
    assert_ne!(ia, ib);
    assert_eq!(exchange(a, b, da, db).len(), 2);
}
