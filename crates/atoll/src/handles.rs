//! Typed handles on variables.
//!
//! A handle names a variable and the application type of its values. Getting a
//! handle checks the name and, if the variable exists, its type; the variable is
//! created by its first write. Values are encoded with postcard; reading a
//! variable with another value type than it was written with is an
//! [`Error::Value`].

use crate::{CoreError, Error, Result, Store};
use atoll_core::{Answer, Op};
use atoll_crdt::variable::{Bytes, Kind, State};
use atoll_crdt::{CrdtError, ElementId, ReplicaId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

fn encode<T: Serialize + ?Sized>(store: &Store, name: &str, value: &T) -> Result<Bytes> {
    let bytes = postcard::to_allocvec(value).map_err(|source| Error::Value {
        name: name.to_string(),
        source,
    })?;
    let max = store.config().max_value_len;
    if bytes.len() > max {
        return Err(Error::ValueTooLarge {
            name: name.to_string(),
            len: bytes.len(),
            max,
        });
    }
    Ok(Bytes::from(bytes))
}

fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T> {
    let err = |source| Error::Value {
        name: name.to_string(),
        source,
    };
    // Strict: bytes left over mean the value was written as another type.
    match postcard::take_from_bytes(bytes).map_err(err)? {
        (value, []) => Ok(value),
        _ => Err(err(postcard::Error::DeserializeBadEncoding)),
    }
}

macro_rules! state_as {
    ($state:expr, $variant:ident) => {
        match $state {
            State::$variant(s) => s,
            // The store checks a variable's kind against its metadata on load and
            // before every operation, so another variant cannot reach here.
            other => unreachable!("kind checked: {:?}", other.kind()),
        }
    };
}

/// The answer an operation gives, by its variant: [`Op::apply`] answers
/// each operation with one variant, so another cannot reach here.
macro_rules! answer {
    ($answer:expr, $variant:ident) => {
        match $answer {
            Answer::$variant(x) => x,
            other => unreachable!("Op::apply answered {other:?}"),
        }
    };
}

mod map;
pub use map::Map;

/// A variable's name as its handle shows it: within its namespace.
pub(crate) fn shown(name: &str) -> &str {
    atoll_core::namespace_of(name).map_or(name, |(_, n)| n)
}

/// A handle on a counter (`Store::counter`).
#[derive(Clone)]
pub struct Counter {
    store: Store,
    name: String,
}

impl Counter {
    /// Adds `by` (negative to subtract); returns the new value as seen here.
    pub fn incr(&self, by: i64) -> Result<i128> {
        self.store.counter_add(&self.name, by)
    }

    /// Strong: subtracts `by` only if that leaves the counter at least
    /// `floor`, deciding at the counter's owner (the variable must be owned:
    /// [`Store::own`]), so that concurrent callers on every node never take
    /// it below the floor. Returns whether it was subtracted, and the value
    /// the owner saw after.
    pub fn decrement_if(&self, by: i64, floor: i64) -> Result<(bool, i128)> {
        let op = Op::CounterDecrementIf { by, floor };
        match self.store.write(false, &self.name, op)? {
            Answer::Decremented { done, value } => Ok((done, value)),
            other => unreachable!("Op::apply answered {other:?}"),
        }
    }

    /// Strong: enables escrow of the counter's decrement rights, with
    /// `floor`, at its owner (the counter must be owned, and at least
    /// `floor`). From then on no decrement, plain or conditional, takes it
    /// below `floor` on any replica, and the owner grants nodes rights
    /// that they spend locally, through a split too (docs/ownership.md).
    /// Enabling it again with the same floor changes nothing; a floor does
    /// not change.
    pub fn enable_escrow(&self, floor: i64) -> Result<()> {
        self.store
            .write(false, &self.name, Op::CounterEscrow { floor })?;
        // Enabled at the owner; the record reaches this node by gossip.
        // Waited for a moment, so that what this node shows next says so
        // (a node cut off from the owner since shows it once it returns).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        crate::store::blocking(|| {
            while self.store.escrow(&self.name)?.is_none() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(())
        })
    }

    /// The escrow of the counter's decrement rights as this node sees it
    /// (`None`: not enabled).
    pub fn escrow(&self) -> Result<Option<crate::EscrowStatus>> {
        self.store.escrow(&self.name)
    }

    /// Subtracts `by`; returns the new value as seen here.
    pub fn decr(&self, by: i64) -> Result<i128> {
        self.incr(by.checked_neg().ok_or(CoreError::Crdt {
            name: self.name.clone(),
            source: CrdtError::Overflow,
        })?)
    }

    /// The value as its owner sees it, if it is owned (a round trip there;
    /// as seen here if it is ownerless).
    pub fn value_strong(&self) -> Result<i128> {
        self.store.sync_with_owner(&self.name, Kind::Counter)?;
        self.value()
    }

    /// The value as seen here (0 if never written).
    pub fn value(&self) -> Result<i128> {
        self.store.read(&self.name, Kind::Counter, |s| {
            Ok(s.map_or(0, |s| state_as!(s, Counter).value()))
        })
    }

    /// The variable's name (within its namespace).
    pub fn name(&self) -> &str {
        crate::handles::shown(&self.name)
    }
}

