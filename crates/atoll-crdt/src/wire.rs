//! postcard's encoding of the entries of a causal map, written by hand for
//! the types that fill large states (a set's members and their dots, a bag's
//! element ids) and through serde for the rest.
//!
//! The bytes are exactly postcard's (a test compares them): a varint is
//! LEB128; bytes are their length, then themselves; a sequence is its
//! length, then its elements. What it saves is serde's dispatch per value
//! when a state is encoded in parts for a state transfer
//! ([`crate::variable::State::encode_part`]): 37 ns per set member through
//! serde, 16 by hand (`cargo bench -p atoll-crdt --bench recv`). Decoding
//! stays with serde: by hand it was no faster (its cost is memory, not
//! dispatch), so there is one decoder to trust with hostile input. It also
//! skips over entries without decoding them, to cut a node's own stored
//! state into parts ([`crate::variable::StoredParts`]).

use crate::codec::DecodeError;
use crate::{Dot, DotSet, ReplicaId};

/// A value whose postcard encoding is written (and skipped) by hand, or
/// through serde.
pub(crate) trait Wire {
    /// Appends the value's postcard encoding to `out`.
    fn put(&self, out: &mut Vec<u8>);

    /// The rest of `input` after one encoded value at its front: finds
    /// where a stored state's entries end, to cut it into parts
    /// ([`crate::variable::parts_of_encoded`]) without decoding it.
    fn skip(input: &[u8]) -> Result<&[u8], DecodeError>;
}

fn end() -> DecodeError {
    DecodeError::Malformed(postcard::Error::DeserializeUnexpectedEnd)
}

/// The rest of `input` after the varint at its front, and its value.
#[inline]
pub(crate) fn take_varint(input: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    if let Some(&b) = input.first() {
        if b & 0x80 == 0 {
            return Ok((u64::from(b), &input[1..]));
        }
    }
    let mut out = 0u64;
    for i in 0..10 {
        let b = *input.get(i).ok_or_else(end)?;
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((out, &input[i + 1..]));
        }
    }
    Err(DecodeError::Malformed(
        postcard::Error::DeserializeBadVarint,
    ))
}

/// The rest of `input` after the varint at its front (its value unread):
/// the first byte without the continuation bit ends it, found eight bytes
/// at a time.
#[inline]
pub(crate) fn skip_varint(input: &[u8]) -> Result<&[u8], DecodeError> {
    if let Some(word) = input.first_chunk::<8>() {
        let ends = !u64::from_le_bytes(*word) & 0x8080_8080_8080_8080;
        if ends != 0 {
            let len = ends.trailing_zeros() as usize / 8 + 1;
            return Ok(&input[len..]);
        }
        // Nine or ten bytes (a random 64-bit id takes ten).
        return match (input.get(8), input.get(9)) {
            (Some(b), _) if b & 0x80 == 0 => Ok(&input[9..]),
            (Some(_), Some(b)) if b & 0x80 == 0 => Ok(&input[10..]),
            (Some(_), Some(_)) => Err(DecodeError::Malformed(
                postcard::Error::DeserializeBadVarint,
            )),
            _ => Err(end()),
        };
    }
    Ok(take_varint(input)?.1)
}

/// The rest of `input` after a length and that many bytes.
#[inline]
fn skip_bytes(input: &[u8]) -> Result<&[u8], DecodeError> {
    let (n, rest) = take_varint(input)?;
    let n = usize::try_from(n).map_err(|_| end())?;
    rest.get(n..).ok_or_else(end)
}

/// Appends `v` as a varint.
#[inline]
pub(crate) fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Wire for ReplicaId {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(self.0, out);
    }

    #[inline]
    fn skip(input: &[u8]) -> Result<&[u8], DecodeError> {
        skip_varint(input)
    }
}

impl Wire for Dot {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(self.replica.0, out);
        put_varint(self.counter, out);
    }

    #[inline]
    fn skip(input: &[u8]) -> Result<&[u8], DecodeError> {
        skip_varint(skip_varint(input)?)
    }
}

