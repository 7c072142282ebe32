//! Namespaces: several applications' variables in one store, each under its
//! own names. A namespace's variable `name` is the variable
//! `_atoll.ns/{ns}/{name}` underneath ([`atoll_core::namespaced`]), so
//! replication, ownership and checks need nothing of their own; the
//! default namespace's variables keep their bare names. Namespaces other
//! than `default` are created before use, in a replicated system set
//! (`_atoll.namespaces`): one created on any node exists on every node its
//! peers reach. Its variables stay on the node they are written on until
//! its mirroring is enabled (`crate::mirror`).

use crate::{
    Bag, Counter, Error, Kind, Map, MvRegister, Ownership, Register, ReplicaId, Result, Set, Store,
};
use atoll_core::{
    conflict_name, conflict_of, escrowed_by_record, is_reserved, namespace_of, namespaced,
    owned_by_record, validate_namespace, NS_PREFIX,
};
use serde::{de::DeserializeOwned, Serialize};

pub use atoll_core::DEFAULT_NS;

pub(crate) use atoll_core::NAMESPACES_VAR;

/// The variables of one namespace (`Store::namespace`). Its handles are
/// the store's own handle types; their `name` is the name within the
/// namespace.
#[derive(Clone)]
pub struct Namespace {
    store: Store,
    name: String,
}

impl Store {
    /// The namespace `ns`: `default`, or one created with
    /// [`Store::create_namespace`] (here or on a peer).
    pub fn namespace(&self, ns: &str) -> Result<Namespace> {
        validate_namespace(ns)?;
        if ns != DEFAULT_NS && !self.namespace_set()?.contains(&ns.to_string())? {
            return Err(Error::NoNamespace { ns: ns.to_string() });
        }
        Ok(Namespace {
            store: self.clone(),
            name: ns.to_string(),
        })
    }

    /// The default namespace: the store's variables with bare names.
    pub fn default_namespace(&self) -> Namespace {
        Namespace {
            store: self.clone(),
            name: DEFAULT_NS.to_string(),
        }
    }

    /// Creates the namespace `ns` (nothing to do if it exists), on every
    /// node this one replicates with.
    pub fn create_namespace(&self, ns: &str) -> Result<Namespace> {
        validate_namespace(ns)?;
        if ns != DEFAULT_NS {
            self.namespace_set()?.add(&ns.to_string())?;
        }
        self.namespace(ns)
    }

    /// Every namespace, `default` first, then in name order.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        let mut all = vec![DEFAULT_NS.to_string()];
        let mut created = self.namespace_set()?.members()?;
        created.sort();
        all.extend(created.into_iter().filter(|ns| ns != DEFAULT_NS));
        Ok(all)
    }

    /// Drops the namespace `ns`. A namespace that is mirrored
    /// ([`Error::NamespaceMirrored`]), or holds variables
    /// ([`Error::NamespaceNotEmpty`]), is refused unless `force`: atoll does not
    /// delete variables, so a forced drop only hides them, and creating the
    /// namespace again shows them again. Returns whether it existed.
    pub fn drop_namespace(&self, ns: &str, force: bool) -> Result<bool> {
        validate_namespace(ns)?;
        if ns == DEFAULT_NS {
            return Err(Error::InvalidInput {
                what: "the default namespace cannot be dropped".into(),
            });
        }
        let held = Namespace {
            store: self.clone(),
            name: ns.to_string(),
        }
        .variables()?
        .len();
        if !force && self.replica().mirroring().mirrored(ns) {
            return Err(Error::NamespaceMirrored { ns: ns.to_string() });
        }
        if held > 0 && !force {
            return Err(Error::NamespaceNotEmpty {
                ns: ns.to_string(),
                variables: held,
            });
        }
        self.namespace_set()?.remove(&ns.to_string())
    }

    fn namespace_set(&self) -> Result<Set<String>> {
        self.system_set(NAMESPACES_VAR)
    }
}

impl Namespace {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store it is part of.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The name underneath of this namespace's variable `name`. System
    /// names (`_atoll.`) are refused here, in every namespace, but for the
    /// conflict copies of the namespace's own variables
    /// (`_atoll.conflict/{type}/{name}`, as [`Namespace::conflicts`] names
    /// them), which can be read. So is a name longer, with the namespace's
    /// prefix, than 255 bytes.
    pub fn full_name(&self, name: &str) -> Result<String> {
        let refuse = || {
            Error::Reserved {
            name: name.chars().take(80).collect(),
            what: "a namespace's variables have names outside _atoll., and only conflict copies (_atoll.conflict/TYPE/NAME) of its own variables can be read",
        }
        };
        let full = match conflict_of(name) {
            Some((of, kind)) => {
                if is_reserved(of) || of.starts_with(NS_PREFIX) {
                    return Err(refuse());
                }
                atoll_core::validate_name(of)?;
                conflict_name(&namespaced(&self.name, of), kind)
            }
            None if is_reserved(name) || name.starts_with(NS_PREFIX) => return Err(refuse()),
            None => {
                atoll_core::validate_name(name)?;
                namespaced(&self.name, name)
            }
        };
        atoll_core::validate_name(&full)?;
        Ok(full)
    }

