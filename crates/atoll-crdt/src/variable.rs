//! The variables a store holds: each is one CRDT over encoded values, tagged by kind.
//!
//! Values are kept as bytes (the application's type, encoded), so one store can
//! hold variables of any value type; the typed handles in the `atoll` crate encode
//! and decode at the edge.
//!
//! The parts a large state travels in live in `parts`.

use crate::codec::DecodeError;
use crate::{
    Bag, Causal, CausalContext, CausalMap, CounterField, Dot, DotStore, Escrow, InvalidState,
    Lattice, LwwRegister, MvRegister, OrMap, OrSet, Ownership, PNCounter, RegisterField, SetField,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;
use std::ops::Range;

mod parts;
use parts::{causal_of, part_of};
pub use parts::{parts_of_encoded, splice_parts, DecodedPart, Part, PartOf, StoredParts};

/// An encoded application value.
///
/// Values of up to [`Bytes::INLINE`] bytes (most set members and map keys:
/// short strings, ids, UUIDs) are held inline, not in a heap allocation of
/// their own: a set's members then sit in its B-tree's nodes, so that
/// comparing, encoding and decoding them does not chase a pointer per member,
/// and decoding one allocates nothing.
///
/// On the wire it is the length, then the bytes, exactly as a `Vec<u8>` is in
/// postcard; but it is written and read as one slice, not one `u8` call at a
/// time.
///
/// Values compare as byte strings (lexicographically, as `[u8]` does), eight
/// bytes at a time in the code itself rather than through a `memcmp` call:
/// a set's members are short, and a catch-up compares each with its
/// neighbour several times (decoding checks the order, the B-tree's bulk
/// build checks it again).
#[derive(Clone, Default)]
pub struct Bytes(SmallVec<[u8; Bytes::INLINE]>);

/// `a` and `b` compared as byte strings, eight bytes at a time.
#[inline]
fn compare_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let (mut x, mut y) = (&a[..n], &b[..n]);
    while let (Some((xw, xr)), Some((yw, yr))) =
        (x.split_first_chunk::<8>(), y.split_first_chunk::<8>())
    {
        if xw != yw {
            return u64::from_be_bytes(*xw).cmp(&u64::from_be_bytes(*yw));
        }
        (x, y) = (xr, yr);
    }
    for (p, q) in x.iter().zip(y) {
        if p != q {
            return p.cmp(q);
        }
    }
    a.len().cmp(&b.len())
}

impl PartialEq for Bytes {
    #[inline]
    fn eq(&self, other: &Bytes) -> bool {
        self.0.len() == other.0.len() && compare_bytes(&self.0, &other.0).is_eq()
    }
}

impl Eq for Bytes {}

impl std::hash::Hash for Bytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_slice().hash(state);
    }
}

impl PartialOrd for Bytes {
    #[inline]
    fn partial_cmp(&self, other: &Bytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    #[inline]
    fn cmp(&self, other: &Bytes) -> std::cmp::Ordering {
        compare_bytes(&self.0, &other.0)
    }
}

impl Bytes {
    /// The longest value held inline.
    pub const INLINE: usize = 24;

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, as a vector.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_vec()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..].fmt(f)
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        if v.len() <= Bytes::INLINE {
            Bytes(SmallVec::from_slice(&v))
        } else {
            Bytes(SmallVec::from_vec(v))
        }
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(SmallVec::from_slice(v))
    }
}

impl<const N: usize> From<[u8; N]> for Bytes {
    fn from(v: [u8; N]) -> Bytes {
        Bytes(SmallVec::from_slice(&v))
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(b: Bytes) -> Vec<u8> {
        b.into_vec()
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                // From self-describing formats: take what arrives, no more.
                let mut v = SmallVec::new();
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(Bytes(v))
            }
        }
        // Postcard hands over a slice of the input (its length checked against
        // what remains first), so nothing is allocated for an inline value.
        d.deserialize_bytes(V)
    }
}

