//! Decoding a variable state or delta from untrusted bytes never panics; what
//! decodes is valid, joins without panicking, and re-encodes to itself.
#![no_main]

use atoll_crdt::codec::{decode, encode, DEFAULT_MAX_LEN};
use atoll_crdt::variable::State;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = decode::<State>(data, DEFAULT_MAX_LEN) {
        assert!(state.validate().is_ok());
        let again: State = decode(&encode(&state), DEFAULT_MAX_LEN).expect("re-encoding decodes");
        assert_eq!(again, state);
        let mut joined = State::new(state.kind());
        joined.join(state.clone()).expect("same kind");
        joined.join(state).expect("same kind");
    }
});
