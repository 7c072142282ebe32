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

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key could not be made, read or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The QUIC or TLS configuration was refused.
    #[error("transport configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}")]
    Bind(String),
    /// The QUIC or TLS handshake failed (for example, a certificate from another CA).
    #[error("connection failed: {0}")]
    Tls(String),
    /// atoll's handshake failed or was refused.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// A frame longer than the limit was announced; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream failed.
    #[error("stream: {0}")]
    Stream(String),
}
