//! The map handle: string keys, each with a counter, a register and a set.

use super::{decode, encode};
use crate::{Result, Store};
use atoll_core::{Answer, Op};
use atoll_crdt::variable::{Kind, MapValue, State};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A handle on a map (`Store::map`): string keys, each holding a counter, a
/// last-writer-wins register and a set. Removing a key resets all three, except
/// for updates concurrent with the remove.
#[derive(Clone)]
pub struct Map {
    pub(super) store: Store,
    pub(super) name: String,
}

impl Map {
    fn read_key<R>(&self, key: &str, f: impl FnOnce(Option<&MapValue>) -> Result<R>) -> Result<R> {
        self.store.read(&self.name, Kind::Map, |s| {
            f(s.and_then(|s| state_as!(s, Map).get(&key.to_string())))
        })
    }

    /// Adds `by` to the counter at `key`.
    pub fn incr(&self, key: &str, by: i64) -> Result<()> {
        self.change::<()>(key, Some(by), None, None)
    }

    /// Changes several fields of `key` as one operation (one delta, one log
    /// entry, one flush; all or nothing): adds `incr` to its counter,
    /// writes `set` to its register and adds `add` to its set, each if given.
    pub fn change<T: Serialize>(
        &self,
        key: &str,
        incr: Option<i64>,
        set: Option<&T>,
        add: Option<&T>,
    ) -> Result<()> {
        let set = set
            .map(|v| encode(&self.store, &self.name, v))
            .transpose()?;
        let add = add
            .map(|v| encode(&self.store, &self.name, v))
            .transpose()?;
        let op = Op::MapChange {
            key: key.to_string(),
            incr,
            set,
            add,
        };
        self.store.write(false, &self.name, op).map(drop)
    }

    /// The counter at `key` (0 if absent).
    pub fn counter(&self, key: &str) -> Result<i128> {
        self.read_key(key, |v| Ok(v.map_or(0, |v| v.counter.value())))
    }

    /// Writes the register at `key`.
    pub fn set<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.change(key, None, Some(value), None)
    }

    /// The register at `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read_key(key, |v| {
            v.and_then(|v| v.register.get())
                .map(|b| decode(&self.name, b))
                .transpose()
        })
    }

    /// Strong: writes `value` to the register at `key` only if it holds
    /// `expected` (`None`: absent, or never written), deciding at the map's
    /// owner (the variable must be owned: [`Store::own`]); of concurrent
    /// callers expecting the same value, exactly one wins. Returns whether
    /// it wrote. The entry's counter and set are left as they are.
    pub fn compare_and_set<T: Serialize>(
        &self,
        key: &str,
        expected: Option<&T>,
        value: &T,
    ) -> Result<bool> {
        let expected = expected
            .map(|e| encode(&self.store, &self.name, e))
            .transpose()?;
        let op = Op::MapCompareAndSet {
            key: key.to_string(),
            expected,
            value: encode(&self.store, &self.name, value)?,
        };
        let answer = self.store.write(false, &self.name, op)?;
        Ok(answer!(answer, Swapped))
    }

    /// The register at `key` as the map's owner sees it, if the map is
    /// owned (a round trip there; as seen here if it is ownerless).
    pub fn get_strong<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.store.sync_with_owner(&self.name, Kind::Map)?;
        self.get(key)
    }

    /// Adds `member` to the set at `key`.
    pub fn add<T: Serialize>(&self, key: &str, member: &T) -> Result<()> {
        self.change(key, None, None, Some(member))
    }

    /// Removes `member` from the set at `key`.
    pub fn remove_member<T: Serialize>(&self, key: &str, member: &T) -> Result<()> {
        let member = encode(&self.store, &self.name, member)?;
        let op = Op::MapRemoveMember {
            key: key.to_string(),
            member,
        };
        self.store.write(false, &self.name, op).map(drop)
    }

    /// The members of the set at `key`.
    pub fn members<T: DeserializeOwned>(&self, key: &str) -> Result<Vec<T>> {
        self.read_key(key, |v| match v {
            Some(v) => v.set.0.keys().map(|b| decode(&self.name, b)).collect(),
            None => Ok(Vec::new()),
        })
    }

    /// Removes `key` as seen here; returns whether it was present.
    pub fn remove(&self, key: &str) -> Result<bool> {
        let op = Op::MapRemove {
            key: key.to_string(),
        };
        let answer = self.store.write(false, &self.name, op)?;
        Ok(answer!(answer, Present))
    }

    /// The keys present.
    pub fn keys(&self) -> Result<Vec<String>> {
        self.store.read(&self.name, Kind::Map, |s| {
            Ok(
                s.map(|s| state_as!(s, Map).iter().map(|(k, _)| k.clone()).collect())
                    .unwrap_or_default(),
            )
        })
    }

    /// The variable's name (within its namespace).
    pub fn name(&self) -> &str {
        crate::handles::shown(&self.name)
    }
}
