//! Namespaces through the embedded API: names and types apart per
//! namespace, what a namespace refuses, dropping one, and a namespace's
//! variables replicated, owned and in conflict across real nodes.

use atoll::{Error, Kind, Store, DEFAULT_NS};
use atoll_tests::{connected, wait_until, Cluster};

#[test]
fn each_namespace_has_its_own_names_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    check_namespaces(&store);
    drop(store);
    // All of it after a reopen.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.namespaces().unwrap(), [DEFAULT_NS, "billing", "shop"]);
    let billing = store.namespace("billing").unwrap();
    assert_eq!(billing.counter("x").unwrap().value().unwrap(), 5);
}

fn check_namespaces(store: &Store) {
    assert!(matches!(
        store.namespace("billing"),
        Err(Error::NoNamespace { ref ns }) if ns == "billing"
    ));
    let billing = store.create_namespace("billing").unwrap();
    let shop = store.create_namespace("shop").unwrap();
    assert_eq!(store.namespaces().unwrap(), [DEFAULT_NS, "billing", "shop"]);

    // One name, three variables of three types.
    let invoices = billing.counter("x").unwrap();
    invoices.incr(5).unwrap();
    shop.set::<String>("x").unwrap().add(&"a".into()).unwrap();
    store
        .register::<String>("x")
        .unwrap()
        .set(&"r".into())
        .unwrap();
    assert_eq!(invoices.name(), "x");
    assert_eq!(billing.counter("x").unwrap().value().unwrap(), 5);
    assert!(matches!(
        billing.set::<String>("x"),
        Err(Error::Core(atoll::CoreError::TypeMismatch { .. }))
    ));
    assert_eq!(
        billing.variables().unwrap(),
        [("x".to_string(), Kind::Counter)]
    );
    assert_eq!(shop.variables().unwrap(), [("x".to_string(), Kind::Set)]);
    let default: Vec<_> = store
        .default_namespace()
        .variables()
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !atoll::is_reserved(n))
        .collect();
    assert_eq!(default, [("x".to_string(), Kind::Register)]);

    // No way into the system's names, nor into another namespace.
    for bad in ["_atoll.peers", "_atoll.ns/shop/x", "_atoll.owner/x"] {
        assert!(
            matches!(billing.counter(bad), Err(Error::Reserved { .. })),
            "{bad}"
        );
        assert!(
            matches!(
                store.default_namespace().counter(bad),
                Err(Error::Reserved { .. })
            ),
            "{bad}"
        );
    }
    // A name that would pass 255 bytes with the namespace's prefix.
    assert!(billing.counter(&"n".repeat(250)).is_err());
    assert!(store.create_namespace("Shop").is_err());

    // Dropping: refused while it holds variables, forced hides them, and
    // creating it again shows them again.
    assert!(matches!(
        store.drop_namespace("billing", false),
        Err(Error::NamespaceNotEmpty { variables: 1, .. })
    ));
    assert!(store.drop_namespace("billing", true).unwrap());
    assert!(matches!(
        store.namespace("billing"),
        Err(Error::NoNamespace { .. })
    ));
    let billing = store.create_namespace("billing").unwrap();
    assert_eq!(billing.counter("x").unwrap().value().unwrap(), 5);
    assert!(store.drop_namespace(DEFAULT_NS, true).is_err());
}

