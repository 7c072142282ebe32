//! Owned variables between in-process replicas: ownership granted by a
//! variable's home, strong operations at the owner and forwarded to it,
//! answers kept for requests sent again, moves of ownership with lost
//! messages, releases and overrides. Where variables are owned (placement
//! rules, moves by use): tests/placement.rs.
//!
//! A little over 600 lines: each test stages one sequence of lost, held or
//! late messages by hand, and they share this file's setup.

use atoll_core::protocol::Body;
use atoll_core::testkit::{id, Net, LATENCY};
use atoll_core::{Answer, Error, Event, KeyspaceConfig, Op, OwnershipError, Requested};
use atoll_crdt::variable::{Bytes, State};
use atoll_crdt::Ownership;

const WAIT: u64 = 10_000;

fn b(x: u8) -> Bytes {
    Bytes::from(vec![x])
}

/// Three connected replicas, with `name` owned by replica `owner`.
fn cluster_owning(name: &str, owner: usize) -> Net {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    let answer = net
        .request(owner, name, Body::Own { to: id(owner) }, WAIT)
        .unwrap();
    assert_eq!(answer, Answer::Done);
    net.run(1_000);
    net
}

fn ownership(net: &mut Net, i: usize, name: &str) -> Ownership {
    net.nodes[i].ownership(name).unwrap()
}

fn ownership_error(r: atoll_core::Result<Answer>) -> OwnershipError {
    match r {
        Err(Error::Ownership(e)) => e,
        other => panic!("expected an ownership error, got {other:?}"),
    }
}

#[test]
fn the_home_grants_ownership_and_every_replica_learns_it() {
    for owner in 0..3 {
        let mut net = cluster_owning("stock", owner);
        for i in 0..3 {
            assert_eq!(
                ownership(&mut net, i, "stock"),
                Ownership::owned(1, id(owner)),
                "at replica {i}"
            );
        }
        // Asking again changes nothing: the owner answers without a new epoch.
        net.request(owner, "stock", Body::Own { to: id(owner) }, WAIT)
            .unwrap();
        net.run(1_000);
        assert_eq!(ownership(&mut net, 1, "stock").epoch, 1);
    }
}

#[test]
fn a_strong_operation_runs_at_the_owner_without_a_round_trip_and_is_forwarded_elsewhere() {
    let mut net = cluster_owning("leader", 0);
    let cas = |expected: Option<u8>, value: u8| {
        Body::Op(Op::RegisterCompareAndSet {
            expected: expected.map(b),
            value: b(value),
        })
    };
    // At the owner: done at once.
    let now = net.now;
    let r = net.nodes[0].request(now, "leader", cas(None, 1)).unwrap();
    assert!(
        matches!(
            r,
            Requested::Done {
                answer: Answer::Swapped(true),
                applied: Some(_),
                at_owner: true,
            }
        ),
        "{r:?}"
    );
    // Elsewhere: sent, answered after one round trip, and the requester
    // reads its own write at once (the reply carries the change).
    let start = net.now;
    let answer = net.request(1, "leader", cas(Some(1), 2), WAIT).unwrap();
    assert_eq!(answer, Answer::Swapped(true));
    assert!(net.now - start <= 2 * LATENCY + 1, "one round trip");
    match net.state(1, "leader") {
        Some(State::Register(r)) => assert_eq!(r.get(), Some(&b(2))),
        other => panic!("{other:?}"),
    }
    let answer = net.request(2, "leader", cas(Some(1), 3), WAIT).unwrap();
    assert_eq!(answer, Answer::Swapped(false), "the value is 2 now");
}

