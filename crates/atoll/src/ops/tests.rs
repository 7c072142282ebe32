//! The operations' own tests.

use super::*;

/// The body each operation's HTTP call carries reads back as the same
/// operation: the CLI's requests and the API's reading agree.
#[test]
fn a_request_body_reads_back_as_its_operation() {
    let ops = [
        (
            BodyRoute::CounterAdd,
            Request::CounterAdd {
                name: "n".into(),
                by: i64::MIN,
            },
        ),
        (
            BodyRoute::RegisterSet,
            Request::RegisterSet {
                name: "n".into(),
                value: "v".into(),
            },
        ),
        (
            BodyRoute::SetChange,
            Request::SetChange {
                name: "n".into(),
                add: vec!["a".into()],
                remove: vec!["b".into()],
            },
        ),
        (
            BodyRoute::BagInsert,
            Request::BagInsert {
                name: "n".into(),
                values: vec![String::new()],
            },
        ),
        (
            BodyRoute::BagTransfer,
            Request::BagTransfer {
                name: "n".into(),
                id: "00000000000000ff.1".into(),
                to: "0a".into(),
            },
        ),
        (
            BodyRoute::MapChange,
            Request::MapChange {
                name: "n".into(),
                key: "k".into(),
                incr: Some(-1),
                set: None,
                add: Some("x".into()),
            },
        ),
        (
            BodyRoute::Own,
            Request::Own {
                name: "n".into(),
                to: Some("00000000000000ab".into()),
            },
        ),
        (
            BodyRoute::Own,
            Request::Own {
                name: "n".into(),
                to: None,
            },
        ),
        (
            BodyRoute::OwnForce,
            Request::OwnForce {
                name: "n".into(),
                to: "00000000000000ab".into(),
            },
        ),
        (
            BodyRoute::RegisterCas,
            Request::RegisterCas {
                name: "n".into(),
                expected: None,
                value: "v".into(),
            },
        ),
        (
            BodyRoute::CounterDecrIf,
            Request::CounterDecrIf {
                name: "n".into(),
                by: 2,
                floor: -5,
            },
        ),
        (
            BodyRoute::CounterEscrow,
            Request::CounterEscrow {
                name: "n".into(),
                floor: Some(-3),
            },
        ),
        (
            BodyRoute::SetClaim,
            Request::SetClaim {
                name: "n".into(),
                member: "m".into(),
            },
        ),
    ];
    for (route, op) in ops {
        let (_, _, body) = op.request();
        let bytes = serde_json::to_vec(&body.unwrap()).unwrap();
        assert_eq!(Request::from_body(route, "n", "k", &bytes).unwrap(), op);
    }
    let e = Request::from_body(BodyRoute::CounterAdd, "n", "", b"{\"by\": 1e99}").unwrap_err();
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn counter_values_past_64_bits_are_exact_strings() {
    assert_eq!(counter_json(-5), json!(-5));
    assert_eq!(counter_json(i128::from(u64::MAX)), json!(u64::MAX));
    assert_eq!(
        counter_json(i128::from(u64::MAX) + 1),
        json!("18446744073709551616")
    );
    assert_eq!(
        counter_json(i128::from(i64::MIN) - 1),
        json!("-9223372036854775809")
    );
}