/// The type of a variable, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A [`PNCounter`].
    Counter,
    /// A last-writer-wins [`LwwRegister`].
    Register,
    /// A multi-value [`MvRegister`].
    MvRegister,
    /// An add-wins [`OrSet`].
    Set,
    /// An owned [`Bag`].
    Bag,
    /// An [`OrMap`] of string keys to [`MapValue`] fields.
    Map,
    /// An [`Ownership`] record: who owns a variable. A system kind: only
    /// the replica writes one, never an application (so it is not in
    /// [`Kind::ALL`]).
    Owner,
    /// An [`Escrow`] record: a bounded counter's decrement rights. A
    /// system kind, like [`Kind::Owner`].
    Escrow,
}

impl Kind {
    /// Every kind an application may create, in order (all but
    /// [`Kind::Owner`]).
    pub const ALL: [Kind; 6] = [
        Kind::Counter,
        Kind::Register,
        Kind::MvRegister,
        Kind::Set,
        Kind::Bag,
        Kind::Map,
    ];

    /// The kind's name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Register => "register",
            Kind::MvRegister => "mvregister",
            Kind::Set => "set",
            Kind::Bag => "bag",
            Kind::Map => "map",
            Kind::Owner => "owner",
            Kind::Escrow => "escrow",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The value at one key of a store map: a counter, a register and a set, any of
/// which may be in use. Removing the key resets all three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapValue {
    /// The key's counter.
    pub counter: CounterField,
    /// The key's last-writer-wins register.
    pub register: RegisterField<Bytes>,
    /// The key's add-wins set.
    pub set: SetField<Bytes>,
}

impl MapValue {
    /// A nested delta touching only the counter.
    pub fn with_counter(d: Causal<CounterField>) -> Causal<MapValue> {
        Causal {
            store: MapValue {
                counter: d.store,
                ..Default::default()
            },
            ctx: d.ctx,
        }
    }

    /// A nested delta touching only the register.
    pub fn with_register(d: Causal<RegisterField<Bytes>>) -> Causal<MapValue> {
        Causal {
            store: MapValue {
                register: d.store,
                ..Default::default()
            },
            ctx: d.ctx,
        }
    }

    /// A nested delta touching only the set.
    pub fn with_set(d: Causal<SetField<Bytes>>) -> Causal<MapValue> {
        Causal {
            store: MapValue {
                set: d.store,
                ..Default::default()
            },
            ctx: d.ctx,
        }
    }
}

impl DotStore for MapValue {
    fn is_bottom(&self) -> bool {
        self.counter.is_bottom() && self.register.is_bottom() && self.set.is_bottom()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        self.counter.for_each_dot(f);
        self.register.for_each_dot(f);
        self.set.for_each_dot(f);
    }

    fn retain_dots(&mut self, keep: &mut dyn FnMut(&Dot) -> bool) {
        self.counter.retain_dots(keep);
        self.register.retain_dots(keep);
        self.set.retain_dots(keep);
    }

    fn join_store(&mut self, ctx: &CausalContext, other: Self, other_ctx: &CausalContext) {
        self.counter.join_store(ctx, other.counter, other_ctx);
        self.register.join_store(ctx, other.register, other_ctx);
        self.set.join_store(ctx, other.set, other_ctx);
    }

    fn validate_in(&self, ctx: &CausalContext) -> Result<(), InvalidState> {
        self.counter.validate_in(ctx)?;
        self.register.validate_in(ctx)?;
        self.set.validate_in(ctx)
    }
}

/// A store map.
pub type Map = OrMap<String, MapValue>;

/// A variable's whole state, or a delta of it (deltas are states).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// See [`Kind::Counter`].
    Counter(PNCounter),
    /// See [`Kind::Register`].
    Register(LwwRegister<Bytes>),
    /// See [`Kind::MvRegister`].
    MvRegister(MvRegister<Bytes>),
    /// See [`Kind::Set`].
    Set(OrSet<Bytes>),
    /// See [`Kind::Bag`].
    Bag(Bag<Bytes>),
    /// See [`Kind::Map`].
    Map(Map),
    /// See [`Kind::Owner`].
    Owner(Ownership),
    /// See [`Kind::Escrow`].
    Escrow(Escrow),
}

