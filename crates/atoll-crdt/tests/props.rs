//! Property tests: lattice laws, the delta law and convergence for every type.
//!
//! Random operations are spread over 2 to 5 replicas; deltas are delivered to
//! random replicas in random order, some more than once, some never until the
//! end, and whole states are sent too. Finally every replica receives every delta
//! in its own random order, and all must be equal.

use atoll_crdt::variable::{Bytes, Map, MapValue};
use atoll_crdt::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

fn rid(i: usize) -> ReplicaId {
    ReplicaId(0x1000 + i as u64)
}

trait Model {
    type S: Lattice + Debug + Default + serde::Serialize;
    type Op: Debug + Clone;
    fn op() -> BoxedStrategy<Self::Op>;
    /// Applies `op` at replica `r` of `n`; returns the delta.
    fn apply(s: &mut Self::S, r: usize, n: usize, op: &Self::Op) -> Self::S;
    /// What of `d` the state `s` does not already have.
    fn strip(s: &mut Self::S, d: Self::S) -> Self::S;
    /// Builds (`true`) or drops the state's dot index, for types that keep one.
    fn set_index(_s: &mut Self::S, _on: bool) {}
    /// Whether `s` has seen nothing of `d` (causal types; others say false).
    fn seen_none(_s: &Self::S, _d: &Self::S) -> bool {
        false
    }
}

#[derive(Debug, Clone)]
enum Step<Op> {
    Local(usize, Op),
    Deliver(usize, usize),
    /// The join of up to 8 deltas from the `m`th on, as one interval.
    DeliverJoined(usize, usize, usize),
    SendState(usize, usize),
}

fn steps<M: Model>() -> impl Strategy<Value = (usize, Vec<Step<M::Op>>, Vec<u32>)> {
    let step = prop_oneof![
        3 => (0..5usize, M::op()).prop_map(|(r, o)| Step::Local(r, o)),
        2 => (0..1000usize, 0..5usize).prop_map(|(m, t)| Step::Deliver(m, t)),
        1 => (0..1000usize, 1..8usize, 0..5usize).prop_map(|(m, k, t)| Step::DeliverJoined(m, k, t)),
        1 => (0..5usize, 0..5usize).prop_map(|(f, t)| Step::SendState(f, t)),
    ];
    (
        2..=5usize,
        prop::collection::vec(step, 1..60),
        prop::collection::vec(any::<u32>(), 200),
    )
}

struct Run<S> {
    replicas: Vec<S>,
    deltas: Vec<S>,
    midway: Vec<S>,
}

/// Runs the steps, checking the delta law at every local op.
fn run<M: Model>(n: usize, steps: &[Step<M::Op>]) -> Result<Run<M::S>, TestCaseError> {
    let mut replicas: Vec<M::S> = (0..n).map(|_| M::S::default()).collect();
    let mut deltas = Vec::new();
    for step in steps {
        match step {
            Step::Local(r, op) => {
                let r = r % n;
                let before = replicas[r].clone();
                let delta = M::apply(&mut replicas[r], r, n, op);
                let mut joined = before;
                joined.join(delta.clone());
                prop_assert_eq!(
                    &joined,
                    &replicas[r],
                    "joining the delta differs from applying the op"
                );
                deltas.push(delta);
            }
            Step::Deliver(..) | Step::DeliverJoined(..) => {
                if !deltas.is_empty() {
                    let (d, to) = match *step {
                        Step::Deliver(m, to) => (deltas[m % deltas.len()].clone(), to),
                        Step::DeliverJoined(m, k, to) => {
                            let mut d = M::S::default();
                            for x in deltas.iter().cycle().skip(m % deltas.len()).take(k) {
                                d.join(x.clone());
                            }
                            (d, to)
                        }
                        _ => unreachable!(),
                    };
                    // Redundancy removal: joining what is new has the same effect.
                    let mut here = replicas[to % n].clone();
                    let stripped = M::strip(&mut here, d.clone());
                    if M::seen_none(&replicas[to % n], &d) {
                        // Receivers log such a delta as it came, unstripped.
                        prop_assert_eq!(&stripped, &d, "an unseen delta was stripped");
                    }
                    let mut with_stripped = replicas[to % n].clone();
                    with_stripped.join(stripped);
                    // With and without the dot index, strip and join agree.
                    let (mut indexed, mut plain) =
                        (replicas[to % n].clone(), replicas[to % n].clone());
                    M::set_index(&mut indexed, true);
                    M::set_index(&mut plain, false);
                    let (s_indexed, s_plain) = (
                        M::strip(&mut indexed, d.clone()),
                        M::strip(&mut plain, d.clone()),
                    );
                    prop_assert_eq!(&s_indexed, &s_plain, "strip differs with the index");
                    M::set_index(&mut indexed, true);
                    M::set_index(&mut plain, false);
                    indexed.join(d.clone());
                    plain.join(d.clone());
                    prop_assert_eq!(&indexed, &plain, "join differs with the index");
                    replicas[to % n].join(d);
                    prop_assert_eq!(&with_stripped, &replicas[to % n], "strip lost information");
                }
            }
            Step::SendState(from, to) => {
                let s = replicas[from % n].clone();
                replicas[to % n].join(s);
            }
        }
    }
    let midway = replicas.clone();
    Ok(Run {
        replicas,
        deltas,
        midway,
    })
}

