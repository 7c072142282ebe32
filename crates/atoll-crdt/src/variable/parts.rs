//! The parts a large state travels in: cut from a state or from its
//! stored encoding, decoded one at a time, and spliced back into one
//! encoding.

use super::*;

/// One part of a state sent in several messages ([`State::encode_part`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The part, encoded as a state of the variable's kind.
    pub bytes: Vec<u8>,
    /// Where the next part starts (an encoded key, for the next call's
    /// `after`); `None` if this part is the last.
    pub next: Option<Vec<u8>>,
}

/// A part of a state ([`State::encode_part`]) decoded for
/// [`State::assemble`]: not validated (a part before the last is not a valid
/// state on its own), and with its entries as they came, in a vector, so that
/// the parts are joined before any tree is built. The variants are
/// `State`'s, in the same order: the encoding is the same.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum DecodedPart {
    /// A counter (always the whole state).
    Counter(PNCounter),
    /// A register (always the whole state).
    Register(LwwRegister<Bytes>),
    /// A multi-value register (always the whole state).
    MvRegister(MvRegister<Bytes>),
    /// A part of a set.
    Set(PartOf<Bytes, crate::DotSet>),
    /// A part of a bag.
    Bag(PartOf<crate::ElementId, crate::DotFun<crate::BagEntry<Bytes>>>),
    /// A part of a map.
    Map(PartOf<String, MapValue>),
    /// An ownership record (always the whole state).
    Owner(crate::Ownership),
    /// An escrow record (always the whole state).
    Escrow(crate::Escrow),
}

/// The entries and context of a part of a causal map's state.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(bound(deserialize = "K: Ord + Deserialize<'de>, S: Deserialize<'de>"))]
pub struct PartOf<K, S> {
    /// The entries, in key order.
    pub store: crate::SortedEntries<K, S>,
    /// The context: empty but in the last part.
    pub ctx: CausalContext,
}

impl DecodedPart {
    /// Decodes a part of at most `max_len` bytes, without validating it, and
    /// finds where its entries lie in `bytes` (for [`splice_parts`]; an empty
    /// range for a counter or register, which is always whole).
    pub fn decode(
        bytes: &[u8],
        max_len: usize,
    ) -> Result<(DecodedPart, Range<usize>), DecodeError> {
        use crate::codec::FORMAT_VERSION;
        if bytes.len() > max_len {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: max_len,
            });
        }
        match bytes {
            [] => Err(DecodeError::Empty),
            [v, ..] if *v != FORMAT_VERSION => Err(DecodeError::UnsupportedVersion(*v)),
            // The variant's index, then the causal map: its entries (a
            // count, then each key and store), then its context.
            [_, 3, rest @ ..] => causal_part(rest).map(|(p, r)| (DecodedPart::Set(p), r)),
            [_, 4, rest @ ..] => causal_part(rest).map(|(p, r)| (DecodedPart::Bag(p), r)),
            [_, 5, rest @ ..] => causal_part(rest).map(|(p, r)| (DecodedPart::Map(p), r)),
            _ => match crate::codec::decode_unvalidated(bytes, max_len)? {
                // Only a variant index written longer than it needs gets here.
                DecodedPart::Set(_) | DecodedPart::Bag(_) | DecodedPart::Map(_) => {
                    Err(DecodeError::Invalid(InvalidState(
                        "a state part's variant is not in its shortest encoding",
                    )))
                }
                whole => Ok((whole, 0..0)),
            },
        }
    }

    /// How many entries it holds (1 for a counter or register).
    pub fn entries(&self) -> usize {
        match self {
            DecodedPart::Set(p) => p.store.0.len(),
            DecodedPart::Bag(p) => p.store.0.len(),
            DecodedPart::Map(p) => p.store.0.len(),
            _ => 1,
        }
    }

    /// The kind of the variable it is a part of.
    pub fn kind(&self) -> Kind {
        match self {
            DecodedPart::Counter(_) => Kind::Counter,
            DecodedPart::Register(_) => Kind::Register,
            DecodedPart::MvRegister(_) => Kind::MvRegister,
            DecodedPart::Set(_) => Kind::Set,
            DecodedPart::Bag(_) => Kind::Bag,
            DecodedPart::Map(_) => Kind::Map,
            DecodedPart::Owner(_) => Kind::Owner,
            DecodedPart::Escrow(_) => Kind::Escrow,
        }
    }
}

