//! Peers given by host name: resolved (IPv4 first), and followed to their
//! new addresses.

use super::*;

/// How often peers given by host name are resolved again.
pub(super) const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// Resolves a peer's `host:port` (or address) to one address, IPv4 first
/// ("localhost" names both, and a node listens on one); the error says why.
/// Blocks while the name is looked up.
pub fn resolve_peer(host: &str) -> std::result::Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    first_v4(host.to_socket_addrs().map_err(|e| e.to_string())?)
}

/// [`resolve_peer`] without blocking the runtime.
pub(crate) async fn resolve_peer_async(host: &str) -> std::result::Result<SocketAddr, String> {
    first_v4(
        tokio::net::lookup_host(host)
            .await
            .map_err(|e| e.to_string())?,
    )
}

pub(super) fn first_v4(
    addrs: impl Iterator<Item = SocketAddr>,
) -> std::result::Result<SocketAddr, String> {
    addrs
        .min_by_key(|a| a.is_ipv6())
        .ok_or_else(|| "the name resolves to no address".to_string())
}

/// A host name's address now (IPv4 first); `None`, logged, if it does not
/// resolve.
pub(super) fn resolve_host(host: &str) -> Option<SocketAddr> {
    match resolve_peer(host) {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::warn!(%host, "peer host does not resolve (trying again): {e}");
            None
        }
    }
}

/// Resolves the peers given by host name again and again; follows each to
/// its new address (see `NodeConfig::peer_hosts`). Ends with the node's
/// runtime.
pub(super) async fn follow_names(
    store: Store,
    control: Arc<Control>,
    mut named: Vec<(String, Option<SocketAddr>)>,
) {
    loop {
        tokio::time::sleep(RESOLVE_EVERY).await;
        for (host, current) in named.iter_mut() {
            let now = match resolve_peer_async(host).await {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::debug!(%host, "peer host does not resolve: {e}");
                    None
                }
            };
            let Some(new) = now.filter(|a| Some(*a) != *current) else {
                continue;
            };
            tracing::info!(%host, %new, old = ?current, "peer host resolves to a new address");
            if let Err(e) = control.add_peer(&store, new) {
                tracing::warn!(%host, "could not add its new address: {e}");
                continue;
            }
            if let Some(old) = current.replace(new) {
                let answered = control.shared().addrs.values().any(|a| *a == old);
                if !answered {
                    let mut fence = control
                        .fence_addrs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if fence.remove(&old.to_string()) {
                        // The fence waits for the host at its new address.
                        fence.insert(new.to_string());
                    }
                    drop(fence);
                    if let Err(e) = control.forget_addr(&store, old) {
                        tracing::warn!(%host, "could not forget its old address: {e}");
                    }
                }
            }
        }
    }
}
