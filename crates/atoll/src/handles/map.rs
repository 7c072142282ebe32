//! The map handle: string keys, each with a counter, a register and a set.

use super::{crdt, decode, encode, join_step};
use crate::{Error, Result, Store};
use atoll_core::OpCtx;
use atoll_crdt::set_add;
use atoll_crdt::set_remove;
use atoll_crdt::variable::{Kind, MapValue, State};
use atoll_crdt::Causal;
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
    fn update_key(
        &self,
        key: &str,
        f: impl FnOnce(&MapValue, &atoll_crdt::CausalContext, &OpCtx) -> Result<Causal<MapValue>>,
    ) -> Result<()> {
        self.store.update(&self.name, Kind::Map, |state, ctx| {
            let m = state_as!(state, Map);
            let d = m.update(key.to_string(), |v, c| f(v, c, ctx))?;
            Ok((Some(State::Map(d)), ()))
        })
    }

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
        self.store.update(&self.name, Kind::Map, |state, ctx| {
            let m = state_as!(state, Map);
            let key = key.to_string();
            let mut delta = None;
            // The counter first: it is the one step that can fail
            // (overflow), and a failed operation must change nothing.
            if let Some(by) = incr {
                let d = m.update(key.clone(), |v, c| {
                    v.counter
                        .add(c, ctx.replica, by)
                        .map(MapValue::with_counter)
                        .map_err(crdt(&self.name))
                })?;
                join_step(&mut delta, State::Map(d));
            }
            if let Some(bytes) = set {
                let d = m.update(key.clone(), |v, c| {
                    Ok::<_, Error>(MapValue::with_register(v.register.set(
                        c,
                        ctx.replica,
                        ctx.ts,
                        bytes,
                    )))
                })?;
                join_step(&mut delta, State::Map(d));
            }
            if let Some(bytes) = add {
                let d = m.update(key, |v, c| {
                    Ok::<_, Error>(MapValue::with_set(set_add(&v.set, c, ctx.replica, bytes)))
                })?;
                join_step(&mut delta, State::Map(d));
            }
            Ok((delta, ()))
        })
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

    /// Adds `member` to the set at `key`.
    pub fn add<T: Serialize>(&self, key: &str, member: &T) -> Result<()> {
        self.change(key, None, None, Some(member))
    }

    /// Removes `member` from the set at `key`.
    pub fn remove_member<T: Serialize>(&self, key: &str, member: &T) -> Result<()> {
        let bytes = encode(&self.store, &self.name, member)?;
        self.update_key(key, |v, _, _| {
            Ok(MapValue::with_set(set_remove(&v.set, &bytes)))
        })
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
        self.store.update(&self.name, Kind::Map, |state, _| {
            let m = state_as!(state, Map);
            let key = key.to_string();
            if m.get(&key).is_none() {
                return Ok((None, false));
            }
            Ok((Some(State::Map(m.remove(&key))), true))
        })
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

    /// The variable's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
