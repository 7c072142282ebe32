//! What the benchmarks share: raw quinn endpoints with a cluster's mutual
//! TLS, the baseline atoll's transport is measured against.

use atoll_net::tls::Identity;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A server endpoint with the identity in `certs_a` and a client endpoint
/// with the one in `certs_b`, both on 127.0.0.1, and the server's address.
/// Call it inside a tokio runtime.
pub(crate) fn raw_endpoints(
    certs_a: &Path,
    certs_b: &Path,
) -> (quinn::Endpoint, quinn::Endpoint, SocketAddr) {
    let server_id = Identity::load(certs_a).unwrap();
    let client_id = Identity::load(certs_b).unwrap();
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_id.server_config().unwrap()).unwrap(),
    ));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_id.client_config().unwrap()).unwrap(),
    )));
    (server, client, addr)
}

/// A runtime like a node's: two worker threads.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
