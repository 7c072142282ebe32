//! Every check that guards what a peer sends has a test that fails without
//! it: hand-built states that break one invariant each, refused as a peer's
//! deltas, as a state in a chunk, and as a state in parts, with nothing
//! changed.

use atoll_core::protocol::{Message, VarDelta};
use atoll_core::testkit::{id, Net};
use atoll_core::{KeyspaceConfig, ProtocolError};
use atoll_crdt::codec;
use atoll_crdt::variable::{Bytes, Kind, State};
use atoll_crdt::{MvRegister, OrSet, ReplicaId};

/// A multi-value register (a `Causal` dot store) written once by replica 5,
/// encoded: the layout the tampering below relies on.
fn register_bytes() -> Vec<u8> {
    let mut r = MvRegister::new();
    r.write(ReplicaId(5), Bytes::from(vec![7]));
    let bytes = codec::encode(&State::MvRegister(r));
    // version, variant 2, store: 1 entry (dot 5.1, value [7]),
    // context: vv [(5, 1)], cloud [].
    assert_eq!(bytes, [codec::FORMAT_VERSION, 2, 1, 5, 1, 1, 7, 1, 5, 1, 0]);
    bytes
}

/// A set with one member (dot 5.1), encoded.
fn set_bytes() -> Vec<u8> {
    let mut s = OrSet::new();
    s.add(ReplicaId(5), Bytes::from(vec![7]));
    let bytes = codec::encode(&State::Set(s));
    // version, variant 3, store: 1 entry (key [7], dots [5.1]),
    // context: vv [(5, 1)], cloud [].
    assert_eq!(
        bytes,
        [codec::FORMAT_VERSION, 3, 1, 1, 7, 1, 5, 1, 1, 5, 1, 0]
    );
    bytes
}

/// Each broken state, by what it breaks: the valid encoding with one byte
/// changed (or a few appended).
fn broken(valid: Vec<u8>, kind: Kind) -> Vec<(&'static str, Vec<u8>)> {
    let n = valid.len();
    let with = |at: usize, b: u8| {
        let mut v = valid.clone();
        v[at] = b;
        v
    };
    // Where the live dot's counter is, and the context's version entry.
    let dot_counter = if kind == Kind::MvRegister { 4 } else { 7 };
    let mut unsorted = valid[..n - 3].to_vec();
    // vv [(6, 1), (5, 1)]: out of order.
    unsorted.extend_from_slice(&[2, 6, 1, 5, 1, 0]);
    let mut uncompacted = valid[..n - 1].to_vec();
    // cloud [5.2]: next to vv (5, 1), so it belongs in the vv.
    uncompacted.extend_from_slice(&[1, 5, 2]);
    vec![
        ("a live dot outside the context", with(dot_counter, 2)),
        ("a context with a zero entry", with(n - 2, 0)),
        ("a context out of order", unsorted),
        ("a context not compacted", uncompacted),
    ]
}

fn deltas(name: &str, kind: Kind, delta: Vec<u8>) -> Vec<u8> {
    Message::Deltas {
        from: 0,
        to: 1,
        base: 0,
        vars: vec![VarDelta {
            name: name.into(),
            kind,
            delta,
        }],
        complete: false,
    }
    .encode()
}

fn chunk(name: &str, kind: Kind, delta: Vec<u8>) -> Vec<u8> {
    Message::State {
        as_of: 1,
        after: String::new(),
        vars: vec![VarDelta {
            name: name.into(),
            kind,
            delta,
        }],
        last: true,
    }
    .encode()
}

fn one_part(name: &str, kind: Kind, part: Vec<u8>) -> Vec<u8> {
    Message::StatePart {
        as_of: 1,
        after: String::new(),
        name: name.into(),
        kind,
        version: 1,
        index: 0,
        part,
        end: true,
        last: true,
    }
    .encode()
}

fn refused(net: &mut Net, what: &str, message: &[u8]) {
    let e = net.nodes[1]
        .handle_message(0, id(0), message)
        .expect_err(what);
    assert!(matches!(e, ProtocolError::Hostile { .. }), "{what}: {e}");
}

