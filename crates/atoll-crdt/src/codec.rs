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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplicaId;

    #[test]
    fn round_trip_and_errors() {
        let mut s = crate::OrSet::new();
        s.add(ReplicaId(9), vec![1u8, 2, 3]);
        let state = State::Set(s);
        let bytes = encode(&state);
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
