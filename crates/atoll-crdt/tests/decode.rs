//! Every decoder survives random, truncated and bit-flipped bytes with an error.

use atoll_crdt::codec::{decode, encode, DEFAULT_MAX_LEN};
use atoll_crdt::variable::{Bytes, Kind, MapValue, State};
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