fn converge<S: Lattice + Debug + serde::Serialize>(
    run: &mut Run<S>,
    keys: &[u32],
) -> Result<(), TestCaseError> {
    for (i, rep) in run.replicas.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..run.deltas.len()).collect();
        order.sort_by_key(|&j| keys[(j * 7 + i * 13) % keys.len()].wrapping_mul(j as u32 + 1));
        for j in order {
            rep.join(run.deltas[j].clone());
        }
        // A duplicate of everything changes nothing.
        let again = rep.clone();
        for d in &run.deltas {
            rep.join(d.clone());
        }
        prop_assert_eq!(&again, rep);
    }
    // Equal states encode alike, whatever order their deltas came in: so
    // a consistency check's digests (of the encoding) are equal too.
    let encode = |s: &S| postcard::to_allocvec(s).expect("encodes");
    let first = encode(&run.replicas[0]);
    for r in &run.replicas[1..] {
        prop_assert_eq!(&run.replicas[0], r);
        prop_assert_eq!(&first, &encode(r), "equal states encode differently");
    }
    Ok(())
}

fn laws<S: Lattice + Debug>(states: &[S]) -> Result<(), TestCaseError> {
    let a = &states[0];
    let b = &states[1 % states.len()];
    let c = &states[states.len() - 1];
    let mut ab = a.clone();
    ab.join(b.clone());
    let mut ba = b.clone();
    ba.join(a.clone());
    prop_assert_eq!(&ab, &ba, "join is not commutative");
    let mut ab_c = ab.clone();
    ab_c.join(c.clone());
    let mut bc = b.clone();
    bc.join(c.clone());
    let mut a_bc = a.clone();
    a_bc.join(bc);
    prop_assert_eq!(&ab_c, &a_bc, "join is not associative");
    let mut aa = a.clone();
    aa.join(a.clone());
    prop_assert_eq!(&aa, a, "join is not idempotent");
    Ok(())
}

fn check<M: Model>(
    n: usize,
    steps: &[Step<M::Op>],
    keys: &[u32],
) -> Result<Run<M::S>, TestCaseError> {
    let mut r = run::<M>(n, steps)?;
    laws(&r.midway)?;
    converge(&mut r, keys)?;
    Ok(r)
}

struct G;
impl Model for G {
    type S = GCounter;
    type Op = u32;
    fn op() -> BoxedStrategy<u32> {
        any::<u32>().boxed()
    }
    fn strip(s: &mut GCounter, d: GCounter) -> GCounter {
        s.strip(d)
    }
    fn apply(s: &mut GCounter, r: usize, _: usize, op: &u32) -> GCounter {
        s.incr(rid(r), u64::from(*op)).unwrap()
    }
}

