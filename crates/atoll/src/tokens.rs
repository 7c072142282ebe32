//! The HTTP API's bearer tokens. Each reaches some namespaces (or all) to
//! read, to write, or to administer the node (peers, namespaces, checks,
//! status and metrics: the admin routes). A node keeps only their SHA-256
//! hashes; a token presented is hashed and compared with every one in
//! constant time.

use std::fmt::Write as _;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read its namespaces' variables.
    Read,
    /// Read and write them.
    Write,
    /// Read and write them, and the admin routes.
    Admin,
}

impl Access {
    /// Its name in a configuration file: `read`, `write` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// The access named `name` (`read`, `write`, `admin`).
    pub fn parse(name: &str) -> Option<Access> {
        [Access::Read, Access::Write, Access::Admin]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// A bearer token of the HTTP API, as a node keeps it: hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpToken {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// The namespaces it reaches; `"*"` among them: every namespace.
    pub namespaces: Vec<String>,
    /// What it may do there.
    pub access: Access,
}

fn sha256(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl HttpToken {
    /// The token `secret`, kept hashed.
    pub fn new(secret: &str, namespaces: Vec<String>, access: Access) -> HttpToken {
        HttpToken {
            sha256: sha256(secret),
            namespaces,
            access,
        }
    }

    /// A new random token (256 bits, as 64 hex digits) and how a node keeps it.
    pub fn generate(namespaces: Vec<String>, access: Access) -> (String, HttpToken) {
        let bytes: [u8; 32] = rand::random();
        let secret = hex(&bytes);
        let token = HttpToken::new(&secret, namespaces, access);
        (secret, token)
    }

    /// A token kept as its hash in hex (64 digits), as `sha256_hex` writes it.
    pub fn from_hash(
        sha256_hex: &str,
        namespaces: Vec<String>,
        access: Access,
    ) -> Option<HttpToken> {
        let s = sha256_hex.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut sha256 = [0u8; 32];
        for (i, pair) in s.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            sha256[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(HttpToken {
            sha256,
            namespaces,
            access,
        })
    }

    /// Its hash, in hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    fn reaches(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == ns)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What a request presented and may do.
pub(crate) enum Grant {
    /// No token is configured: the API is open (it listens on loopback).
    Open,
    /// A token configured here.
    Token(HttpToken),
}

impl Grant {
    /// Whether it may do `need` in namespace `ns`; why not, if not.
    pub(crate) fn allows(&self, ns: &str, need: Access) -> Result<(), String> {
        let Grant::Token(t) = self else {
            return Ok(());
        };
        if !t.reaches(ns) {
            return Err(format!(
                "this token does not reach namespace {ns:?} (it reaches {})",
                t.namespaces.join(", ")
            ));
        }
        if t.access < need {
            return Err(format!(
                "this token may {} here, and this needs {}",
                t.access.name(),
                need.name()
            ));
        }
        Ok(())
    }

    /// Whether it may use the admin routes; why not, if not.
    pub(crate) fn admin(&self) -> Result<(), String> {
        match self {
            Grant::Token(t) if t.access < Access::Admin => {
                Err("this route needs an admin token".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether it reaches namespace `ns` at all.
    pub(crate) fn sees(&self, ns: &str) -> bool {
        self.allows(ns, Access::Read).is_ok()
    }
}

/// The tokens a node's HTTP API takes.
#[derive(Clone, Default)]
pub(crate) struct Tokens(Vec<HttpToken>);

impl Tokens {
    /// `http_token` (an admin token reaching every namespace) and `http_tokens`.
    pub(crate) fn new(admin: Option<&str>, tokens: &[HttpToken]) -> Tokens {
        let mut all: Vec<HttpToken> = admin
            .filter(|t| !t.is_empty())
            .map(|t| HttpToken::new(t, vec!["*".into()], Access::Admin))
            .into_iter()
            .collect();
        all.extend(tokens.iter().cloned());
        Tokens(all)
    }

    /// The grant of a request that presented `given` (the bearer token),
    /// `None` if it is missing or unknown. Every configured hash is
    /// compared, in constant time each.
    pub(crate) fn grant(&self, given: Option<&str>) -> Option<Grant> {
        if self.0.is_empty() {
            return Some(Grant::Open);
        }
        let hash = sha256(given?);
        let mut found = None;
        for t in &self.0 {
            let diff = t
                .sha256
                .iter()
                .zip(hash.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(t.clone());
            }
        }
        found.map(Grant::Token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reaches_its_namespaces_with_its_access() {
        let (secret, t) = HttpToken::generate(vec!["billing".into()], Access::Write);
        assert_eq!(secret.len(), 64);
        let kept = HttpToken::from_hash(&t.sha256_hex(), t.namespaces.clone(), t.access);
        assert_eq!(kept.as_ref(), Some(&t));
        let tokens = Tokens::new(Some("root"), &[t]);
        assert!(tokens.grant(None).is_none());
        assert!(tokens.grant(Some("wrong")).is_none());
        let g = tokens.grant(Some(&secret)).expect("known");
        assert!(g.allows("billing", Access::Write).is_ok());
        assert!(g.allows("billing", Access::Read).is_ok());
        assert!(g.allows("shop", Access::Read).is_err());
        assert!(g.allows("billing", Access::Admin).is_err());
        assert!(g.admin().is_err());
        let root = tokens.grant(Some("root")).expect("the admin token");
        assert!(root.admin().is_ok() && root.allows("shop", Access::Write).is_ok());
        assert!(Tokens::new(None, &[]).grant(None).is_some());
        assert!(HttpToken::from_hash("zz", vec![], Access::Read).is_none());
    }
}