/// The causal map assembled from `parts`, each of the kind `pick` takes.
pub(super) fn causal_of<K, S>(
    parts: Vec<DecodedPart>,
    pick: impl Fn(DecodedPart) -> Option<PartOf<K, S>>,
) -> Result<CausalMap<K, S>, InvalidState>
where
    K: Ord + Clone + fmt::Debug,
    S: DotStore,
{
    let parts = parts
        .into_iter()
        .map(|p| {
            let c = pick(p).ok_or(InvalidState("state parts of different kinds"))?;
            Ok((c.store, c.ctx))
        })
        .collect::<Result<_, InvalidState>>()?;
    CausalMap::assemble(parts)
}

/// Decodes the causal map of a state part from `rest` (the part's bytes
/// after its format version and variant), and the range of the part's bytes
/// its entries take: after their count, before the context.
pub(super) fn causal_part<K, S>(rest: &[u8]) -> Result<(PartOf<K, S>, Range<usize>), DecodeError>
where
    K: Ord + serde::de::DeserializeOwned,
    S: serde::de::DeserializeOwned,
{
    let (store, after) = postcard::take_from_bytes::<crate::SortedEntries<K, S>>(rest)?;
    let (ctx, tail) = postcard::take_from_bytes::<CausalContext>(after)?;
    if !tail.is_empty() {
        return Err(DecodeError::TrailingBytes(tail.len()));
    }
    // The count is a varint: it ends at its first byte without the
    // continuation bit, as postcard read it (it decoded).
    let count_len = rest.iter().position(|b| b & 0x80 == 0).map_or(0, |i| i + 1);
    Ok((
        PartOf { store, ctx },
        2 + count_len..2 + rest.len() - after.len(),
    ))
}

/// The encoding of the state that [`State::assemble`] makes of these parts,
/// written from the parts' own bytes: the format version and variant of the
/// first, the count of all `entries`, each part's entries as they came (the
/// ranges [`DecodedPart::decode`] found), then `ctx`, the assembled state's
/// context. It decodes to that state, so a receiver logs it without
/// encoding the state again. A counter or register, always one part, is its
/// part.
pub fn splice_parts(
    parts: &[(&[u8], Range<usize>)],
    entries: usize,
    ctx: Option<&CausalContext>,
) -> Vec<u8> {
    let (Some(ctx), Some((first, _))) = (ctx, parts.first()) else {
        return parts.first().map(|(b, _)| b.to_vec()).unwrap_or_default();
    };
    let len = parts.iter().map(|(_, r)| r.len()).sum::<usize>() + 64;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&first[..2]);
    let mut out = postcard::to_extend(&entries, out).expect("encoding into a Vec cannot fail");
    for (bytes, range) in parts {
        out.extend_from_slice(&bytes[range.clone()]);
    }
    postcard::to_extend(ctx, out).expect("encoding into a Vec cannot fail")
}

/// A part of `c`, a state's causal map; `variant` is the state's variant
/// index in `State`'s encoding.
pub(super) fn part_of<K, S>(
    variant: u8,
    c: &CausalMap<K, S>,
    after: Option<&[u8]>,
    max_bytes: usize,
) -> Result<Part, DecodeError>
where
    K: Ord + Clone + fmt::Debug + Serialize + serde::de::DeserializeOwned + crate::wire::Wire,
    S: DotStore + crate::wire::Wire,
{
    let after: Option<K> = after.map(postcard::from_bytes).transpose()?;
    let (entries, last, end) = c.encode_entries(after.as_ref(), max_bytes);
    // `State`'s encoding: the format version, the variant, then the causal
    // map's (its store, a map, then its context).
    let mut bytes = Vec::with_capacity(entries.len() + 64);
    bytes.extend_from_slice(&[crate::codec::FORMAT_VERSION, variant]);
    bytes.extend_from_slice(&entries);
    let ctx = if end { c.ctx() } else { &CausalContext::new() };
    let bytes = postcard::to_extend(ctx, bytes).expect("encoding into a Vec cannot fail");
    let next = match (end, last) {
        (false, Some(k)) => {
            Some(postcard::to_allocvec(k).expect("encoding into a Vec cannot fail"))
        }
        _ => None,
    };
    Ok(Part { bytes, next })
}

/// The parts [`State::encode_part`] would cut the state encoded as `bytes`
/// (by [`crate::codec::encode`]) into, cut from the encoding itself, all at
/// once (see [`StoredParts`], which cuts them one at a time).
pub fn parts_of_encoded(bytes: &[u8], max_bytes: usize) -> Result<Vec<Part>, DecodeError> {
    let mut cutter = StoredParts::new(bytes.to_vec())?;
    let mut parts = Vec::new();
    while let Some(part) = cutter.next_part(max_bytes) {
        parts.push(part?);
    }
    Ok(parts)
}

