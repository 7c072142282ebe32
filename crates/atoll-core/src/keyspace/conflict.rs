//! Type conflicts: a name created as two types on two sides of a split.
//! Every replica resolves one the same way, whatever the order deltas arrive
//! in (see [`Keyspace::merge_state`], which calls [`Keyspace::merge_conflict`]
//! when a delta's kind is not the name's here), and system names, whose
//! kind is fixed, are kept apart.

use super::{Applied, Keyspace, Var};
use crate::{Error, Result};
use atoll_crdt::codec;
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::{Backend, LogEntry, VarMeta};

/// The prefix of the system's own variables (membership, conflict copies):
/// the data API, the CLI's data commands and the embedded handles refuse to
/// write them.
pub const SYSTEM_PREFIX: &str = "_atoll.";

/// The prefix of conflict copies: `_atoll.conflict/{kind}/{name}` holds what
/// was written to `name` as a `kind` on a replica where `name` has another
/// kind (see [`Keyspace::merge_state`]). Readable through the data API.
pub const CONFLICT_PREFIX: &str = "_atoll.conflict/";

/// Whether `name` is a system variable. A namespace's variable
/// (`_atoll.ns/{ns}/{name}`, see [`crate::namespaced`]) is not: it is a
/// user's, which the data API reaches only through its namespace.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX) && !name.starts_with(crate::NS_PREFIX)
}

/// The name of the conflict copy that holds what was written to `name` as a
/// `kind` where `name` is of another kind.
pub fn conflict_name(name: &str, kind: Kind) -> String {
    format!("{CONFLICT_PREFIX}{kind}/{name}")
}

/// The variable and kind a conflict copy's name stands for; `None` for any
/// other name.
pub fn conflict_of(name: &str) -> Option<(&str, Kind)> {
    let rest = name.strip_prefix(CONFLICT_PREFIX)?;
    let (kind, of) = rest.split_once('/')?;
    let kind = Kind::ALL.into_iter().find(|k| k.name() == kind)?;
    Some((of, kind))
}

/// A name whose kind is fixed holds only that kind: a conflict copy the
/// one its name says, an ownership record ([`super::OWNER_PREFIX`]) an
/// [`Kind::Owner`], an escrow record ([`super::ESCROW_PREFIX`]) an
/// [`Kind::Escrow`], a system variable its type (`names::system_kind`);
/// and no other name holds an ownership or escrow record.
pub(super) fn fixed_kind(name: &str, kind: Kind) -> Result<()> {
    let fixed = match conflict_of(name) {
        Some((_, k)) => Some(k),
        None if super::owned_by_record(name).is_some() => Some(Kind::Owner),
        None if super::escrowed_by_record(name).is_some() => Some(Kind::Escrow),
        None => super::names::system_kind(name),
    };
    match fixed {
        Some(k) if k != kind => Err(Error::TypeMismatch {
            name: name.to_string(),
            expected: k,
            found: kind,
        }),
        None if kind == Kind::Owner => Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason: "an ownership record is named _atoll.owner/{name}",
        }),
        None if kind == Kind::Escrow => Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason: "an escrow record is named _atoll.escrow/{name}",
        }),
        _ => Ok(()),
    }
}

/// A name created with two types on two sides of a split (see
/// [`Keyspace::merge_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The name.
    pub name: String,
    /// The type that keeps the name, on every replica.
    pub kept: Kind,
    /// The type whose data moved to the copy.
    pub moved: Kind,
    /// The conflict copy holding it.
    pub copy: String,
}

/// What [`Keyspace::take_conflicts`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConflictEvent {
    /// A conflict copy was created here.
    Found(Conflict),
    /// A variable moved into its conflict copy: the copy's change.
    Moved(Applied),
}