/// Two nodes: a namespace created on one reaches the other; a name
/// created as two types on two sides of a split is a conflict the
/// namespace lists and reads by its own names; and a namespace's variable
/// is owned and its strong operations run at the owner.
#[test]
fn a_namespace_replicates_conflicts_and_owns_across_nodes() {
    let cluster = Cluster::new(2);
    let a = cluster.start(0, &[]);
    let b = cluster.start(1, &[]);
    // Apart: each creates the namespace, and "x" with another type.
    a.create_namespace("app")
        .unwrap()
        .counter("x")
        .unwrap()
        .incr(2)
        .unwrap();
    b.create_namespace("app")
        .unwrap()
        .set::<String>("x")
        .unwrap()
        .add(&"m".into())
        .unwrap();
    // Mirrored from a: the setting reaches b as it connects, and each
    // sends the other what it wrote while the namespace was local.
    a.set_mirrored("app", true).unwrap();
    b.add_peer(a.local_addr()).unwrap();
    wait_until("the nodes connect", || connected(&[&a, &b], 1));
    let (na, nb) = (a.namespace("app").unwrap(), b.namespace("app").unwrap());
    wait_until("both list the conflict", || {
        na.conflicts().unwrap().len() == 1 && nb.conflicts().unwrap().len() == 1
    });
    let (name, kept, moved, copy) = na.conflicts().unwrap().remove(0);
    assert_eq!(name, "x");
    assert_eq!(copy, format!("_atoll.conflict/{}/x", moved.name()));
    assert_eq!(
        nb.conflicts().unwrap()[0],
        (name, kept, moved, copy.clone())
    );
    // The copy is read by the namespace's name for it, and is listed.
    let (kept_value, moved_value) = match kept {
        Kind::Counter => (
            na.counter("x").unwrap().value().unwrap().to_string(),
            na.set::<String>(&copy)
                .unwrap()
                .members()
                .unwrap()
                .join(","),
        ),
        _ => (
            na.set::<String>("x").unwrap().members().unwrap().join(","),
            na.counter(&copy).unwrap().value().unwrap().to_string(),
        ),
    };
    let mut values = [kept_value, moved_value];
    values.sort();
    assert_eq!(values, ["2", "m"]);
    assert!(na.variables().unwrap().iter().any(|(n, _)| *n == copy));
    // Nothing of it in the default namespace.
    assert!(a
        .default_namespace()
        .variables()
        .unwrap()
        .iter()
        .all(|(n, _)| !n.contains('x')));

    // Owned at a; b's strong operation runs there.
    na.counter("y").unwrap().incr(10).unwrap();
    na.own("y").unwrap();
    wait_until("b knows a owns app/y", || {
        nb.owner("y").unwrap().owner() == Some(a.replica_id())
    });
    let (done, value) = nb.counter("y").unwrap().decrement_if(4, 0).unwrap();
    assert!(done);
    assert_eq!(value, 6);
    assert_eq!(na.counter("y").unwrap().value().unwrap(), 6);
}

/// What a peer sends of a namespace this node no longer mirrors (the peer
/// had not heard of the change yet) is refused: not merged, counted per
/// namespace, and the link goes on.
#[test]
fn a_node_refuses_what_a_peer_sends_of_a_namespace_it_stopped_mirroring() {
    let cluster = Cluster::new(2);
    let a = cluster.start(0, &[]);
    let b = cluster.start(1, &[]);
    // Apart: both mirror "app"; then a, later, keeps it local.
    for n in [&a, &b] {
        n.create_namespace("app").unwrap();
        n.set_mirrored("app", true).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.set_mirrored("app", false).unwrap();
    // b, which has not heard, writes to it.
    let x = b.namespace("app").unwrap().counter("x").unwrap();
    x.incr(4).unwrap();
    b.add_peer(a.local_addr()).unwrap();
    wait_until("the nodes connect", || connected(&[&a, &b], 1));
    let refused = |n: &atoll::Node, peer: atoll::ReplicaId| {
        let m = n.mirror_status(Some("app")).unwrap().remove(0);
        m.peers
            .iter()
            .find(|p| p.peer == peer)
            .map_or(0, |p| p.traffic.refused_vars)
    };
    wait_until("a refuses b's write", || refused(&a, b.replica_id()) >= 1);
    wait_until("b learns that app is local", || {
        !b.mirror_status(Some("app")).unwrap()[0].mirrored
    });
    let at_a = a.namespace("app").unwrap().counter("x").unwrap();
    assert_eq!(at_a.value().unwrap(), 0, "refused, not merged");
    // The link goes on: what follows is merged.
    b.counter("after").unwrap().incr(1).unwrap();
    wait_until("a merges what follows", || {
        a.counter("after").unwrap().value().unwrap() == 1
    });
    assert_eq!(at_a.value().unwrap(), 0);
}