struct Pn;
impl Model for Pn {
    type S = PNCounter;
    type Op = i32;
    fn op() -> BoxedStrategy<i32> {
        any::<i32>().boxed()
    }
    fn strip(s: &mut PNCounter, d: PNCounter) -> PNCounter {
        s.strip(d)
    }
    fn apply(s: &mut PNCounter, r: usize, _: usize, op: &i32) -> PNCounter {
        s.add(rid(r), i64::from(*op)).unwrap()
    }
}

struct Lww;
impl Model for Lww {
    type S = LwwRegister<u8>;
    type Op = (u8, u8);
    fn op() -> BoxedStrategy<(u8, u8)> {
        (0..4u8, 0..4u8).boxed()
    }
    fn strip(s: &mut LwwRegister<u8>, d: LwwRegister<u8>) -> LwwRegister<u8> {
        s.strip(d)
    }
    fn apply(s: &mut LwwRegister<u8>, r: usize, _: usize, &(ts, v): &(u8, u8)) -> LwwRegister<u8> {
        let ts = Timestamp {
            physical_ms: u64::from(ts),
            logical: 0,
        };
        s.set(ts, rid(r), v)
    }
}

struct Mv;
impl Model for Mv {
    type S = MvRegister<u8>;
    type Op = u8;
    fn op() -> BoxedStrategy<u8> {
        (0..4u8).boxed()
    }
    fn strip(s: &mut MvRegister<u8>, d: MvRegister<u8>) -> MvRegister<u8> {
        s.strip(d)
    }
    fn apply(s: &mut MvRegister<u8>, r: usize, _: usize, v: &u8) -> MvRegister<u8> {
        s.write(rid(r), *v)
    }
}

struct Set;
impl Model for Set {
    type S = OrSet<u8>;
    type Op = (bool, u8);
    fn op() -> BoxedStrategy<(bool, u8)> {
        (any::<bool>(), 0..6u8).boxed()
    }
    fn strip(s: &mut OrSet<u8>, d: OrSet<u8>) -> OrSet<u8> {
        s.strip(d)
    }
    fn set_index(s: &mut OrSet<u8>, on: bool) {
        s.set_index(on);
    }
    fn seen_none(s: &OrSet<u8>, d: &OrSet<u8>) -> bool {
        s.context().is_disjoint(d.context())
    }
    fn apply(s: &mut OrSet<u8>, r: usize, _: usize, &(add, x): &(bool, u8)) -> OrSet<u8> {
        if add {
            s.add(rid(r), x)
        } else {
            s.remove(&x)
        }
    }
}

#[derive(Debug, Clone)]
enum MapOp {
    Incr(u8, i8),
    Set(u8, u8, u8),
    Add(u8, u8),
    RemoveMember(u8, u8),
    Remove(u8),
}