impl Wire for DotSet {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(self.len() as u64, out);
        for d in self.iter() {
            d.put(out);
        }
    }

    #[inline]
    fn skip(input: &[u8]) -> Result<&[u8], DecodeError> {
        let (n, mut rest) = take_varint(input)?;
        for _ in 0..n {
            rest = Dot::skip(rest)?;
        }
        Ok(rest)
    }
}

impl Wire for crate::variable::Bytes {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(self.as_slice().len() as u64, out);
        out.extend_from_slice(self.as_slice());
    }

    #[inline]
    fn skip(input: &[u8]) -> Result<&[u8], DecodeError> {
        skip_bytes(input)
    }
}

/// `Wire` through serde, for the types that rarely fill a large state.
macro_rules! wire_via_serde {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn put(&self, out: &mut Vec<u8>) {
                let taken = std::mem::take(out);
                *out = postcard::to_extend(self, taken)
                    .expect("postcard encoding into a Vec cannot fail");
            }

            fn skip(input: &[u8]) -> Result<&[u8], DecodeError> {
                Ok(postcard::take_from_bytes::<$t>(input)?.1)
            }
        }
    )*};
}
wire_via_serde!(
    String,
    crate::DotFun<crate::BagEntry<crate::variable::Bytes>>,
    crate::variable::MapValue
);

/// Appends one entry (a key and its store) of a causal map, as postcard
/// encodes a map's entry.
#[inline]
pub(crate) fn put_entry<K: Wire, S: Wire>(k: &K, s: &S, out: &mut Vec<u8>) {
    k.put(out);
    s.put(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variable::Bytes;
    use proptest::prelude::*;

    fn by_hand<K: Wire, S: Wire>(entries: &[(K, S)]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(entries.len() as u64, &mut out);
        for (k, s) in entries {
            put_entry(k, s, &mut out);
        }
        out
    }

    /// postcard's encoding of entries as a map (as `DotMap` serializes).
    fn by_postcard<K: serde::Serialize, S: serde::Serialize>(entries: &[(K, S)]) -> Vec<u8> {
        struct AsMap<'a, K, S>(&'a [(K, S)]);
        impl<K: serde::Serialize, S: serde::Serialize> serde::Serialize for AsMap<'_, K, S> {
            fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
                z.collect_map(self.0.iter().map(|(k, s)| (k, s)))
            }
        }
        postcard::to_allocvec(&AsMap(entries)).expect("into a Vec")
    }

    fn dot() -> impl Strategy<Value = Dot> {
        (
            prop_oneof![Just(7u64), any::<u64>()],
            prop_oneof![1u64..300, any::<u64>()],
        )
            .prop_map(|(r, c)| Dot::new(ReplicaId(r), c))
    }

    fn dot_set() -> impl Strategy<Value = DotSet> {
        prop::collection::btree_set(dot(), 0..4).prop_map(|ds| {
            let mut set = DotSet::new();
            for d in ds {
                set.insert(d);
            }
            set
        })
    }

    #[test]
    fn varints_are_postcards_at_every_length() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) - 1,
                (1u64 << shift) + 1,
                u64::MAX,
            ] {
                let mut out = Vec::new();
                put_varint(v, &mut out);
                assert_eq!(out, postcard::to_allocvec(&v).expect("into a Vec"), "{v}");
            }
        }
    }

    #[test]
    fn varints_are_skipped_whole_at_every_length() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, u64::MAX] {
                let mut out = Vec::new();
                put_varint(v, &mut out);
                let len = out.len();
                out.extend_from_slice(&[0x7f, 0x80, 0x80]);
                assert_eq!(skip_varint(&out).unwrap().len(), 3, "{v}");
                assert_eq!(take_varint(&out).unwrap(), (v, &out[len..]), "{v}");
                // Cut short: an error.
                assert!(skip_varint(&out[..len - 1]).is_err() || len == 1);
            }
        }
        assert!(skip_varint(&[0x80; 11]).is_err());
    }

    proptest! {
        #[test]
        fn set_entries_encode_as_postcard_does(
            entries in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..40), dot_set()), 0..12)
        ) {
            let entries: Vec<(Bytes, DotSet)> =
                entries.into_iter().map(|(k, s)| (Bytes::from(&k[..]), s)).collect();
            prop_assert_eq!(by_hand(&entries), by_postcard(&entries));
        }

    }
}