    /// A handle on the counter `name`.
    pub fn counter(&self, name: &str) -> Result<Counter> {
        self.store.counter(&self.full_name(name)?)
    }

    /// [`Counter::incr`] without a handle (one turn of the store's lock).
    pub(crate) fn counter_add(&self, name: &str, by: i64) -> Result<i128> {
        self.store.counter_add(&self.full_name(name)?, by)
    }

    /// A handle on the last-writer-wins register `name` of `T`.
    pub fn register<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Register<T>> {
        self.store.register(&self.full_name(name)?)
    }

    /// A handle on the multi-value register `name` of `T`.
    pub fn mv_register<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<MvRegister<T>> {
        self.store.mv_register(&self.full_name(name)?)
    }

    /// A handle on the add-wins set `name` of `T`.
    pub fn set<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Set<T>> {
        self.store.set(&self.full_name(name)?)
    }

    /// A handle on the owned bag `name` of `T`.
    pub fn bag<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Bag<T>> {
        self.store.bag(&self.full_name(name)?)
    }

    /// A handle on the map `name`.
    pub fn map(&self, name: &str) -> Result<Map> {
        self.store.map(&self.full_name(name)?)
    }

    /// Its variables and their kinds, in name order, with the conflict
    /// copies of its variables (as it names them). Ownership and escrow
    /// records are no namespace's; the default namespace also lists the
    /// system's variables (the peer set).
    pub fn variables(&self) -> Result<Vec<(String, Kind)>> {
        Ok(self
            .store
            .variables()?
            .into_iter()
            .filter_map(|(full, kind)| Some((self.own_name(&full)?, kind)))
            .collect())
    }

    /// Its type conflicts (see [`Store::conflicts`]): the name within the
    /// namespace, the type that kept it, the type moved out, and the
    /// conflict copy holding the moved type's data (as this namespace
    /// names it: `_atoll.conflict/{type}/{name}`).
    pub fn conflicts(&self) -> Result<Vec<(String, Kind, Kind, String)>> {
        Ok(self
            .store
            .conflicts()?
            .into_iter()
            .filter_map(|(full, kept, moved, _)| {
                let name = self.own_name(&full)?;
                let copy = conflict_name(&name, moved);
                Some((name, kept, moved, copy))
            })
            .collect())
    }

    /// The name within this namespace of the variable `full`, if it is
    /// listed as one of this namespace's.
    pub(crate) fn own_name(&self, full: &str) -> Option<String> {
        if owned_by_record(full).is_some() || escrowed_by_record(full).is_some() {
            return None;
        }
        let default = self.name == DEFAULT_NS;
        match conflict_of(full) {
            // A conflict copy: as the namespace of its variable names it.
            Some((of, kind)) => match namespace_of(of) {
                Some((ns, name)) if ns == self.name => Some(conflict_name(name, kind)),
                None if default => Some(full.to_string()),
                _ => None,
            },
            None => match namespace_of(full) {
                Some((ns, name)) if ns == self.name => Some(name.to_string()),
                None if default => Some(full.to_string()),
                _ => None,
            },
        }
    }

    /// Who owns `name` ([`Store::owner`]).
    pub fn owner(&self, name: &str) -> Result<Ownership> {
        self.store.owner(&self.full_name(name)?)
    }

    /// Takes ownership of `name` here ([`Store::own`]).
    pub fn own(&self, name: &str) -> Result<()> {
        self.store.own(&self.full_name(name)?)
    }

    /// Makes node `to` the owner of `name` ([`Store::own_by`]).
    pub fn own_by(&self, name: &str, to: ReplicaId) -> Result<()> {
        self.store.own_by(&self.full_name(name)?, to)
    }

    /// Makes `name` ownerless again ([`Store::release`]).
    pub fn release(&self, name: &str) -> Result<()> {
        self.store.release(&self.full_name(name)?)
    }

    /// An operator's override of `name`'s owner ([`Store::force_owner`]).
    pub fn force_owner(&self, name: &str, to: ReplicaId) -> Result<Ownership> {
        self.store.force_owner(&self.full_name(name)?, to)
    }

    /// Brings this node's copy of `name` up to its owner's
    /// ([`Store::sync_with_owner`]).
    pub(crate) fn sync_with_owner(&self, name: &str, kind: Kind) -> Result<()> {
        self.store.sync_with_owner(&self.full_name(name)?, kind)
    }
}