struct M;
impl Model for M {
    type S = Map;
    type Op = MapOp;
    fn op() -> BoxedStrategy<MapOp> {
        let k = 0..3u8;
        prop_oneof![
            (k.clone(), any::<i8>()).prop_map(|(k, n)| MapOp::Incr(k, n)),
            (k.clone(), 0..4u8, 0..3u8).prop_map(|(k, ts, v)| MapOp::Set(k, ts, v)),
            (k.clone(), 0..3u8).prop_map(|(k, x)| MapOp::Add(k, x)),
            (k.clone(), 0..3u8).prop_map(|(k, x)| MapOp::RemoveMember(k, x)),
            k.prop_map(MapOp::Remove),
        ]
        .boxed()
    }
    fn strip(s: &mut Map, d: Map) -> Map {
        s.strip(d)
    }
    fn seen_none(s: &Map, d: &Map) -> bool {
        s.context().is_disjoint(d.context())
    }
    fn apply(s: &mut Map, r: usize, _: usize, op: &MapOp) -> Map {
        let r = rid(r);
        let key = |k: &u8| format!("k{k}");
        match op {
            MapOp::Incr(k, n) => s
                .update(key(k), |v, c| {
                    v.counter
                        .add(c, r, i64::from(*n))
                        .map(MapValue::with_counter)
                })
                .unwrap(),
            MapOp::Set(k, ts, x) => {
                let ts = Timestamp {
                    physical_ms: u64::from(*ts),
                    logical: 0,
                };
                s.update(key(k), |v, c| {
                    Ok::<_, CrdtError>(MapValue::with_register(v.register.set(
                        c,
                        r,
                        ts,
                        Bytes::from(vec![*x]),
                    )))
                })
                .unwrap()
            }
            MapOp::Add(k, x) => s
                .update(key(k), |v, c| {
                    Ok::<_, CrdtError>(MapValue::with_set(set_add(
                        &v.set,
                        c,
                        r,
                        Bytes::from(vec![*x]),
                    )))
                })
                .unwrap(),
            MapOp::RemoveMember(k, x) => s
                .update(key(k), |v, _| {
                    Ok::<_, CrdtError>(MapValue::with_set(set_remove(
                        &v.set,
                        &Bytes::from(vec![*x]),
                    )))
                })
                .unwrap(),
            MapOp::Remove(k) => s.remove(&key(k)),
        }
    }
}

#[derive(Debug, Clone)]
enum BagOp {
    Insert(u8),
    Take,
    Transfer(usize, usize),
}

