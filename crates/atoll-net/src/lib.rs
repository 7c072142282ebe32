//! atoll's transport: QUIC (quinn) with mutual TLS (rustls, ring) against a
//! cluster CA (rcgen).
//!
//! - [`certs`]: make a cluster CA and node certificates.
//! - [`tls`]: mutual-TLS configuration from a node directory.
//! - [`frame`]: length-prefixed frames, bounded before allocation; the handshake.
//! - [`Transport`]: one endpoint per node; connections with a handshake that
//!   checks protocol version, cluster id and node id; reconnecting dialers.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod certs;
pub mod frame;
pub mod tls;
mod transport;

pub use transport::{probe, Dialer, NetEvent, Transport, TransportConfig};

/// Application close codes, sent to the peer with a readable reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// The peer speaks another protocol version.
    VersionMismatch = 1,
    /// The peer belongs to another cluster.
    ClusterMismatch = 2,
    /// The handshake frame was malformed.
    BadHandshake = 3,
    /// A frame exceeded the size limit.
    FrameTooLarge = 4,
    /// The peer sent a message that breaks the protocol.
    ProtocolViolation = 5,
    /// Another connection to the same peer is kept.
    Duplicate = 6,
    /// The node is shutting down.
    Shutdown = 7,
    /// A node dialed itself.
    SelfConnection = 8,
    /// The peer was removed.
    PeerRemoved = 9,
}

impl CloseCode {
    /// The code a peer closed a connection with, if it is one of ours.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        use CloseCode::*;
        [
            VersionMismatch,
            ClusterMismatch,
            BadHandshake,
            FrameTooLarge,
            ProtocolViolation,
            Duplicate,
            Shutdown,
            SelfConnection,
            PeerRemoved,
        ]
        .into_iter()
        .find(|c| *c as u64 == code)
    }
}

/// The error of a library the transport uses (rustls, quinn, rcgen, the
/// operating system), kept as a [`NetError`]'s source.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A transport failure. Each variant keeps the underlying error, if there is
/// one, as its source.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key could not be made, read or used.
    #[error("certificate: {what}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Certificate {
        /// Which file or step, and what is wrong.
        what: String,
        /// The library's error, if one.
        source: Option<Source>,
    },
    /// The QUIC or TLS configuration was refused.
    #[error("transport configuration: {source}")]
    Config {
        /// The library's error.
        source: Source,
    },
    /// The listen address could not be bound (or read back).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The QUIC or TLS handshake failed (for example, a certificate from
    /// another CA), or the connection was lost.
    #[error("connection failed: {why}")]
    Tls {
        /// What quinn reported, readably.
        why: String,
        /// A close code of ours, if the peer closed with one.
        code: Option<CloseCode>,
    },
    /// atoll's handshake failed or was refused.
    #[error("handshake refused: {why}")]
    Handshake {
        /// The close code sent or received, if there was one.
        code: Option<CloseCode>,
        /// The reason, as the peer sees it.
        why: String,
    },
    /// A frame longer than the limit was announced; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream failed.
    #[error("stream: {source}")]
    Stream {
        /// quinn's error.
        source: Source,
    },
}

impl NetError {
    /// The close code this failure carries, if any: the code a handshake
    /// was refused with, or a peer closed the connection with.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            NetError::Tls { code, .. } | NetError::Handshake { code, .. } => *code,
            _ => None,
        }
    }

    /// A certificate error with no underlying one.
    pub(crate) fn certificate(what: impl Into<String>) -> NetError {
        NetError::Certificate {
            what: what.into(),
            source: None,
        }
    }

    /// A certificate error caused by `source`.
    pub(crate) fn certificate_from(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> NetError {
        NetError::Certificate {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A stream error caused by `source`.
    pub(crate) fn stream(source: impl std::error::Error + Send + Sync + 'static) -> NetError {
        NetError::Stream {
            source: Box::new(source),
        }
    }

    /// A configuration error caused by `source`.
    pub(crate) fn config(source: impl std::error::Error + Send + Sync + 'static) -> NetError {
        NetError::Config {
            source: Box::new(source),
        }
    }
}
