//! The HTTP API's data request bodies, read and run as the API runs them,
//! on one in-memory store across inputs: the first byte picks the route,
//! the second the variable (names of several types share one), the rest is
//! the body. Any body is refused with an error or applied; nothing panics,
//! and every variable stays readable.

#![no_main]

use atoll::ops::{BodyRoute, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const ROUTES: [BodyRoute; 13] = [
    BodyRoute::CounterAdd,
    BodyRoute::RegisterSet,
    BodyRoute::SetChange,
    BodyRoute::BagInsert,
    BodyRoute::BagTransfer,
    BodyRoute::MapChange,
    BodyRoute::Own,
    BodyRoute::OwnForce,
    BodyRoute::RegisterCas,
    BodyRoute::CounterDecrIf,
    BodyRoute::SetClaim,
    BodyRoute::MapCas,
    BodyRoute::BagAdopt,
];

const NAMES: [&str; 4] = ["a", "b", "_atoll.peers", "_atoll.conflict/set/a"];

fn store() -> &'static atoll::Store {
    static STORE: OnceLock<atoll::Store> = OnceLock::new();
    STORE.get_or_init(|| atoll::Store::open_with(atoll::Config::in_memory()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let [route, name, body @ ..] = data else {
        return;
    };
    let route = ROUTES[usize::from(*route) % ROUTES.len()];
    let name = NAMES[usize::from(*name) % NAMES.len()];
    let Ok(op) = Request::from_body(route, name, "k", body) else {
        return;
    };
    let store = store();
    let _ = op.apply(store);
    // Every variable reads, whatever was written.
    for (name, kind) in store.variables().unwrap() {
        let read = match kind.name() {
            "counter" => Request::CounterGet { name },
            "register" => Request::RegisterGet { name },
            "set" => Request::SetList { name },
            "bag" => Request::BagList { name },
            _ => Request::MapKeys { name },
        };
        match read.apply(store) {
            Ok(_) | Err(atoll::Error::Reserved { .. }) => {}
            Err(e) => panic!("unreadable: {e}"),
        }
    }
});