#[test]
fn states_that_break_an_invariant_are_refused_from_a_peer_in_every_message() {
    for (kind, valid) in [
        (Kind::MvRegister, register_bytes()),
        (Kind::Set, set_bytes()),
    ] {
        let mut net = Net::new(2, KeyspaceConfig::default());
        net.full_mesh();
        net.run(100);
        // The valid state is accepted: the tampering, not the framing, is refused.
        net.nodes[1]
            .handle_message(0, id(0), &deltas("ok", kind, valid.clone()))
            .unwrap();
        assert!(net.state(1, "ok").is_some());
        for (what, bytes) in broken(valid, kind) {
            let what = format!("{kind}: {what}");
            refused(
                &mut net,
                &format!("{what} (deltas)"),
                &deltas("v", kind, bytes.clone()),
            );
            refused(
                &mut net,
                &format!("{what} (state chunk)"),
                &chunk("v", kind, bytes.clone()),
            );
            refused(
                &mut net,
                &format!("{what} (state part)"),
                &one_part("v", kind, bytes),
            );
            assert!(net.state(1, "v").is_none(), "{what}: nothing changed");
        }
    }
}

#[test]
fn a_delta_of_another_kind_than_it_names_is_refused() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(100);
    // A set's encoding, said to be a counter's delta.
    refused(
        &mut net,
        "a set named a counter",
        &deltas("c", Kind::Counter, set_bytes()),
    );
    refused(
        &mut net,
        "a set named a counter",
        &chunk("c", Kind::Counter, set_bytes()),
    );
    assert!(net.state(1, "c").is_none());
}

/// A large set cut into parts, as a sender cuts it.
fn parts() -> (State, Vec<Vec<u8>>) {
    let mut s = OrSet::new();
    for k in 0..60u32 {
        s.add(ReplicaId(77), Bytes::from(k.to_be_bytes()));
    }
    let state = State::Set(s);
    let mut parts = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let part = state.encode_part(after.as_deref(), 100).unwrap();
        parts.push(part.bytes);
        match part.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(parts.len() >= 4);
    (state, parts)
}

fn send_parts(net: &mut Net, parts: &[Vec<u8>]) -> Result<(), ProtocolError> {
    for (i, p) in parts.iter().enumerate() {
        let m = Message::StatePart {
            as_of: 1,
            after: String::new(),
            name: "members".into(),
            kind: Kind::Set,
            version: 1,
            index: i as u32,
            part: p.clone(),
            end: i + 1 == parts.len(),
            last: true,
        };
        net.nodes[1].handle_message(0, id(0), &m.encode())?;
    }
    Ok(())
}

#[test]
fn parts_with_an_early_context_or_out_of_order_are_refused() {
    let (state, parts) = parts();
    // As cut, they assemble.
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(100);
    send_parts(&mut net, &parts).unwrap();
    assert_eq!(net.state(1, "members"), Some(state.clone()));

    // The first part carries the whole state's context (its entries, and
    // every later part's, still in key order): only the last part may.
    let mut early = parts.clone();
    let first = &mut early[0];
    assert_eq!(
        &first[first.len() - 2..],
        [0, 0],
        "an empty context ends a part"
    );
    first.truncate(first.len() - 2);
    first.extend_from_slice(&codec::encode(state.context().unwrap())[1..]);
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(100);
    let e = send_parts(&mut net, &early).unwrap_err();
    assert!(e.to_string().contains("carries a context"), "{e}");
    assert!(net.state(1, "members").is_none());

    // Two parts swapped: keys out of order.
    let mut swapped = parts.clone();
    swapped.swap(1, 2);
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(100);
    let e = send_parts(&mut net, &swapped).unwrap_err();
    assert!(e.to_string().contains("out of key order"), "{e}");
    assert!(net.state(1, "members").is_none());
}

#[test]
fn a_system_variable_of_another_type_is_refused_from_a_peer_in_every_message() {
    use atoll_core::{MIRROR_VAR, NAMESPACES_VAR, PEERS_VAR, REMOVED_VAR, SITES_VAR};
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(100);
    // Each, created as another type, would be unwritable here.
    let sets =
        [PEERS_VAR, REMOVED_VAR, NAMESPACES_VAR].map(|n| (n, Kind::MvRegister, register_bytes()));
    let maps = [MIRROR_VAR, SITES_VAR].map(|n| (n, Kind::Set, set_bytes()));
    for (name, kind, bytes) in sets.into_iter().chain(maps) {
        refused(
            &mut net,
            &format!("{name} (deltas)"),
            &deltas(name, kind, bytes.clone()),
        );
        refused(
            &mut net,
            &format!("{name} (state chunk)"),
            &chunk(name, kind, bytes.clone()),
        );
        refused(
            &mut net,
            &format!("{name} (state part)"),
            &one_part(name, kind, bytes),
        );
        assert!(net.state(1, name).is_none(), "{name}: nothing changed");
    }
}
