//! Every decoder survives random, truncated and bit-flipped bytes with an error.

use atoll_crdt::codec;
use atoll_crdt::codec::{decode, encode, DEFAULT_MAX_LEN};
use atoll_crdt::variable::{Bytes, DecodedPart, Kind, MapValue, State};
use atoll_crdt::*;
use proptest::prelude::*;

fn sample_states() -> Vec<State> {
    let a = ReplicaId(1);
    let b = ReplicaId(2);
    let mut set = OrSet::new();
    set.add(a, Bytes::from(vec![1, 2]));
    set.add(b, Bytes::from(vec![3]));
    set.remove(&Bytes::from(vec![1, 2]));
    let mut bag = Bag::new();
    let (id, _) = bag.insert(a, Bytes::from(vec![9]));
    bag.insert(b, Bytes::from(vec![8]));
    bag.transfer(a, id, b).unwrap();
    let mut map = variable::Map::new();
    map.update("k".to_string(), |v, c| {
        v.counter.add(c, a, 3).map(MapValue::with_counter)
    })
    .unwrap();
    let mut mv = MvRegister::new();
    mv.write(a, Bytes::from(vec![1]));
    let mut counter = PNCounter::new();
    counter.add(a, -4).unwrap();
    let mut reg = LwwRegister::new();
    reg.set(
        Timestamp {
            physical_ms: 7,
            logical: 1,
        },
        a,
        Bytes::from(vec![5]),
    );
    let mut all = vec![
        State::Set(set),
        State::Bag(bag),
        State::Map(map),
        State::MvRegister(mv),
        State::Counter(counter),
        State::Register(reg),
    ];
    all.extend(Kind::ALL.iter().map(|k| State::new(*k)));
    all
}

