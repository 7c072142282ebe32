//! The transport over real QUIC on 127.0.0.1, with real certificates.

use atoll_net::tls::Identity;
use atoll_net::{certs, NetEvent, Transport, TransportConfig};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(10);

fn node(dir: &Path, id: u64, version: u32) -> (Transport, Receiver<NetEvent>) {
    let identity = Identity::load(dir).unwrap();
    let mut config = TransportConfig::new("127.0.0.1:0".parse().unwrap(), id, version);
    config.reconnect_max = Duration::from_millis(500);
    config.max_frame_len = 1 << 16;
    Transport::bind(config, &identity).unwrap()
}

/// The next event matching `want`, skipping others; panics after a bounded wait.
async fn expect(
    rx: &mut Receiver<NetEvent>,
    what: &str,
    want: impl Fn(&NetEvent) -> bool,
) -> NetEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => continue,
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

fn cluster() -> (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    certs::new_cluster(a.path()).unwrap();
    certs::join(a.path(), b.path()).unwrap();
    certs::join(a.path(), c.path()).unwrap();
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_connect_and_exchange_frames() {
    let (da, db, _dc) = cluster();
    let (a, mut ra) = node(da.path(), 1, 1);
    let (b, mut rb) = node(db.path(), 2, 1);
    let _dial = b.dial(a.local_addr().unwrap());
    expect(&mut ra, "a sees b", |e| {
        matches!(e, NetEvent::Connected { peer: 2, .. })
    })
    .await;
    expect(&mut rb, "b sees a", |e| {
        matches!(e, NetEvent::Connected { peer: 1, .. })
    })
    .await;
    assert!(a.send(2, b"hello b".to_vec()));
    assert!(b.send(1, b"hello a".to_vec()));
    let got = expect(&mut rb, "frame at b", |e| {
        matches!(e, NetEvent::Message { .. })
    })
    .await;
    assert_eq!(
        got,
        NetEvent::Message {
            peer: 1,
            payload: b"hello b".to_vec()
        }
    );
    let got = expect(&mut ra, "frame at a", |e| {
        matches!(e, NetEvent::Message { .. })
    })
    .await;
    assert_eq!(
        got,
        NetEvent::Message {
            peer: 2,
            payload: b"hello a".to_vec()
        }
    );
    // Both dialing each other still leaves one connection.
    let _dial2 = a.dial(b.local_addr().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.connected().len(), 1);
    assert_eq!(b.connected().len(), 1);
    assert!(a.send(2, b"still here".to_vec()));
    expect(
        &mut rb,
        "frame after duplicate",
        |e| matches!(e, NetEvent::Message { payload, .. } if payload == b"still here"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_ca_is_refused() {
    let (da, _db, _dc) = cluster();
    let foreign = tempfile::tempdir().unwrap();
    certs::new_cluster(foreign.path()).unwrap();
    let (a, mut ra) = node(da.path(), 1, 1);
    let (f, mut rf) = node(foreign.path(), 9, 1);
    let _dial = f.dial(a.local_addr().unwrap());
    let refused = expect(&mut rf, "foreign dialer refused", |e| {
        matches!(e, NetEvent::Refused { .. })
    })
    .await;
    let NetEvent::Refused { reason, .. } = refused else {
        unreachable!()
    };
    assert!(reason.contains("connection failed"), "{reason}");
    expect(&mut ra, "a refuses the foreign client", |e| {
        matches!(e, NetEvent::Refused { .. })
    })
    .await;
    assert!(a.connected().is_empty() && f.connected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_version_mismatch_is_refused_with_a_clear_reason_on_both_sides() {
    let (da, db, dc) = cluster();
    let (a, mut ra) = node(da.path(), 1, 1);
    let (b, mut rb) = node(db.path(), 2, 2);
    let (c, mut rc) = node(dc.path(), 3, 1);
    let _dial_c = c.dial(a.local_addr().unwrap());
    expect(&mut ra, "c connects", |e| {
        matches!(e, NetEvent::Connected { peer: 3, .. })
    })
    .await;
    let _dial = b.dial(a.local_addr().unwrap());
    let NetEvent::Refused { reason, .. } = expect(&mut ra, "a refuses", |e| {
        matches!(e, NetEvent::Refused { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(
        reason.contains("protocol version mismatch: this node speaks 1, the peer 2"),
        "{reason}"
    );
    let NetEvent::Refused { reason, .. } = expect(&mut rb, "b is refused", |e| {
        matches!(e, NetEvent::Refused { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(reason.contains("protocol version mismatch"), "{reason}");
    // a refused only b: c is still connected and served.
    assert_eq!(
        a.connected().iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![3]
    );
    assert!(a.send(3, b"still served".to_vec()));
    expect(
        &mut rc,
        "c still gets frames",
        |e| matches!(e, NetEvent::Message { payload, .. } if payload == b"still served"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_that_connection_and_the_node_serves_others() {
    let (da, db, dc) = cluster();
    let (a, mut ra) = node(da.path(), 1, 1);
    let (b, mut rb) = node(db.path(), 2, 1);
    let _dial = b.dial(a.local_addr().unwrap());
    expect(&mut ra, "b connects", |e| {
        matches!(e, NetEvent::Connected { peer: 2, .. })
    })
    .await;
    let identity = Identity::load(dc.path()).unwrap();
    let (conn, mut send, _recv) = atoll_net::probe(&identity, a.local_addr().unwrap(), 3, 1)
        .await
        .unwrap();
    expect(&mut ra, "raw client connects", |e| {
        matches!(e, NetEvent::Connected { peer: 3, .. })
    })
    .await;
    // Announce a frame far over the limit; send none of it.
    send.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let NetEvent::Disconnected { peer, reason } = expect(&mut ra, "a drops the raw client", |e| {
        matches!(e, NetEvent::Disconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(peer, 3);
    assert!(reason.contains("exceeds the limit"), "{reason}");
    let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
    assert!(
        closed.to_string().contains("exceeds the limit")
            || format!("{closed:?}").contains("exceeds"),
        "{closed:?}"
    );
    // b is still served.
    assert!(a.send(2, b"after".to_vec()));
    expect(
        &mut rb,
        "b still gets frames",
        |e| matches!(e, NetEvent::Message { payload, .. } if payload == b"after"),
    )
    .await;
}

#[test]
fn identities_are_not_overwritten() {
    let d = tempfile::tempdir().unwrap();
    certs::new_cluster(d.path()).unwrap();
    let e = certs::new_cluster(d.path()).unwrap_err();
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");
    let j = tempfile::tempdir().unwrap();
    certs::join(d.path(), j.path()).unwrap();
    assert!(
        !j.path().join(certs::files::CA_KEY).exists(),
        "the CA key must not be copied"
    );
    assert!(certs::join(d.path(), j.path()).is_err());
}

/// A refusal is typed: the dialer learns the close code the peer refused it
/// with, not only a sentence; and a missing file keeps the OS's error as
/// its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_carries_its_close_code_and_a_missing_file_its_source() {
    use atoll_net::{CloseCode, NetError};
    let (da, _db, dc) = cluster();
    let (a, _ra) = node(da.path(), 1, 1);
    let identity = Identity::load(dc.path()).unwrap();
    let err = match atoll_net::probe(&identity, a.local_addr().unwrap(), 3, 2).await {
        Ok(_) => panic!("a probe speaking protocol 2 to a node of protocol 1 was let in"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            NetError::Handshake {
                code: Some(CloseCode::VersionMismatch),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.close_code(), Some(CloseCode::VersionMismatch));

    let empty = tempfile::tempdir().unwrap();
    let err = match Identity::load(empty.path()) {
        Ok(_) => panic!("an identity loaded from an empty directory"),
        Err(e) => e,
    };
    assert!(matches!(err, NetError::Certificate { .. }), "{err:?}");
    let source = std::error::Error::source(&err).expect("the OS's error as the source");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
}