#[test]
fn writes_that_could_break_a_strong_operation_go_to_the_owner_and_others_stay_local() {
    let mut net = cluster_owning("stock", 0);
    // An increment cannot break a floor: it stays local, even through a split.
    net.cut(0, 1);
    net.cut(1, 2);
    net.incr(1, "stock", 5);
    // A decrement could: `write` refuses it away from the owner...
    let r = net.nodes[1].write(net.now, "stock", Op::CounterAdd { by: -1 });
    assert!(
        matches!(
            r,
            Err(Error::Ownership(OwnershipError::Elsewhere { owner, epoch: 1, .. })) if owner == id(0)
        ),
        "{r:?}"
    );
    // ...and a request for it waits for the owner, then fails, typed.
    let r = net.request(1, "stock", Body::Op(Op::CounterAdd { by: -1 }), WAIT);
    match ownership_error(r) {
        OwnershipError::OwnerUnreachable {
            owner, waited_ms, ..
        } => {
            assert_eq!(owner, Some(id(0)));
            assert!(waited_ms >= 5_000, "{waited_ms}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(net.counter(1, "stock"), 5, "nothing written locally");
    // A strong operation on a variable nobody owns is refused, by the node
    // that would have granted it (cut off, this one cannot tell).
    net.heal(0, 1);
    net.heal(1, 2);
    let r = net.request(
        1,
        "free",
        Body::Op(Op::SetAddIfAbsent { member: b(1) }),
        WAIT,
    );
    assert!(matches!(
        ownership_error(r),
        OwnershipError::NotOwned { .. }
    ));
}

#[test]
fn a_claim_raced_from_every_replica_has_exactly_one_winner() {
    let mut net = cluster_owning("usernames", 2);
    let now = net.now;
    let mut sent = Vec::new();
    let mut winners = 0;
    for i in 0..3 {
        let op = Body::Op(Op::SetAddIfAbsent { member: b(7) });
        match net.nodes[i].request(now, "usernames", op).unwrap() {
            Requested::Done { answer, .. } => {
                winners += usize::from(answer == Answer::Claimed(true))
            }
            Requested::Sent(id) => sent.push((i, id)),
        }
    }
    net.run(WAIT);
    for (i, rid) in sent {
        let answer = net
            .events
            .iter()
            .find_map(|(at, e)| match e {
                Event::Answered { id, result, .. } if *at == i && *id == rid => {
                    Some(result.clone())
                }
                _ => None,
            })
            .expect("answered")
            .unwrap();
        winners += usize::from(answer == Answer::Claimed(true));
    }
    assert_eq!(winners, 1);
}

#[test]
fn a_bounded_counter_raced_to_zero_never_goes_below() {
    let mut net = cluster_owning("tickets", 1);
    for i in 0..3 {
        net.incr(i, "tickets", 4);
    }
    net.run(1_000);
    let mut done = 0;
    for round in 0..10 {
        for i in 0..3 {
            let op = Body::Op(Op::CounterDecrementIf { by: 1, floor: 0 });
            match net.request(i, "tickets", op, WAIT).unwrap() {
                Answer::Decremented { done: true, value } => {
                    assert!(value >= 0);
                    done += 1;
                }
                Answer::Decremented { done: false, value } => assert_eq!(value, 0, "round {round}"),
                a => panic!("{a:?}"),
            }
        }
    }
    assert_eq!(done, 12);
    net.run(1_000);
    for i in 0..3 {
        assert_eq!(net.counter(i, "tickets"), 0);
    }
}

#[test]
fn a_request_whose_answer_is_lost_is_answered_again_not_applied_again() {
    let mut net = cluster_owning("tickets", 0);
    net.incr(0, "tickets", 10);
    net.run(1_000);
    let now = net.now;
    let op = Body::Op(Op::CounterDecrementIf { by: 3, floor: 0 });
    let Requested::Sent(rid) = net.nodes[1].request(now, "tickets", op).unwrap() else {
        panic!("replica 1 does not own it")
    };
    // The request arrives and is applied; its answer is lost on the way back.
    net.run(LATENCY);
    assert_eq!(net.counter(0, "tickets"), 7);
    net.cut(0, 1);
    net.run(3 * 50);
    // Reconnected: the request goes again, with the same id.
    net.heal(0, 1);
    net.run(1_000);
    let answers: Vec<_> = net
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Answered { id, result, .. } if *at == 1 && *id == rid => Some(result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![Ok(Answer::Decremented {
            done: true,
            value: 7
        })]
    );
    for i in 0..3 {
        assert_eq!(net.counter(i, "tickets"), 7, "applied once, at replica {i}");
    }
}

/// An owner that dropped a request's answer (to keep few) refuses the
/// request sent again: its outcome is unknown, and it is not applied twice.
#[test]
fn a_request_whose_answer_was_dropped_is_not_applied_again() {
    let config = atoll_core::ReplicaConfig {
        retransmit_ms: 50,
        answers_kept: 1,
        ..atoll_core::ReplicaConfig::default()
    };
    let mut net = Net::with_config(3, KeyspaceConfig::default(), config);
    net.full_mesh();
    net.run(1_000);
    net.request(0, "tickets", Body::Own { to: id(0) }, WAIT)
        .unwrap();
    net.incr(0, "tickets", 10);
    net.run(1_000);
    let now = net.now;
    let op = |by| Body::Op(Op::CounterDecrementIf { by, floor: 0 });
    let Requested::Sent(rid) = net.nodes[1].request(now, "tickets", op(3)).unwrap() else {
        panic!("replica 1 does not own it")
    };
    // Applied; the answer is lost on the way back.
    net.run(LATENCY);
    net.cut(0, 1);
    // Another request's answer pushes the first one's out.
    net.request(2, "tickets", op(1), WAIT).unwrap();
    assert_eq!(net.counter(0, "tickets"), 6);
    net.heal(0, 1);
    net.run(1_000);
    let answer = net
        .events
        .iter()
        .find_map(|(at, e)| match e {
            Event::Answered { id, result, .. } if *at == 1 && *id == rid => Some(result.clone()),
            _ => None,
        })
        .expect("answered");
    assert!(
        matches!(answer, Err(OwnershipError::OutcomeUnknown { .. })),
        "{answer:?}"
    );
    assert_eq!(net.counter(0, "tickets"), 6, "applied once");
}

#[test]
fn ownership_moves_with_the_state_and_the_old_owner_stops_at_once() {
    let mut net = cluster_owning("claims", 0);
    let claim = |m| Body::Op(Op::SetAddIfAbsent { member: b(m) });
    assert_eq!(
        net.request(0, "claims", claim(1), WAIT).unwrap(),
        Answer::Claimed(true)
    );
    // The offer cannot reach replica 1: the variable is in transfer, and no
    // strong operation runs anywhere.
    net.cut(0, 1);
    let now = net.now;
    net.nodes[0].move_owner(now, "claims", id(1)).unwrap();
    let record = ownership(&mut net, 0, "claims");
    assert_eq!(record.handoff().map(|h| h.to), Some(id(1)));
    match ownership_error(net.request(0, "claims", claim(2), WAIT)) {
        OwnershipError::InTransfer { owner, to, .. } => {
            assert_eq!((owner, to), (id(0), id(1)))
        }
        e => panic!("{e:?}"),
    }
    match ownership_error(net.request(2, "claims", claim(2), WAIT)) {
        OwnershipError::InTransfer { to, .. } => assert_eq!(to, id(1)),
        e => panic!("{e:?}"),
    }
    // Healed: the offer goes again, and replica 1 owns it in epoch 2 with
    // the state (a claim made at replica 0 stays claimed).
    net.heal(0, 1);
    net.run(2_000);
    for i in 0..3 {
        assert_eq!(
            ownership(&mut net, i, "claims"),
            Ownership::owned(2, id(1)),
            "at {i}"
        );
    }
    assert_eq!(
        net.request(1, "claims", claim(1), WAIT).unwrap(),
        Answer::Claimed(false)
    );
    let now = net.now;
    let r = net.nodes[0].request(now, "claims", claim(3)).unwrap();
    assert!(
        matches!(r, Requested::Sent(_)),
        "forwarded to the new owner"
    );
}

#[test]
fn a_request_follows_the_variable_to_its_new_owner() {
    let mut net = cluster_owning("lock", 0);
    net.run(1_000);
    // Replica 2 does not hear of the move before it asks.
    net.cut(1, 2);
    let now = net.now;
    net.nodes[0].move_owner(now, "lock", id(1)).unwrap();
    net.cut(0, 2);
    net.run(1_000);
    assert_eq!(ownership(&mut net, 2, "lock").epoch, 1);
    net.heal(0, 2);
    let cas = Body::Op(Op::RegisterCompareAndSet {
        expected: None,
        value: b(2),
    });
    // Replica 0 refuses and names the owner; 2 cannot reach it yet...
    net.cut(1, 2);
    let r = net.request(2, "lock", cas.clone(), WAIT);
    assert!(matches!(
        ownership_error(r),
        OwnershipError::OwnerUnreachable { owner: Some(o), .. } if o == id(1)
    ));
    // ...and can once healed.
    net.heal(1, 2);
    assert_eq!(
        net.request(2, "lock", cas, WAIT).unwrap(),
        Answer::Swapped(true)
    );
}

#[test]
fn a_released_variable_is_ownerless_again() {
    let mut net = cluster_owning("cfg", 1);
    assert_eq!(
        net.request(2, "cfg", Body::Release, WAIT).unwrap(),
        Answer::Done
    );
    net.run(1_000);
    for i in 0..3 {
        let r = ownership(&mut net, i, "cfg");
        assert_eq!((r.epoch, r.owner()), (2, None));
    }
    net.write(2, "cfg", Op::RegisterSet { value: b(1) });
    let r = net.request(
        0,
        "cfg",
        Body::Op(Op::RegisterCompareAndSet {
            expected: None,
            value: b(1),
        }),
        WAIT,
    );
    assert!(matches!(
        ownership_error(r),
        OwnershipError::NotOwned { .. }
    ));
}

#[test]
fn an_override_wins_and_a_conflicting_record_is_reported_the_same_everywhere() {
    let mut net = cluster_owning("jobs", 0);
    // Replica 2 is cut off and, thinking 0 is gone, forces itself owner
    // while 0 moves the variable to 1: two records of epoch 2.
    net.cut(0, 2);
    net.cut(1, 2);
    let now = net.now;
    net.nodes[2].force_owner(now, "jobs", id(2)).unwrap();
    net.nodes[0].move_owner(now, "jobs", id(1)).unwrap();
    net.run(1_000);
    assert_eq!(ownership(&mut net, 1, "jobs").owner(), Some(id(1)));
    net.heal(0, 2);
    net.heal(1, 2);
    net.run(2_000);
    for i in 0..3 {
        let r = ownership(&mut net, i, "jobs");
        assert_eq!((r.epoch, r.owner(), r.forced()), (2, Some(id(2)), true));
    }
    let conflicts: Vec<usize> = net
        .events
        .iter()
        .filter_map(|(i, e)| matches!(e, Event::OwnerChanged { conflict: true, .. }).then_some(*i))
        .collect();
    assert!(
        conflicts.contains(&1),
        "replica 1 lost its ownership: {conflicts:?}"
    );
    // Replica 1 stopped acting as owner: its strong operations go to 2.
    let now = net.now;
    let r = net.nodes[1]
        .request(now, "jobs", Body::Op(Op::SetAddIfAbsent { member: b(1) }))
        .unwrap();
    assert!(matches!(r, Requested::Sent(_)));
}

/// A copy of a request still in flight after its sender was told it did
/// not run (the variable was in transfer) never runs later, even at a node
/// that owns the variable again by then: a request runs only in the epoch
/// it names.
#[test]
fn a_request_copy_arriving_after_its_sender_gave_up_never_runs() {
    let mut net = cluster_owning("lock", 0);
    // Replica 0 hands the variable to 2, which it cannot reach yet.
    net.cut(0, 2);
    let now = net.now;
    net.nodes[0].move_owner(now, "lock", id(2)).unwrap();
    let cas = Body::Op(Op::RegisterCompareAndSet {
        expected: None,
        value: b(1),
    });
    let Requested::Sent(_) = net.nodes[1].request(now, "lock", cas.clone()).unwrap() else {
        panic!("replica 1 does not own it")
    };
    // The first copy of the request is held back on the way.
    net.pump();
    let key = *net
        .queue
        .iter()
        .find(|(_, (from, to, bytes))| {
            (*from, *to) == (1, 0)
                && matches!(
                    atoll_core::protocol::Message::decode(bytes, 1 << 20),
                    Ok(atoll_core::protocol::Message::Request { .. })
                )
        })
        .map(|(k, _)| k)
        .expect("the request is on the wire");
    let (_, _, held) = net.queue.remove(&key).unwrap();
    // The copies sent again are refused (in transfer) until the sender
    // gives up: nothing changed, it is told.
    net.run(WAIT);
    let answered = net.events.iter().rev().find_map(|(at, e)| match e {
        Event::Answered { result, .. } if *at == 1 => Some(result.clone()),
        _ => None,
    });
    assert!(
        matches!(answered, Some(Err(OwnershipError::InTransfer { .. }))),
        "{answered:?}"
    );
    // The move completes, and the variable comes back to replica 0.
    net.heal(0, 2);
    net.run(2_000);
    let now = net.now;
    net.nodes[2].move_owner(now, "lock", id(0)).unwrap();
    net.run(2_000);
    assert_eq!(ownership(&mut net, 0, "lock").owner(), Some(id(0)));
    // Now the held copy arrives: it names epoch 1, and does not run.
    let now = net.now;
    net.nodes[0].handle_message(now, id(1), &held).unwrap();
    net.run(1_000);
    for i in 0..3 {
        assert_eq!(net.state(i, "lock"), None, "never written, at {i}");
    }
}

/// A released variable owned again elsewhere keeps what its last owner
/// wrote: the new owner does not start from less, and cannot own it while
/// the node that decides (to its knowledge) is out of reach.
#[test]
fn a_released_variable_is_granted_again_with_its_state() {
    // A name whose home is replica 0, owned by replica 1.
    let name = (0..100)
        .map(|k| format!("reg{k}"))
        .find(|n| {
            let mut net = Net::new(3, KeyspaceConfig::default());
            net.full_mesh();
            net.nodes[0].home(n) == id(0)
        })
        .expect("some name has its home at replica 0");
    let mut net = cluster_owning(&name, 1);
    let cas = |expected: Option<u8>, value| {
        Body::Op(Op::RegisterCompareAndSet {
            expected: expected.map(b),
            value: b(value),
        })
    };
    // Replica 1 writes and releases while cut off from both others.
    net.cut(0, 1);
    net.cut(1, 2);
    assert_eq!(
        net.request(1, &name, cas(None, 1), WAIT).unwrap(),
        Answer::Swapped(true)
    );
    net.request(1, &name, Body::Release, WAIT).unwrap();
    // Replica 2 asks to own it: to its knowledge replica 1 decides, and
    // cannot be reached.
    let r = net.request(2, &name, Body::Own { to: id(2) }, WAIT);
    assert!(
        matches!(ownership_error(r), OwnershipError::OwnerUnreachable { owner: Some(o), .. } if o == id(1)),
        "replica 1 decides"
    );
    net.heal(0, 1);
    net.heal(1, 2);
    net.request(2, &name, Body::Own { to: id(2) }, WAIT)
        .unwrap();
    net.run(1_000);
    assert_eq!(ownership(&mut net, 2, &name).owner(), Some(id(2)));
    assert_eq!(
        net.request(2, &name, cas(Some(1), 2), WAIT).unwrap(),
        Answer::Swapped(true)
    );
}

/// An answer held back on the way, to a request's first attempt (the
/// variable was ownerless: "not owned"), arrives after the variable was
/// owned and the request, sent again in the new epoch, ran at the owner:
/// it is not taken for the answer.
#[test]
fn a_late_answer_to_an_earlier_attempt_is_not_taken_for_the_answer() {
    use atoll_core::protocol::Message;
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    let home = (0..3).find(|&i| net.nodes[0].home("reg") == id(i)).unwrap();
    let asker = (home + 1) % 3;
    let cas = Body::Op(Op::RegisterCompareAndSet {
        expected: None,
        value: b(1),
    });
    let now = net.now;
    let Requested::Sent(rid) = net.nodes[asker].request(now, "reg", cas).unwrap() else {
        panic!("sent to the home")
    };
    // Takes off the wire the home's next answer to the request that
    // `want` accepts.
    let hold = |net: &mut Net, want: &dyn Fn(&Message) -> bool| {
        for _ in 0..1_000 {
            net.pump();
            let key = net.queue.iter().find_map(|(k, (from, to, bytes))| {
                let m = Message::decode(bytes, 1 << 20).ok()?;
                let ours = matches!(m, Message::Reply { id, .. } if id == rid);
                ((*from, *to) == (home, asker) && ours && want(&m)).then_some(*k)
            });
            if let Some(key) = key {
                return net.queue.remove(&key).map(|(_, _, bytes)| bytes).unwrap();
            }
            net.run(1);
        }
        panic!("no such answer");
    };
    // The home's answer (nobody owns it) is held back on the way.
    let stale = hold(&mut net, &|_| true);
    // The home owns it; the request, sent again in epoch 1, runs there,
    // and that answer is held back too.
    net.request(home, "reg", Body::Own { to: id(home) }, WAIT)
        .unwrap();
    let ran = hold(
        &mut net,
        &|m| matches!(m, Message::Reply { result, .. } if result.is_ok()),
    );
    assert!(net.state(home, "reg").is_some(), "it ran at the owner");
    // The stale answer arrives first: no answer is taken from it.
    let seen = net.events.len();
    let now = net.now;
    net.nodes[asker]
        .handle_message(now, id(home), &stale)
        .unwrap();
    net.pump();
    let answered = |net: &Net| {
        net.events[seen..].iter().find_map(|(at, e)| match e {
            Event::Answered { id, result, .. } if *at == asker && *id == rid => {
                Some(result.clone())
            }
            _ => None,
        })
    };
    assert_eq!(answered(&net), None, "the late answer is not taken");
    let now = net.now;
    net.nodes[asker]
        .handle_message(now, id(home), &ran)
        .unwrap();
    net.pump();
    assert_eq!(answered(&net), Some(Ok(Answer::Swapped(true))));
}