/// A handle on a last-writer-wins register of `T` (`Store::register`).
pub struct Register<T> {
    store: Store,
    name: String,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Register<T> {
    /// Writes `value`; a later write (by hybrid logical clock) anywhere wins.
    pub fn set(&self, value: &T) -> Result<()> {
        let bytes = encode(&self.store, &self.name, value)?;
        self.store
            .write(false, &self.name, Op::RegisterSet { value: bytes })
            .map(drop)
    }

    /// Strong: writes `value` only if the register holds `expected` (`None`:
    /// never written), deciding at its owner (the variable must be owned:
    /// [`Store::own`]); of concurrent callers expecting the same value,
    /// exactly one wins. Returns whether it wrote.
    pub fn compare_and_set(&self, expected: Option<&T>, value: &T) -> Result<bool> {
        let expected = expected
            .map(|e| encode(&self.store, &self.name, e))
            .transpose()?;
        let value = encode(&self.store, &self.name, value)?;
        let op = Op::RegisterCompareAndSet { expected, value };
        let answer = self.store.write(false, &self.name, op)?;
        Ok(answer!(answer, Swapped))
    }

    /// The value as its owner sees it, if it is owned (a round trip
    /// there; as seen here if it is ownerless).
    pub fn get_strong(&self) -> Result<Option<T>> {
        self.store.sync_with_owner(&self.name, Kind::Register)?;
        self.get()
    }

    /// The current value (`None` if never written).
    pub fn get(&self) -> Result<Option<T>> {
        self.store.read(&self.name, Kind::Register, |s| {
            s.and_then(|s| state_as!(s, Register).get())
                .map(|b| decode(&self.name, b))
                .transpose()
        })
    }

    /// The variable's name (within its namespace).
    pub fn name(&self) -> &str {
        crate::handles::shown(&self.name)
    }
}

/// A handle on a multi-value register of `T` (`Store::mv_register`).
pub struct MvRegister<T> {
    store: Store,
    name: String,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> MvRegister<T> {
    /// Writes `value`, replacing every value seen here.
    pub fn set(&self, value: &T) -> Result<()> {
        let bytes = encode(&self.store, &self.name, value)?;
        self.store
            .write(false, &self.name, Op::MvRegisterSet { value: bytes })
            .map(drop)
    }

    /// The current values: one, or several after concurrent writes (empty if never written).
    pub fn get(&self) -> Result<Vec<T>> {
        self.store.read(&self.name, Kind::MvRegister, |s| match s {
            Some(s) => state_as!(s, MvRegister)
                .values()
                .map(|b| decode(&self.name, b))
                .collect(),
            None => Ok(Vec::new()),
        })
    }

    /// The variable's name (within its namespace).
    pub fn name(&self) -> &str {
        crate::handles::shown(&self.name)
    }
}

/// A handle on an add-wins set of `T` (`Store::set`). Members are ordered by
/// their encoding.
pub struct Set<T> {
    store: Store,
    name: String,
    /// A system variable the node itself changes (membership): the only
    /// writes to the reserved prefix.
    system: bool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Set<T> {
    /// Adds `member`; an add concurrent with a remove of it wins.
    pub fn add(&self, member: &T) -> Result<()> {
        self.change(std::slice::from_ref(member), &[]).map(|_| ())
    }

    /// Strong: adds `member` only if it is absent, deciding at the set's
    /// owner (the variable must be owned: [`Store::own`]): a unique claim,
    /// which exactly one of concurrent callers on every node wins. Returns
    /// whether this call added it.
    pub fn add_if_absent(&self, member: &T) -> Result<bool> {
        let member = encode(&self.store, &self.name, member)?;
        let answer = self
            .store
            .write(false, &self.name, Op::SetAddIfAbsent { member })?;
        Ok(answer!(answer, Claimed))
    }

    /// Removes `member` (the adds of it seen here); returns whether it was present.
    pub fn remove(&self, member: &T) -> Result<bool> {
        let present = self.change(&[], std::slice::from_ref(member))?;
        Ok(present.first().copied().unwrap_or(false))
    }

    /// Adds every member of `add`, then removes every member of `remove`,
    /// as one operation: one delta, one log entry, one flush, all or
    /// nothing (every value is encoded and checked first). Returns, for each
    /// of `remove`, whether it was present after the adds.
    pub fn change(&self, add: &[T], remove: &[T]) -> Result<Vec<bool>> {
        let encode_all = |xs: &[T]| -> Result<Vec<Bytes>> {
            xs.iter()
                .map(|x| encode(&self.store, &self.name, x))
                .collect()
        };
        let (add, remove) = (encode_all(add)?, encode_all(remove)?);
        let answer = self
            .store
            .write(self.system, &self.name, Op::SetChange { add, remove })?;
        Ok(answer!(answer, Removed))
    }

    /// Whether `member` is in the set.
    pub fn contains(&self, member: &T) -> Result<bool> {
        let bytes = encode(&self.store, &self.name, member)?;
        self.store.read(&self.name, Kind::Set, |s| {
            Ok(s.is_some_and(|s| state_as!(s, Set).contains(&bytes)))
        })
    }

    /// The members as the set's owner sees them, if it is owned (a round
    /// trip there; as seen here if it is ownerless).
    pub fn members_strong(&self) -> Result<Vec<T>> {
        self.store.sync_with_owner(&self.name, Kind::Set)?;
        self.members()
    }

    /// The members.
    pub fn members(&self) -> Result<Vec<T>> {
        self.store.read(&self.name, Kind::Set, |s| match s {
            Some(s) => state_as!(s, Set)
                .iter()
                .map(|b| decode(&self.name, b))
                .collect(),
            None => Ok(Vec::new()),
        })
    }

    /// How many members.
    pub fn len(&self) -> Result<usize> {
        self.store.read(&self.name, Kind::Set, |s| {
            Ok(s.map_or(0, |s| state_as!(s, Set).len()))
        })
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The variable's name (within its namespace).
    pub fn name(&self) -> &str {
        crate::handles::shown(&self.name)
    }
}

/// One element of a bag, as listed by [`Bag::elements`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BagElement<T> {
    /// Its unique id.
    pub id: ElementId,
    /// The replica that owns it (only that replica can take or transfer it).
    pub owner: ReplicaId,
    /// Its value.
    pub value: T,
}

/// A handle on an owned bag of `T` (`Store::bag`).
pub struct Bag<T> {
    store: Store,
    name: String,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Bag<T> {
    /// Inserts `value`, owned by this store; returns the element's id.
    pub fn insert(&self, value: &T) -> Result<ElementId> {
        let bytes = encode(&self.store, &self.name, value)?;
        let ids = self.insert_encoded(vec![bytes])?;
        ids.first().copied().ok_or_else(|| Error::InvalidInput {
            what: "no element id for the inserted value".to_string(),
        })
    }

    /// Inserts every value as one operation (one delta, one log entry, one
    /// flush; all or nothing); returns their element ids, in order.
    pub fn insert_all(&self, values: &[T]) -> Result<Vec<ElementId>> {
        let values: Vec<Bytes> = values
            .iter()
            .map(|v| encode(&self.store, &self.name, v))
            .collect::<Result<_>>()?;
        self.insert_encoded(values)
    }

    fn insert_encoded(&self, values: Vec<Bytes>) -> Result<Vec<ElementId>> {
        let answer = self
            .store
            .write(false, &self.name, Op::BagInsert { values })?;
        Ok(answer!(answer, Inserted))
    }

    /// Takes one element this store owns (`None` if it owns none). An element is
    /// never taken twice, anywhere, even across a partition.
    pub fn take(&self) -> Result<Option<T>> {
        let answer = self.store.write(false, &self.name, Op::BagTake)?;
        answer!(answer, Taken)
            .map(|(_, b)| decode(&self.name, &b))
            .transpose()
    }

    /// Hands element `id`, which this store must own, to replica `to`.
    pub fn transfer(&self, id: ElementId, to: ReplicaId) -> Result<()> {
        self.store
            .write(false, &self.name, Op::BagTransfer { id, to })
            .map(drop)
    }

    /// An operator's adoption of the share of node `from`, gone for good:
    /// every element it owns, as known here, becomes this node's; returns
    /// their ids. If `from` is alive, it may still take an element this
    /// node takes too: like an ownership override, this breaks the bag's
    /// exclusivity (docs/ownership.md).
    pub fn adopt(&self, from: ReplicaId) -> Result<Vec<ElementId>> {
        let answer = self.store.write(false, &self.name, Op::BagAdopt { from })?;
        Ok(answer!(answer, Adopted))
    }

    /// Every element known here, across all owners, by id.
    pub fn elements(&self) -> Result<Vec<BagElement<T>>> {
        self.store.read(&self.name, Kind::Bag, |s| match s {
            Some(s) => state_as!(s, Bag)
                .iter()
                .map(|(id, e)| {
                    Ok(BagElement {
                        id,
                        owner: e.owner,
                        value: decode(&self.name, &e.value)?,
                    })
                })
                .collect(),
            None => Ok(Vec::new()),
        })
    }

    /// How many elements are known here, across all owners.
    pub fn len(&self) -> Result<usize> {
        self.store.read(&self.name, Kind::Bag, |s| {
            Ok(s.map_or(0, |s| state_as!(s, Bag).len()))
        })
    }

    /// Whether the bag is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// How many elements this store owns.
    pub fn owned(&self) -> Result<usize> {
        let me = self.store.replica_id();
        self.store.read(&self.name, Kind::Bag, |s| {
            Ok(s.map_or(0, |s| state_as!(s, Bag).owned_by(me)))
        })
    }

    /// The variable's name (within its namespace).
    pub fn name(&self) -> &str {
        crate::handles::shown(&self.name)
    }
}

impl Store {
    /// [`Counter::incr`] without a handle: one turn of the store's lock,
    /// where a handle takes one to check the name and kind and another to
    /// write (the write checks both again, and refuses as the handle would).
    /// The HTTP API's and the CLI's increments come here.
    pub(crate) fn counter_add(&self, name: &str, by: i64) -> Result<i128> {
        let answer = self.write(false, name, Op::CounterAdd { by })?;
        Ok(answer!(answer, Value))
    }

