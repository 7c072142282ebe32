//! The errors of atoll's embedded API and node: those of this layer, and
//! the replica's ([`CoreError`]) and the transport's ([`NetError`]) as their
//! sources.

use atoll_core::ConfigError;
use atoll_net::NetError;
use std::net::SocketAddr;

/// The replica's errors (names, types, the data types' refusals, storage,
/// the fence): each variant says whether anything changed.
pub use atoll_core::Error as CoreError;

/// Why a call failed. Each variant says whether anything changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The replica refused or failed the operation; [`CoreError`]'s
    /// variant says why, and whether anything changed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The name is in the system's reserved prefix (`_atoll.`): only the
    /// node's own admin operations change those variables (membership), and
    /// only conflict copies (`_atoll.conflict/...`) can be read. Nothing
    /// changed.
    #[error(
        "variable {name:?}: names starting with \"_atoll.\" are reserved for the system; {what}"
    )]
    Reserved {
        /// The name given.
        name: String,
        /// What is refused, and what to use instead.
        what: &'static str,
    },
    /// A value could not be encoded, or stored bytes could not be decoded
    /// as the requested type (the variable was written with another value
    /// type). Nothing changed.
    #[error("variable {name:?}: value does not (de)serialize as the requested type: {source}")]
    Value {
        /// The variable.
        name: String,
        /// The serializer's error.
        source: postcard::Error,
    },
    /// A value is larger than the configured maximum. Nothing changed.
    #[error("variable {name:?}: value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// The variable.
        name: String,
        /// The encoded value's length.
        len: usize,
        /// The configured maximum (`Config::max_value_len`).
        max: usize,
    },
    /// No namespace of that name was created (`Store::create_namespace`,
    /// `atoll ns create`). Nothing changed.
    #[error("no namespace {ns:?}: create it first (atoll ns create {ns})")]
    NoNamespace {
        /// The namespace asked for.
        ns: String,
    },
    /// A namespace that holds variables is dropped only when forced
    /// (atoll does not delete variables: a forced drop hides them). Nothing
    /// changed.
    #[error("namespace {ns:?} holds {variables} variables: atoll does not delete variables, so dropping it would only hide them; drop it with force to do so")]
    NamespaceNotEmpty {
        /// The namespace.
        ns: String,
        /// How many variables it holds.
        variables: usize,
    },
    /// A namespace that is mirrored is dropped only when forced: its
    /// variables go on replicating, and the nodes it is mirrored to keep
    /// them. Nothing changed.
    #[error("namespace {ns:?} is mirrored: its variables go on replicating, and a drop would only hide them here; disable its mirroring first (`atoll mirror disable {ns}`), or drop it with force")]
    NamespaceMirrored {
        /// The namespace.
        ns: String,
    },
    /// A request's argument is malformed (an element id, a node id).
    /// Nothing changed.
    #[error("{what}")]
    InvalidInput {
        /// What is wrong, and what to send.
        what: String,
    },
    /// A setting is out of its range. Nothing was opened or started.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP API would listen on an address other hosts reach, with no
    /// token. Nothing was started.
    #[error(
        "the HTTP API would listen on {addr}, which is not loopback: set http_token or http_tokens"
    )]
    HttpTokenRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The transport could not start (certificates, the listen address).
    /// Nothing was started.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// The node could not do something the operating system refused (start
    /// its runtime, listen for HTTP). Nothing was started.
    #[error("{what}: {source}")]
    Io {
        /// What the node was doing.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A peer added by address did not answer (the node keeps trying). The
    /// address was added to the peer set.
    #[error("could not connect to {addr} (still trying): {why}")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// The last refusal or failure seen for it.
        why: String,
    },
}

impl From<atoll_store::StoreError> for Error {
    fn from(e: atoll_store::StoreError) -> Self {
        Error::Core(e.into())
    }
}

/// The result of a call of atoll's API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