/// A state's encoding (by [`crate::codec::encode`]) cut into the parts
/// [`State::encode_part`] would cut the state into, one at a time: the
/// entries are skipped over, not decoded, so that a state stored on disk is
/// sent without being loaded, and the first part goes out before the rest
/// is cut. A set's entries are skipped by hand; a bag's values and a map's
/// fields are decoded to find their end.
///
/// The bytes are the node's own stored state, not a peer's: they are not
/// validated (a corrupt encoding that still parses is cut as it is, and the
/// receiver refuses it).
#[derive(Clone)]
pub struct StoredParts {
    bytes: Vec<u8>,
    /// The causal map's variant index and how to skip its keys and stores;
    /// `None` for a counter or register, which is one part.
    causal: Option<(u8, SkipFn, SkipFn)>,
    /// Where the next part's entries start; `None` once the end part was cut.
    at: Option<usize>,
    /// Entries not yet cut.
    left: u64,
}

pub(super) type SkipFn = fn(&[u8]) -> Result<&[u8], DecodeError>;

impl fmt::Debug for StoredParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredParts")
            .field("len", &self.bytes.len())
            .field("at", &self.at)
            .field("left", &self.left)
            .finish()
    }
}

impl StoredParts {
    /// Reads the encoding's header (its format version, variant, and how
    /// many entries follow).
    pub fn new(bytes: Vec<u8>) -> Result<StoredParts, DecodeError> {
        use crate::codec::FORMAT_VERSION;
        use crate::wire::Wire;
        let causal: Option<(u8, SkipFn, SkipFn)> = match bytes[..] {
            [] => return Err(DecodeError::Empty),
            [v, ..] if v != FORMAT_VERSION => return Err(DecodeError::UnsupportedVersion(v)),
            [_, 3, ..] => Some((3, Bytes::skip, crate::DotSet::skip)),
            [_, 4, ..] => Some((
                4,
                crate::ElementId::skip,
                crate::DotFun::<crate::BagEntry<Bytes>>::skip,
            )),
            [_, 5, ..] => Some((5, String::skip, MapValue::skip)),
            // A counter or register: always one part, the whole state.
            _ => None,
        };
        let (left, at) = match causal {
            Some(_) => {
                let (count, rest) = crate::wire::take_varint(&bytes[2..])?;
                (count, bytes.len() - rest.len())
            }
            None => (0, 0),
        };
        Ok(StoredParts {
            bytes,
            causal,
            at: Some(at),
            left,
        })
    }

    /// The next part, of entries up to about `max_bytes` (at least one);
    /// `None` after the end part.
    pub fn next_part(&mut self, max_bytes: usize) -> Option<Result<Part, DecodeError>> {
        let at = self.at?;
        let Some((variant, skip_key, skip_store)) = self.causal else {
            self.at = None;
            return Some(Ok(Part {
                bytes: std::mem::take(&mut self.bytes),
                next: None,
            }));
        };
        let cut = (|| {
            let mut rest = &self.bytes[at..];
            let (mut n, mut last_key) = (0u64, at..at);
            while self.left > 0 && (n == 0 || self.bytes.len() - at - rest.len() < max_bytes) {
                let key_start = self.bytes.len() - rest.len();
                let key_end = skip_key(rest)?;
                last_key = key_start..self.bytes.len() - key_end.len();
                rest = skip_store(key_end)?;
                n += 1;
                self.left -= 1;
            }
            Ok::<_, DecodeError>((n, last_key, self.bytes.len() - rest.len()))
        })();
        let (n, last_key, entries_end) = match cut {
            Ok(cut) => cut,
            Err(e) => {
                self.at = None;
                return Some(Err(e));
            }
        };
        let end = self.left == 0;
        let ctx = if end {
            // What follows the last entry is the context, for the end part.
            &self.bytes[entries_end..]
        } else {
            // An empty context: two empty sequences.
            &[0, 0][..]
        };
        let entries = &self.bytes[at..entries_end];
        let mut bytes = Vec::with_capacity(entries.len() + ctx.len() + 12);
        bytes.extend_from_slice(&[crate::codec::FORMAT_VERSION, variant]);
        crate::wire::put_varint(n, &mut bytes);
        bytes.extend_from_slice(entries);
        bytes.extend_from_slice(ctx);
        let next = (!end).then(|| self.bytes[last_key].to_vec());
        self.at = (!end).then_some(entries_end);
        Some(Ok(Part { bytes, next }))
    }
}