/// Two states of different kinds cannot be joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot join a {found} into a {expected}")]
pub struct KindMismatch {
    /// The kind of the state joined into.
    pub expected: Kind,
    /// The kind of the state offered.
    pub found: Kind,
}

impl State {
    /// The bottom state of `kind`.
    pub fn new(kind: Kind) -> State {
        match kind {
            Kind::Counter => State::Counter(PNCounter::new()),
            Kind::Register => State::Register(LwwRegister::new()),
            Kind::MvRegister => State::MvRegister(MvRegister::new()),
            Kind::Set => State::Set(OrSet::new()),
            Kind::Bag => State::Bag(Bag::new()),
            Kind::Map => State::Map(Map::new()),
            Kind::Owner => State::Owner(Ownership::default()),
            Kind::Escrow => State::Escrow(Escrow::default()),
        }
    }

    /// Whether this is the bottom state of its kind (a delta that holds nothing).
    pub fn is_bottom(&self) -> bool {
        *self == State::new(self.kind())
    }

    /// The state's kind.
    pub fn kind(&self) -> Kind {
        match self {
            State::Counter(_) => Kind::Counter,
            State::Register(_) => Kind::Register,
            State::MvRegister(_) => Kind::MvRegister,
            State::Set(_) => Kind::Set,
            State::Bag(_) => Kind::Bag,
            State::Map(_) => Kind::Map,
            State::Owner(_) => Kind::Owner,
            State::Escrow(_) => Kind::Escrow,
        }
    }

    /// Joins `other` (a state or delta of the same kind) into `self`.
    /// Fails, changing nothing, if the kinds differ.
    pub fn join(&mut self, other: State) -> Result<(), KindMismatch> {
        match (self, other) {
            (State::Counter(a), State::Counter(b)) => a.join(b),
            (State::Register(a), State::Register(b)) => a.join(b),
            (State::MvRegister(a), State::MvRegister(b)) => a.join(b),
            (State::Set(a), State::Set(b)) => a.join(b),
            (State::Bag(a), State::Bag(b)) => a.join(b),
            (State::Map(a), State::Map(b)) => a.join(b),
            (State::Owner(a), State::Owner(b)) => a.join(b),
            (State::Escrow(a), State::Escrow(b)) => a.join(b),
            (a, b) => {
                return Err(KindMismatch {
                    expected: a.kind(),
                    found: b.kind(),
                })
            }
        }
        Ok(())
    }

    /// Encodes one part of this state, for sending a large state in several
    /// messages, each of them bounded.
    ///
    /// A set, bag or map is cut between entries: the part holds the entries
    /// after `after` (the `next` of the previous part; `None` for the first)
    /// until its encoding reaches `max_bytes` (at least one entry), encoded
    /// as a state of the same kind with an empty causal context; the part
    /// that holds the last entry carries the state's context, and its `next`
    /// is `None`. A state that fits is one part, encoded exactly as
    /// [`crate::codec::encode`] encodes it. Other kinds are always one part.
    ///
    /// Every part but the last is not a valid state on its own (its dots are
    /// not in its empty context): the receiver decodes each without
    /// validation, and [`State::assemble`] validates the whole. The parts
    /// are only consistent if the state does not change between them.
    pub fn encode_part(&self, after: Option<&[u8]>, max_bytes: usize) -> Result<Part, DecodeError> {
        match self {
            State::Set(s) => part_of(3, s.causal(), after, max_bytes),
            State::Bag(b) => part_of(4, b.causal(), after, max_bytes),
            State::Map(m) => part_of(5, m.causal(), after, max_bytes),
            _ => Ok(Part {
                bytes: crate::codec::encode(self),
                next: None,
            }),
        }
    }

