//! Decoding storage records (log entries, metadata) from untrusted bytes never panics.
#![no_main]

use atoll_crdt::codec::{decode_unvalidated, DEFAULT_MAX_LEN};
use atoll_store::{LogEntry, NodeMeta, VarMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_unvalidated::<LogEntry>(data, DEFAULT_MAX_LEN);
    let _ = decode_unvalidated::<VarMeta>(data, DEFAULT_MAX_LEN);
    let _ = decode_unvalidated::<NodeMeta>(data, DEFAULT_MAX_LEN);
});