    /// A handle on the counter `name`.
    pub fn counter(&self, name: &str) -> Result<Counter> {
        self.check(name, Kind::Counter)?;
        Ok(Counter {
            store: self.clone(),
            name: name.to_string(),
        })
    }

    /// A handle on the last-writer-wins register `name` of `T`.
    pub fn register<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Register<T>> {
        self.check(name, Kind::Register)?;
        Ok(Register {
            store: self.clone(),
            name: name.to_string(),
            _t: PhantomData,
        })
    }

    /// A handle on the multi-value register `name` of `T`.
    pub fn mv_register<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<MvRegister<T>> {
        self.check(name, Kind::MvRegister)?;
        Ok(MvRegister {
            store: self.clone(),
            name: name.to_string(),
            _t: PhantomData,
        })
    }

    /// A handle on the add-wins set `name` of `T`.
    pub fn set<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Set<T>> {
        self.check(name, Kind::Set)?;
        Ok(Set {
            store: self.clone(),
            name: name.to_string(),
            system: false,
            _t: PhantomData,
        })
    }

    /// A handle on one of the node's own system sets (`_atoll.peers`,
    /// `_atoll.removed`), which only the node's admin operations write.
    pub(crate) fn system_set(&self, name: &str) -> Result<Set<String>> {
        self.keyspace_check(name, Kind::Set)?;
        Ok(Set {
            store: self.clone(),
            name: name.to_string(),
            system: true,
            _t: PhantomData,
        })
    }

    /// A handle on the owned bag `name` of `T`.
    pub fn bag<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Bag<T>> {
        self.check(name, Kind::Bag)?;
        Ok(Bag {
            store: self.clone(),
            name: name.to_string(),
            _t: PhantomData,
        })
    }

    /// A handle on the map `name`.
    pub fn map(&self, name: &str) -> Result<Map> {
        self.check(name, Kind::Map)?;
        Ok(Map {
            store: self.clone(),
            name: name.to_string(),
        })
    }
}
