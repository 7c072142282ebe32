//! The wire and disk encoding: a format version byte, then postcard.
//!
//! Decoding treats its input as hostile. The length is checked against a limit
//! before anything is decoded; postcard never preallocates more than serde's
//! cautious bound (1 MiB) from a length prefix, so memory stays proportional to
//! the input; trailing bytes and broken invariants are errors; nothing panics.

use crate::variable::State;
use crate::InvalidState;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The encoding version written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// The default largest input [`decode`] accepts: 64 MiB.
pub const DEFAULT_MAX_LEN: usize = 64 << 20;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the limit; nothing was decoded.
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The input's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input is empty.
    #[error("input is empty")]
    Empty,
    /// The version byte names a format this build does not read.
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The bytes are not a valid encoding (truncated, or corrupt).
    #[error("malformed input: {0}")]
    Malformed(#[from] postcard::Error),
    /// A valid value was followed by bytes that belong to nothing.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// The value decoded but breaks an invariant of its type.
    #[error(transparent)]
    Invalid(#[from] InvalidState),
}

/// Types whose decoded values must be checked before use.
pub trait Validate {
    /// Checks the value's invariants.
    fn validate(&self) -> Result<(), InvalidState>;
}

impl Validate for State {
    fn validate(&self) -> Result<(), InvalidState> {
        State::validate(self)
    }
}

macro_rules! validate_via_method {
    ($($t:ty),*) => {$(
        impl<T: Clone + Ord + std::fmt::Debug> Validate for $t {
            fn validate(&self) -> Result<(), InvalidState> { <$t>::validate(self) }
        }
    )*};
}
validate_via_method!(crate::OrSet<T>, crate::MvRegister<T>, crate::Bag<T>);

/// Encodes `value` with the format version in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![FORMAT_VERSION];
    // Serializing into a Vec fails only if a Serialize impl itself fails; ours do not.
    postcard::to_extend(value, out).expect("postcard encoding into a Vec cannot fail")
}

/// Decodes a value of at most `max_len` bytes written by [`encode`], and validates it.
pub fn decode<T: DeserializeOwned + Validate>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, DecodeError> {
    let value: T = decode_unvalidated(bytes, max_len)?;
    value.validate()?;
    Ok(value)
}

/// Decodes like [`decode`], for types with no invariants beyond their encoding.
pub fn decode_unvalidated<T: DeserializeOwned>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// A `Vec<u8>` field encoded as bytes in one piece rather than as a sequence
/// of `u8` one by one: `#[serde(with = "atoll_crdt::codec::bytes")]`. In
/// postcard both are the length, then the bytes, so the format is the same;
/// decoding copies the slice at once (and takes no more than the input holds).
pub mod bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serializes `v` as bytes.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes bytes (or, from self-describing formats, a sequence of u8).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                // Preallocate only what is certain to arrive.
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    /// `bytes` changes nothing on the wire: the same encoding as a `Vec<u8>`.
    #[test]
    fn bytes_encode_as_a_vec_of_u8_does() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Fast(#[serde(with = "super::bytes")] Vec<u8>, u8);
        #[derive(serde::Serialize)]
        struct Plain(Vec<u8>, u8);
        let data: Vec<u8> = (0..=255).chain(0..40).collect();
        let fast = postcard::to_allocvec(&Fast(data.clone(), 7)).unwrap();
        assert_eq!(
            fast,
            postcard::to_allocvec(&Plain(data.clone(), 7)).unwrap()
        );
        let back: Fast = postcard::from_bytes(&fast).unwrap();
        assert_eq!(back, Fast(data, 7));
        // A length past the input is an error, not an allocation.
        assert!(postcard::from_bytes::<Fast>(&[0xff, 0xff, 0xff, 0x7f, 1]).is_err());
    }

    /// `variable::Bytes`, inline or not, encodes as a `Vec<u8>` does and
    /// decodes back to the same value.
    #[test]
    fn bytes_values_short_and_long_encode_as_vectors() {
        use crate::variable::Bytes;
        for len in [
            0,
            1,
            Bytes::INLINE - 1,
            Bytes::INLINE,
            Bytes::INLINE + 1,
            300,
        ] {
            let v: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let b = Bytes::from(v.clone());
            let enc = postcard::to_allocvec(&b).unwrap();
            assert_eq!(enc, postcard::to_allocvec(&v).unwrap(), "length {len}");
            let back: Bytes = postcard::from_bytes(&enc).unwrap();
            assert_eq!(back, b);
            assert_eq!(back.as_slice(), &v[..]);
            assert_eq!(Vec::from(back), v);
        }
        // A length past the input is an error, not an allocation.
        assert!(postcard::from_bytes::<Bytes>(&[0xff, 0xff, 0xff, 0x7f, 1]).is_err());
    }

    use super::*;
    use crate::ReplicaId;

    #[test]
    fn round_trip_and_errors() {
        let mut s = crate::OrSet::new();
        s.add(ReplicaId(9), crate::variable::Bytes::from(vec![1u8, 2, 3]));
        let state = State::Set(s);
        let bytes = encode(&state);
        // `Bytes` is written as a `Vec<u8>` is: the same set of plain vectors
        // encodes to the same bytes.
        let mut plain = crate::OrSet::new();
        plain.add(ReplicaId(9), vec![1u8, 2, 3]);
        assert_eq!(&bytes[2..], &encode(&plain)[1..]);
        let back: State = decode(&bytes, DEFAULT_MAX_LEN).unwrap();
        assert_eq!(back, state);
        assert!(matches!(
            decode::<State>(&bytes, 2),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(decode::<State>(&[], 10), Err(DecodeError::Empty)));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            decode::<State>(&v2, DEFAULT_MAX_LEN),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<State>(&trailing, DEFAULT_MAX_LEN),
            Err(DecodeError::TrailingBytes(1))
        ));
        for cut in 1..bytes.len() {
            assert!(decode::<State>(&bytes[..cut], DEFAULT_MAX_LEN).is_err());
        }
    }
}