struct B;
impl Model for B {
    type S = Bag<u8>;
    type Op = BagOp;
    fn op() -> BoxedStrategy<BagOp> {
        prop_oneof![
            any::<u8>().prop_map(BagOp::Insert),
            Just(BagOp::Take),
            (0..8usize, 0..5usize).prop_map(|(e, to)| BagOp::Transfer(e, to)),
        ]
        .boxed()
    }
    fn strip(s: &mut Bag<u8>, d: Bag<u8>) -> Bag<u8> {
        s.strip(d)
    }
    fn seen_none(s: &Bag<u8>, d: &Bag<u8>) -> bool {
        s.context().is_disjoint(d.context())
    }
    fn set_index(s: &mut Bag<u8>, on: bool) {
        s.set_index(on);
    }
    fn apply(s: &mut Bag<u8>, r: usize, n: usize, op: &BagOp) -> Bag<u8> {
        match op {
            BagOp::Insert(v) => s.insert(rid(r), *v).1,
            BagOp::Take => s.take(rid(r)).map(|t| t.2).unwrap_or_default(),
            BagOp::Transfer(e, to) => {
                let owned: Vec<ElementId> = s
                    .iter()
                    .filter(|(_, x)| x.owner == rid(r))
                    .map(|(id, _)| id)
                    .collect();
                if owned.is_empty() {
                    return Bag::default();
                }
                s.transfer(rid(r), owned[e % owned.len()], rid(to % n))
                    .unwrap()
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn gcounter_converges_to_sum((n, steps, keys) in steps::<G>()) {
        let r = check::<G>(n, &steps, &keys)?;
        let sum: u128 = steps.iter().filter_map(|s| match s { Step::Local(_, o) => Some(u128::from(*o)), _ => None }).sum();
        prop_assert_eq!(r.replicas[0].value(), sum);
    }

    #[test]
    fn pncounter_converges_to_sum((n, steps, keys) in steps::<Pn>()) {
        let r = check::<Pn>(n, &steps, &keys)?;
        let sum: i128 = steps.iter().filter_map(|s| match s { Step::Local(_, o) => Some(i128::from(*o)), _ => None }).sum();
        prop_assert_eq!(r.replicas[0].value(), sum);
    }

    #[test]
    fn lww_register_converges_to_greatest_write((n, steps, keys) in steps::<Lww>()) {
        let r = check::<Lww>(n, &steps, &keys)?;
        let best = steps.iter().filter_map(|s| match s {
            Step::Local(rep, (ts, v)) => Some((*ts, rid(rep % n), *v)),
            _ => None,
        }).max();
        prop_assert_eq!(r.replicas[0].get().copied(), best.map(|b| b.2));
    }

    #[test]
    fn mv_register_converges((n, steps, keys) in steps::<Mv>()) {
        check::<Mv>(n, &steps, &keys)?;
    }

    #[test]
    fn orset_converges((n, steps, keys) in steps::<Set>()) {
        check::<Set>(n, &steps, &keys)?;
    }

    #[test]
    fn ormap_converges((n, steps, keys) in steps::<M>()) {
        check::<M>(n, &steps, &keys)?;
    }

    #[test]
    fn bag_converges((n, steps, keys) in steps::<B>()) {
        check::<B>(n, &steps, &keys)?;
    }

    /// Over random interleavings and transfers, no element is taken twice, and
    /// every inserted, untaken element is present exactly once after convergence.
    #[test]
    fn bag_never_takes_twice((n, steps, keys) in steps::<B>()) {
        let mut replicas: Vec<Bag<u8>> = (0..n).map(|_| Bag::new()).collect();
        let mut deltas = Vec::new();
        let mut inserted = BTreeSet::new();
        let mut taken = BTreeMap::new();
        for step in &steps {
            match step {
                Step::Local(r, BagOp::Take) => {
                    let r = r % n;
                    if let Some((id, _, d)) = replicas[r].take(rid(r)) {
                        prop_assert!(taken.insert(id, r).is_none(), "{:?} taken twice", id);
                        deltas.push(d);
                    }
                }
                Step::Local(r, BagOp::Insert(v)) => {
                    let (id, d) = replicas[r % n].insert(rid(r % n), *v);
                    inserted.insert(id);
                    deltas.push(d);
                }
                Step::Local(r, op) => {
                    let d = B::apply(&mut replicas[r % n], r % n, n, op);
                    deltas.push(d);
                }
                Step::Deliver(m, to) | Step::DeliverJoined(m, _, to) => if !deltas.is_empty() {
                    let d = deltas[m % deltas.len()].clone();
                    replicas[to % n].join(d);
                }
                Step::SendState(f, t) => {
                    let s = replicas[f % n].clone();
                    replicas[t % n].join(s);
                }
            }
        }
        let mut r = Run { replicas, deltas, midway: vec![] };
        converge(&mut r, &keys)?;
        let present: BTreeSet<ElementId> = r.replicas[0].iter().map(|(id, _)| id).collect();
        let expected: BTreeSet<ElementId> = inserted.iter().filter(|id| !taken.contains_key(id)).copied().collect();
        prop_assert_eq!(present.len(), r.replicas[0].len());
        prop_assert_eq!(present, expected);
        // After convergence the owners can take what is left: still never twice,
        // and nothing is stranded.
        for i in 0..n {
            while let Some((id, _, d)) = r.replicas[i].take(rid(i)) {
                prop_assert!(taken.insert(id, i).is_none(), "{:?} taken twice", id);
                for j in 0..n { r.replicas[j].join(d.clone()); }
            }
        }
        prop_assert!(r.replicas.iter().all(|b| b.is_empty()));
        prop_assert!(taken.keys().all(|id| inserted.contains(id)));
    }
}

proptest! {
    /// `Bytes` compares (and equals) exactly as the byte slices it holds:
    /// its B-tree lookups by `&[u8]` rely on it.
    #[test]
    fn bytes_compare_as_their_slices(
        a in prop::collection::vec(any::<u8>(), 0..40),
        b in prop::collection::vec(any::<u8>(), 0..40),
        common in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        // With a shared prefix too, so that long equal runs are compared.
        let (pa, pb) = ([&common[..], &a[..]].concat(), [&common[..], &b[..]].concat());
        for (x, y) in [(&a, &b), (&pa, &pb), (&pa, &pa), (&a, &pa)] {
            let (bx, by) = (Bytes::from(&x[..]), Bytes::from(&y[..]));
            prop_assert_eq!(bx.cmp(&by), x.cmp(y));
            prop_assert_eq!(bx == by, x == y);
        }
    }
}