    /// The state whose parts ([`State::encode_part`], decoded as
    /// [`DecodedPart`]s) these are, in order; validated.
    pub fn assemble(parts: Vec<DecodedPart>) -> Result<State, InvalidState> {
        let kind = parts.first().ok_or(InvalidState("no state parts"))?.kind();
        let state = match kind {
            Kind::Set => State::Set(OrSet::from_causal(causal_of(parts, |p| match p {
                DecodedPart::Set(c) => Some(c),
                _ => None,
            })?)),
            Kind::Bag => State::Bag(Bag::from_causal(causal_of(parts, |p| match p {
                DecodedPart::Bag(c) => Some(c),
                _ => None,
            })?)),
            Kind::Map => State::Map(OrMap::from_causal(causal_of(parts, |p| match p {
                DecodedPart::Map(c) => Some(c),
                _ => None,
            })?)),
            _ => {
                let mut parts = parts;
                let (Some(part), true) = (parts.pop(), parts.is_empty()) else {
                    return Err(InvalidState(
                        "a counter or register state comes in one part",
                    ));
                };
                match part {
                    DecodedPart::Counter(c) => State::Counter(c),
                    DecodedPart::Register(r) => State::Register(r),
                    DecodedPart::MvRegister(r) => State::MvRegister(r),
                    DecodedPart::Owner(o) => State::Owner(o),
                    DecodedPart::Escrow(e) => State::Escrow(e),
                    _ => unreachable!("kind matched above"),
                }
            }
        };
        state.validate()?;
        Ok(state)
    }

    /// The causal context of a causal kind (set, bag, map): every dot the
    /// state has seen. `None` for counters and registers.
    pub fn context(&self) -> Option<&CausalContext> {
        match self {
            State::Set(s) => Some(s.context()),
            State::Bag(b) => Some(b.context()),
            State::Map(m) => Some(m.context()),
            _ => None,
        }
    }

    /// Whether this state has seen none of `delta` (of the same causal kind):
    /// then all of it is new, and [`State::strip`] would return it whole.
    /// Answers `false` whenever it cannot tell cheaply (other kinds).
    pub fn has_seen_none_of(&self, delta: &State) -> bool {
        match (self.context(), delta.context()) {
            (Some(mine), Some(theirs)) if self.kind() == delta.kind() => mine.is_disjoint(theirs),
            _ => false,
        }
    }

    /// What of `delta` (a state of the same kind) this state does not already
    /// have: joining it gives the same state as joining `delta`. A delta of
    /// another kind is returned whole.
    pub fn strip(&mut self, delta: State) -> State {
        match (self, delta) {
            (State::Counter(a), State::Counter(d)) => State::Counter(a.strip(d)),
            (State::Register(a), State::Register(d)) => State::Register(a.strip(d)),
            (State::MvRegister(a), State::MvRegister(d)) => State::MvRegister(a.strip(d)),
            (State::Set(a), State::Set(d)) => State::Set(a.strip(d)),
            (State::Bag(a), State::Bag(d)) => State::Bag(a.strip(d)),
            (State::Map(a), State::Map(d)) => State::Map(a.strip(d)),
            (State::Owner(a), State::Owner(d)) => State::Owner(a.strip(d)),
            (State::Escrow(a), State::Escrow(d)) => State::Escrow(a.strip(d)),
            (_, d) => d,
        }
    }

    /// The latest last-writer-wins timestamp the state holds, so a receiver can
    /// refuse deltas from a clock too far ahead.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        match self {
            State::Register(r) => r.entry().map(|e| e.ts),
            State::Map(m) => m
                .iter()
                .flat_map(|(_, v)| v.register.0 .0.values().map(|e| e.ts))
                .max(),
            _ => None,
        }
    }

    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        match self {
            State::Counter(_) | State::Register(_) | State::Owner(_) | State::Escrow(_) => Ok(()),
            State::MvRegister(r) => r.validate(),
            State::Set(s) => s.validate(),
            State::Bag(b) => b.validate(),
            State::Map(m) => m.validate(),
        }
    }
}