impl<B: Backend> Keyspace<B> {
    /// A delta of `name` as a kind other than `held`, the kind `name` has
    /// here: the name was created with two types on two sides of a split.
    /// Every replica resolves it the same way, whatever the order deltas
    /// arrive in: the lesser kind (in [`Kind::ALL`]'s order: counter,
    /// register, mvregister, set, bag, map) keeps the name, and what was
    /// written as the other kind lives on in its conflict copy,
    /// [`conflict_name`]. If the delta's kind is the lesser one, the
    /// variable held here moves to its copy first (a join: the copy may hold
    /// some of it already), then the name starts over as the delta's kind,
    /// in one atomic batch. The log entries of the old kind still in the log
    /// are replayed into the copy on recovery, and peers route them the same
    /// way. Each copy created here is reported once by
    /// [`Keyspace::take_conflicts`].
    ///
    /// A system variable or a conflict copy has a fixed kind: a delta of
    /// another kind is refused ([`Error::TypeMismatch`]).
    pub(super) fn merge_conflict(
        &mut self,
        origin: ReplicaId,
        name: &str,
        held: Kind,
        delta: State,
        encoded: Option<std::borrow::Cow<'_, [u8]>>,
        now_ms: u64,
    ) -> Result<Option<Applied>> {
        let kind = delta.kind();
        if is_reserved(name) {
            return Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: held,
                found: kind,
            });
        }
        let (moved, kept) = (kind.max(held), kind.min(held));
        let copy = conflict_name(name, moved);
        let new_copy = self.load(&copy)?.is_none();
        let applied = if kind > held {
            self.merge_state(origin, &copy, kind, delta, encoded, now_ms)?
        } else {
            // Our variable moves to its copy, whole, as a change of our own.
            let state = self
                .vars
                .get(name)
                .map_or_else(|| State::new(held), |v| v.state.clone());
            let incarnation = self.incarnation;
            let moved_applied = self.merge_state(incarnation, &copy, held, state, None, now_ms)?;
            let applied = self.restart_as(origin, name, delta, encoded)?;
            self.conflicts
                .extend(moved_applied.map(ConflictEvent::Moved));
            applied
        };
        if new_copy && self.vars.contains_key(&copy) {
            self.conflicts.push(ConflictEvent::Found(Conflict {
                name: name.to_string(),
                kept,
                moved,
                copy,
            }));
        }
        Ok(applied)
    }

    /// The second half of a conflict the delta's kind won: `name` starts over
    /// as the delta's kind, holding just the delta. Its metadata, the
    /// removal of its stored state and the delta's log entry go in one
    /// atomic batch.
    fn restart_as(
        &mut self,
        origin: ReplicaId,
        name: &str,
        delta: State,
        encoded: Option<std::borrow::Cow<'_, [u8]>>,
    ) -> Result<Option<Applied>> {
        let kind = delta.kind();
        if State::is_bottom(&delta) {
            return Ok(None);
        }
        if let Some(ts) = delta.max_timestamp() {
            self.clock.witness(ts);
        }
        // All of it is new: the name holds nothing of this kind.
        let logged = encoded.map_or_else(|| codec::encode(&delta), |b| b.into_owned());
        let mut state = State::new(kind);
        // Same kind: a state of `kind` joins a delta of `kind`.
        state.join(delta).map_err(|_| Error::TypeMismatch {
            name: name.to_string(),
            expected: kind,
            found: kind,
        })?;
        self.versions = self.versions.wrapping_add(1);
        let meta = VarMeta::new(kind);
        let entry = LogEntry {
            name: name.to_string(),
            kind,
            origin,
            delta: logged,
        };
        self.check_writable()?;
        let seq = match self.storage.append_restarting(&meta, &entry) {
            Ok(seq) => seq,
            Err(e) => {
                self.reload(name);
                return Err(e.into());
            }
        };
        let replaced = self.vars.insert(
            name.to_string(),
            Var {
                meta,
                state,
                version: self.versions,
                indexed: Vec::new(),
                bytes: 0,
                used: true,
            },
        );
        if let Some(old) = replaced {
            self.resident_bytes = self.resident_bytes.saturating_sub(old.bytes);
        }
        self.after_append(name, seq, origin)?;
        Ok(Some(Applied {
            name: name.to_string(),
            kind,
            seq,
            origin,
        }))
    }

    /// What type conflicts this keyspace met since the last call: each
    /// conflict copy created here, and each move of a variable into its copy.
    pub fn take_conflicts(&mut self) -> Vec<ConflictEvent> {
        std::mem::take(&mut self.conflicts)
    }
}