#[test]
fn every_truncation_is_an_error() {
    for s in sample_states() {
        let bytes = encode(&s);
        assert_eq!(decode::<State>(&bytes, DEFAULT_MAX_LEN).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(
                decode::<State>(&bytes[..cut], DEFAULT_MAX_LEN).is_err(),
                "{s:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn a_state_with_a_dot_outside_its_context_is_refused() {
    // A hand-built set whose element dot is not in the context: decodes, fails validation.
    let mut bytes = vec![codec::FORMAT_VERSION];
    // State::Set = variant 3; store: 1 entry, key len 1 byte 0x07, 1 dot (replica 5, counter 1); ctx: empty vv, empty cloud.
    bytes.extend_from_slice(&[3, 1, 1, 7, 1, 5, 1, 0, 0]);
    let err = decode::<State>(&bytes, DEFAULT_MAX_LEN).unwrap_err();
    assert!(matches!(err, codec::DecodeError::Invalid(_)), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<State>(&bytes, DEFAULT_MAX_LEN);
        let mut v = vec![codec::FORMAT_VERSION];
        v.extend_from_slice(&bytes);
        let _ = decode::<State>(&v, DEFAULT_MAX_LEN);
    }

    #[test]
    fn flipped_bytes_never_panic(which in 0..12usize, pos in any::<usize>(), bit in 0..8u8) {
        let states = sample_states();
        let mut bytes = encode(&states[which % states.len()]);
        let p = pos % bytes.len();
        bytes[p] ^= 1 << bit;
        if let Ok(s) = decode::<State>(&bytes, DEFAULT_MAX_LEN) {
            // Whatever decodes is valid and re-encodes to a decodable value.
            prop_assert!(s.validate().is_ok());
            prop_assert!(decode::<State>(&encode(&s), DEFAULT_MAX_LEN).is_ok());
        }
    }

    #[test]
    fn huge_length_prefixes_do_not_allocate(len in any::<u32>()) {
        // A set claiming `len` elements in a few bytes must fail fast.
        let mut v = vec![codec::FORMAT_VERSION, 3];
        let mut n = u64::from(len) | 1 << 40;
        while n >= 0x80 { v.push((n as u8) | 0x80); n >>= 7; }
        v.push(n as u8);
        prop_assert!(decode::<State>(&v, DEFAULT_MAX_LEN).is_err());
    }
}

/// A map's keys must come in strictly increasing order, as the encoder writes
/// them: reordered or repeated keys are refused, not silently merged.
#[test]
fn map_keys_out_of_order_are_refused() {
    use atoll_crdt::codec::decode_unvalidated;
    let dots = |c: u64| {
        let mut d = DotSet::new();
        d.insert(Dot::new(ReplicaId(1), c));
        d
    };
    // A map encodes exactly as its sequence of pairs.
    let sorted = encode(&vec![(1u8, dots(1)), (2u8, dots(2))]);
    let map: DotMap<u8, DotSet> = decode_unvalidated(&sorted, DEFAULT_MAX_LEN).unwrap();
    assert_eq!(map.0.len(), 2);
    assert_eq!(sorted, encode(&map));
    for bad in [
        vec![(2u8, dots(2)), (1u8, dots(1))],
        vec![(1u8, dots(1)), (1u8, dots(2))],
    ] {
        // postcard keeps no custom message: that it fails is what counts.
        let decoded = decode_unvalidated::<DotMap<u8, DotSet>>(&encode(&bad), DEFAULT_MAX_LEN);
        assert!(decoded.is_err(), "{bad:?} decoded");
    }
}

/// Larger states of each causal kind, with removals (so that their contexts
/// hold dots of no live entry), for cutting into parts.
fn large_states() -> Vec<State> {
    let (a, b) = (ReplicaId(1), ReplicaId(2));
    let mut set = OrSet::new();
    let mut bag = Bag::new();
    let mut map = variable::Map::new();
    for i in 0..300u32 {
        let r = if i % 3 == 0 { b } else { a };
        set.add(r, Bytes::from(i.to_be_bytes()));
        bag.insert(r, Bytes::from(i.to_le_bytes()));
        map.update(format!("key-{i:04}"), |v, c| {
            v.counter
                .add(c, r, i64::from(i))
                .map(MapValue::with_counter)
        })
        .unwrap();
    }
    for i in (0..300u32).step_by(7) {
        set.remove(&Bytes::from(i.to_be_bytes()));
        map.remove(&format!("key-{i:04}"));
    }
    for _ in 0..40 {
        bag.take(a).unwrap();
    }
    vec![State::Set(set), State::Bag(bag), State::Map(map)]
}

/// Cuts `s` into parts of about `max` bytes, as a sender does.
fn parts_of(s: &State, max: usize) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut after = None;
    loop {
        let part = s.encode_part(after.as_deref(), max).unwrap();
        parts.push(part.bytes);
        match part.next {
            Some(next) => after = Some(next),
            None => return parts,
        }
    }
}

fn decode_parts(parts: &[Vec<u8>]) -> Vec<DecodedPart> {
    parts
        .iter()
        .map(|p| DecodedPart::decode(p, DEFAULT_MAX_LEN).unwrap().0)
        .collect()
}

/// The encoding spliced from the parts' own bytes, as a receiver logs it.
fn spliced(parts: &[Vec<u8>], state: &State) -> Vec<u8> {
    let decoded: Vec<_> = parts
        .iter()
        .map(|p| DecodedPart::decode(p, DEFAULT_MAX_LEN).unwrap())
        .collect();
    let entries = decoded.iter().map(|(d, _)| d.entries()).sum();
    let ranges: Vec<(&[u8], _)> = parts
        .iter()
        .zip(decoded)
        .map(|(p, (_, r))| (&p[..], r))
        .collect();
    variable::splice_parts(&ranges, entries, state.context())
}

/// A stored state is cut into the parts its tree would be: the same bytes,
/// the same cursors.
#[test]
fn a_stored_state_is_cut_into_the_parts_of_its_tree() {
    for s in sample_states().into_iter().chain(large_states()) {
        let whole = encode(&s);
        for max in [0, 1, 40, 300, 1000, 4096, usize::MAX] {
            let mut from_tree = Vec::new();
            let mut after = None;
            loop {
                let part = s.encode_part(after.as_deref(), max).unwrap();
                after = part.next.clone();
                from_tree.push(part);
                if after.is_none() {
                    break;
                }
            }
            let from_bytes = variable::parts_of_encoded(&whole, max).unwrap();
            assert_eq!(from_bytes, from_tree, "{:?}, max {max}", s.kind());
        }
    }
    // An empty set: one part, its context.
    let mut set = OrSet::new();
    set.add(ReplicaId(1), Bytes::from(vec![1]));
    set.remove(&Bytes::from(vec![1]));
    let s = State::Set(set);
    assert_eq!(
        variable::parts_of_encoded(&encode(&s), 10).unwrap(),
        vec![s.encode_part(None, 10).unwrap()]
    );
    // A cut-short encoding is an error, not a panic.
    let whole = encode(&large_states()[0]);
    for cut in [1, 2, 3, whole.len() / 2, whole.len() - 1] {
        let _ = variable::parts_of_encoded(&whole[..cut], 100);
    }
    assert!(variable::parts_of_encoded(&whole[..whole.len() / 2], 100).is_err());
}

#[test]
fn a_state_cut_into_parts_of_any_size_assembles_back() {
    for s in sample_states().into_iter().chain(large_states()) {
        let whole = encode(&s);
        for max in [0, 1, 40, 300, 1000, 4096, usize::MAX] {
            let parts = parts_of(&s, max);
            if s.context().is_some() {
                if max == 0 {
                    assert_eq!(parts.len(), whole_entries(&s).max(1), "one entry a part");
                }
                if max >= whole.len() {
                    assert_eq!(parts.len(), 1, "{max} holds all {} bytes", whole.len());
                }
            } else {
                assert_eq!(parts.len(), 1, "counters and registers go whole");
            }
            if parts.len() == 1 {
                assert_eq!(parts[0], whole, "a state that fits is its own encoding");
            }
            assert_eq!(
                State::assemble(decode_parts(&parts)).unwrap(),
                s,
                "max {max}"
            );
            assert_eq!(spliced(&parts, &s), whole, "spliced, max {max}");
        }
    }
}

fn whole_entries(s: &State) -> usize {
    match s {
        State::Set(x) => x.len(),
        State::Bag(x) => x.len(),
        State::Map(x) => x.len(),
        _ => 1,
    }
}

#[test]
fn parts_out_of_order_or_incomplete_are_refused() {
    for s in large_states() {
        let parts = decode_parts(&parts_of(&s, 500));
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let n = parts.len();
        // Two parts swapped.
        let mut swapped = parts.clone();
        swapped.swap(0, 1);
        assert!(State::assemble(swapped).is_err());
        // A part twice.
        let mut twice = parts.clone();
        twice.insert(1, parts[1].clone());
        assert!(State::assemble(twice).is_err());
        // The last part missing: the entries' dots are in no context.
        assert!(State::assemble(parts[..n - 1].to_vec()).is_err());
        // The last part (with the context) before others.
        let mut early = parts.clone();
        early.swap(0, n - 1);
        assert!(State::assemble(early).is_err());
        // Parts of different kinds.
        let mut mixed = parts.clone();
        let other = State::new(if s.kind() == Kind::Set {
            Kind::Bag
        } else {
            Kind::Set
        });
        mixed[0] = decode_parts(&[encode(&other)]).remove(0);
        assert!(State::assemble(mixed).is_err());
        assert!(State::assemble(Vec::new()).is_err());
        assert_eq!(State::assemble(parts).unwrap(), s);
    }
}

/// A part written less tightly than the encoder writes it (a count in more
/// bytes than it needs) still splices into an encoding of the same state;
/// a variant index written so is refused.
#[test]
fn loosely_written_parts_splice_to_the_same_state() {
    let s = large_states().remove(0);
    let mut parts = parts_of(&s, 500);
    // Part 1's count, rewritten with a needless continuation byte.
    let count = DecodedPart::decode(&parts[1], DEFAULT_MAX_LEN)
        .unwrap()
        .0
        .entries();
    assert!(count < 0x80);
    let mut loose = parts[1][..2].to_vec();
    loose.extend_from_slice(&[count as u8 | 0x80, 0x00]);
    loose.extend_from_slice(&parts[1][3..]);
    parts[1] = loose;
    let bytes = spliced(&parts, &s);
    assert_eq!(decode::<State>(&bytes, DEFAULT_MAX_LEN).unwrap(), s);
    assert_eq!(State::assemble(decode_parts(&parts)).unwrap(), s);
    // The variant, written in two bytes.
    let mut wide = vec![parts[0][0], parts[0][1] | 0x80, 0x00];
    wide.extend_from_slice(&parts[0][2..]);
    assert!(DecodedPart::decode(&wide, DEFAULT_MAX_LEN).is_err());
}
