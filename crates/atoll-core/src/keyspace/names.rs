//! Variable names: what a name may be, and why one is refused.

use crate::{conflict_of, is_reserved, Error, Result, CONFLICT_PREFIX};

/// The longest variable name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The prefix of ownership records: `_atoll.owner/{name}` records who owns
/// the variable `name` (an [`atoll_crdt::Ownership`], of kind
/// [`atoll_crdt::variable::Kind::Owner`]). Only the replica writes them.
pub const OWNER_PREFIX: &str = "_atoll.owner/";

/// The name of the record of who owns `name`.
pub fn owner_record(name: &str) -> String {
    format!("{OWNER_PREFIX}{name}")
}

/// The variable an ownership record's name stands for; `None` for any
/// other name.
pub fn owned_by_record(name: &str) -> Option<&str> {
    name.strip_prefix(OWNER_PREFIX)
}

/// The prefix of escrow records: `_atoll.escrow/{name}` holds the escrow
/// of the counter `name`'s decrement rights (an [`atoll_crdt::Escrow`], of
/// kind [`atoll_crdt::variable::Kind::Escrow`]). Only the replica writes
/// them.
pub const ESCROW_PREFIX: &str = "_atoll.escrow/";

/// The name of the escrow record of the counter `name`.
pub fn escrow_record(name: &str) -> String {
    format!("{ESCROW_PREFIX}{name}")
}

/// The counter an escrow record's name stands for; `None` for any other
/// name.
pub fn escrowed_by_record(name: &str) -> Option<&str> {
    name.strip_prefix(ESCROW_PREFIX)
}

/// The variable a system record's name (ownership or escrow) stands for.
fn record_of(name: &str) -> Option<&str> {
    owned_by_record(name).or_else(|| escrowed_by_record(name))
}

/// Checks a variable name: 1 to 255 bytes of ASCII letters, digits and `_ - . : / @`,
/// starting with a letter, digit or `_`. A conflict copy's name
/// (`_atoll.conflict/{kind}/{name}`) may be longer: its `name` is checked,
/// and must not itself be a system name; so may an ownership or escrow
/// record's (`_atoll.owner/{name}`, `_atoll.escrow/{name}`).
pub fn validate_name(name: &str) -> Result<()> {
    if let Some(of) = record_of(name) {
        if is_reserved(of) {
            return Err(Error::InvalidName {
                name: name.chars().take(80).collect(),
                reason:
                    "a system record is named _atoll.owner/{name} or _atoll.escrow/{name}, of a name outside _atoll.",
            });
        }
        return validate_name(of);
    }
    if name.starts_with(CONFLICT_PREFIX) {
        return match conflict_of(name) {
            Some((of, _)) if !is_reserved(of) => validate_name(of),
            _ => Err(Error::InvalidName {
                name: name.chars().take(80).collect(),
                reason: "a conflict copy is named _atoll.conflict/{type}/{name}, of a name outside _atoll.",
            }),
        };
    }
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name must be at most 255 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@".contains(&b))
    {
        return bad("use only ASCII letters, digits and _ - . : / @");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() && name.as_bytes()[0] != b'_' {
        return bad("a name must start with a letter, a digit or _");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_reason() {
        for ok in ["hits", "a", "_x", "site1/cart:42", "u@host.example-1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", "/abs", "sp ace", "ünï", &"x".repeat(256)] {
            let e = validate_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}");
        }
    }
}
