//! The replication messages and their encoding.
//!
//! Every message is encoded with [`atoll_crdt::codec`] (a format version byte,
//! then postcard) and decoded with a size limit checked before anything is
//! decoded. The deltas inside are decoded and validated separately, each
//! against its own limit ([`Decoder`]), before the keyspace merges them.

use crate::op::{Answer, Op};
use atoll_crdt::codec::{self, DecodeError};
use atoll_crdt::variable::{DecodedPart, Kind, State};
use atoll_crdt::{Ownership, ReplicaId};
use serde::{Deserialize, Serialize};

/// The replication protocol's version, exchanged in the transport's handshake.
pub const PROTOCOL_VERSION: u32 = 11;

/// What a replica accepts from a peer, told in its `Hello`: the peer sends
/// it no message, delta or state part larger (a log entry too large for a
/// delta goes by state transfer instead). Set per node, so nodes of one
/// cluster may differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest message ([`crate::ReplicaConfig::max_message_len`]).
    pub max_message_len: u64,
    /// The largest delta ([`crate::KeyspaceConfig::max_delta_len`]).
    pub max_delta_len: u64,
    /// The largest state in a state transfer
    /// ([`crate::ReplicaConfig::max_state_len`]).
    pub max_state_len: u64,
}

/// One variable's delta (or whole state) in a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarDelta {
    /// The variable.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The delta, encoded as an `atoll_crdt::variable::State`.
    #[serde(with = "atoll_crdt::codec::bytes")]
    pub delta: Vec<u8>,
}

/// A replication message between two replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The join of the sender's delta-log entries in `(from, to]`, one delta per
    /// variable, less what came from the receiver.
    Deltas {
        /// The interval's exclusive start: the receiver acknowledged up to here.
        from: u64,
        /// The interval's inclusive end.
        to: u64,
        /// What the sender knows the receiver holds of its log: everything
        /// through here (what it acknowledged, or claimed in its `Hello`, and
        /// the sender's entries of the receiver's own it skipped).
        base: u64,
        /// The joined deltas.
        vars: Vec<VarDelta>,
        /// The interval reaches the end of the sender's log: with it, the
        /// receiver holds everything the sender held when sending it. (A
        /// replica that just opened takes and transfers bag elements only once
        /// every peer has sent it a complete interval.)
        complete: bool,
    },
    /// The receiver of `Deltas { from, to: seq }` joined that interval.
    /// Intervals may be acknowledged out of order; the sender advances its
    /// record of what the receiver holds only over contiguous intervals.
    Ack {
        /// The interval's exclusive start.
        from: u64,
        /// The interval's inclusive end.
        seq: u64,
    },
    /// One chunk of a state transfer: whole states of the variables after
    /// `after` in name order. Sent when the delta log no longer holds entries
    /// the receiver needs.
    State {
        /// The sender's log sequence when the transfer began: once every chunk
        /// is joined, the receiver holds everything through it.
        as_of: u64,
        /// The last variable name of the previous chunk ("" for the first).
        after: String,
        /// The states.
        vars: Vec<VarDelta>,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// Sent by each side on connecting: what the sender durably holds of the
    /// receiver's delta log, so that a replica that restarted (or whose peer
    /// did) resumes from there instead of sending everything again; and what
    /// it accepts (protocol 6), so that its peers send no more.
    Hello {
        /// Every entry of the receiver's log through this sequence number, as
        /// this incarnation of the receiver numbered them; `None` if nothing.
        holds: Option<(atoll_crdt::ReplicaId, u64)>,
        /// The sender's limits.
        limits: Limits,
    },
    /// One part of a variable's state in a state transfer, when the state is
    /// larger than [`crate::ReplicaConfig::state_part_bytes`] (protocol 5).
    /// Parts go out several at a time, without waiting for each one's ack,
    /// and may arrive in any order; the receiver keeps them aside, and
    /// merges the state once it holds them all (the end part carries its
    /// causal context). A part of a later version of the state, or its part
    /// 0, replaces the parts kept of another.
    StatePart {
        /// The transfer's `as_of`.
        as_of: u64,
        /// The last variable name of the previous chunk ("" for the first).
        after: String,
        /// The variable.
        name: String,
        /// Its kind.
        kind: Kind,
        /// Which state of the variable the parts are of: parts of different
        /// versions are never put together.
        version: u64,
        /// The part's number, from 0.
        index: u32,
        /// The part, encoded as an `atoll_crdt::variable::State`
        /// (`State::encode_part`).
        #[serde(with = "atoll_crdt::codec::bytes")]
        part: Vec<u8>,
        /// This part ends the variable's state.
        end: bool,
        /// The variable is the transfer's last.
        last: bool,
    },
    /// The receiver of `StatePart` kept part `index`, or for the end part,
    /// merged the variable's state.
    StatePartAck {
        /// The transfer's `as_of`.
        as_of: u64,
        /// The variable.
        name: String,
        /// The version of its state the part is of.
        version: u64,
        /// The part's number.
        index: u32,
    },
    /// The receiver of `State` joined the chunk that ended at `through`.
    StateAck {
        /// The transfer's `as_of`.
        as_of: u64,
        /// The chunk's last variable name.
        through: String,
        /// Whether it was the last chunk.
        last: bool,
    },
    /// A request for the node that decides about an owned variable (its
    /// owner; for a variable nobody owns, its home): an operation that must
    /// run there, or a change of owner (protocol 8). Sent again, with the
    /// same id, until answered; the owner answers a request it already
    /// applied from what it kept, without applying it again.
    Request {
        /// Chosen by the sender, unique in its incarnation.
        id: u64,
        /// The variable.
        name: String,
        /// The ownership epoch the sender knows: the receiver runs the
        /// request only in that epoch, so that a copy still in flight
        /// after the sender was told another answer (it moved on to the
        /// next owner, or gave up when the variable was handed on) can
        /// never run later.
        epoch: u64,
        /// The request was sent before (to this node or another): if its
        /// answer may have been forgotten here, it must not run again.
        retry: bool,
        /// What to do (boxed: an operation is larger than most messages).
        body: Box<Body>,
    },
    /// The answer to `Request { id }`.
    Reply {
        /// The request's id.
        id: u64,
        /// What became of it (boxed, as the request's body).
        result: Box<Result<Replied, Refusal>>,
    },
    /// The owner of `name` hands it to the receiver: the variable's state,
    /// and the answers the owner kept of requests it applied to it. The
    /// sender stopped accepting strong operations on it before sending,
    /// and sends it again until the receiver's record says `epoch` or later.
    Offer {
        /// The variable.
        name: String,
        /// The epoch the receiver owns it in, once it accepts.
        epoch: u64,
        /// Its whole state (`None`: it was never written).
        var: Option<VarDelta>,
        /// The answers kept of requests applied to it.
        answers: Vec<Kept>,
        /// For how long (ms from now) a request sent again may concern an
        /// answer the sender no longer keeps (see `Refusal::Forgotten`).
        forgotten_ms: u64,
        /// The escrow record of a counter with escrow: the new owner must
        /// know every grant made before it, to know what its pool holds.
        escrow: Option<Box<atoll_crdt::Escrow>>,
    },
    /// The receiver of an `Offer` of `name`: its ownership record now
    /// (which says the epoch offered, or a later one, once accepted).
    Accept {
        /// The variable.
        name: String,
        /// The receiver's record.
        record: Ownership,
    },
    /// A consistency check asks for the receiver's digests: its tree (no
    /// buckets named), or the variables of the buckets named.
    DigestAsk {
        /// The check.
        check: u64,
        /// Buckets whose variables are asked for (none: the tree).
        buckets: Vec<u16>,
    },
    /// The answer to `DigestAsk`.
    Digests(Box<DigestReply>),
    /// States of variables a check found divergent, to join; `names` are
    /// the variables, `answer` asks for the receiver's states of them.
    Repair {
        /// The variables concerned.
        names: Vec<String>,
        /// The sender's states of those it holds.
        vars: Vec<VarDelta>,
        /// The receiver sends its own back.
        answer: bool,
    },
}

/// A replica's digests, as a consistency check asked for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestReply {
    /// The check.
    pub check: u64,
    /// The end of the sender's log as the receiver needs it: its last
    /// entry that did not come from the receiver (those it is never sent).
    pub last_seq: u64,
    /// What the sender holds of each peer's log, by node.
    pub holds: Vec<(ReplicaId, u64)>,
    /// The root of its tree.
    pub root: u128,
    /// How many variables it holds.
    pub variables: u64,
    /// Every bucket's digest (asked for the tree), or none.
    pub buckets: Vec<u128>,
    /// The variables of the buckets asked for, with their digests.
    pub names: Vec<(String, u128)>,
    /// Variables of those buckets left out (the reply's size bound).
    pub more: u64,
}

/// What a [`Message::Request`] asks of the node that decides about a
/// variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Apply an operation, at the owner.
    Op(Op),
    /// Make `to` the owner: granted by the home of a variable nobody owns,
    /// handed on by the owner of an owned one.
    Own {
        /// The node to own it.
        to: ReplicaId,
    },
    /// Make the variable ownerless again, at its owner.
    Release,
}

/// A request's success: the answer, and the change it made, if any, for
/// the requester to merge at once (so that it reads its own write).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replied {
    /// The answer.
    pub answer: Answer,
    /// The change: a delta of the variable, or of its ownership record.
    pub change: Option<VarDelta>,
}

/// Why a request was not applied. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The receiver does not decide about the variable: its record, which
    /// names who does.
    NotOwner {
        /// The receiver's record of the variable.
        record: Ownership,
    },
    /// The receiver opened recently and waits for its peers before it
    /// decides anything (see `Replica::fenced`).
    Fenced,
    /// The owner offered the variable to `to` and waits for its answer.
    InTransfer {
        /// The node offered it.
        to: ReplicaId,
        /// Since when (wall ms at the owner).
        since_ms: u64,
    },
    /// The receiver does not know all its peers yet, so cannot tell the
    /// home of a variable nobody owns.
    NoHome,
    /// The request was sent before, and its answer may have been forgotten
    /// here (this node opened, or dropped old answers, recently): it may
    /// have run, and must not run again.
    Forgotten,
    /// The operation failed at the owner: its error, in words.
    Failed {
        /// Why.
        why: String,
    },
}

/// An answer the owner kept, so that a request sent again is answered
/// without being applied again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The requester's incarnation.
    pub incarnation: ReplicaId,
    /// The request's id.
    pub id: u64,
    /// The answer given.
    pub answer: Answer,
}

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a message of at most `max_len` bytes.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Message, DecodeError> {
        codec::decode_unvalidated(bytes, max_len)
    }
}

/// The limits messages are decoded under, from [`crate::Replica::decoder`].
/// Decoding is pure: it may run on another thread, ahead of the replica (the
/// node decodes the next message while the replica merges the last one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoder {
    /// The largest message accepted.
    pub max_message_len: usize,
    /// The largest delta accepted inside one.
    pub max_delta_len: usize,
    /// The largest variable state accepted in a state transfer: a state in a
    /// `State` chunk is bounded by it (and by its message), not by
    /// `max_delta_len`.
    pub max_state_len: usize,
}

/// A state part, decoded, and where its entries lie in its bytes.
pub(crate) type PartDecoded = Result<(DecodedPart, std::ops::Range<usize>), DecodeError>;

/// A message decoded by a [`Decoder`], deltas included, for
/// [`crate::Replica::handle_decoded`]. Errors are kept, not raised: the
/// replica reports them against the peer, in the order it would have met them.
#[derive(Debug)]
pub struct Decoded {
    /// The message's length on the wire.
    pub(crate) len: usize,
    pub(crate) msg: Result<Message, DecodeError>,
    /// The decoded and validated delta of each of the message's variables.
    pub(crate) states: Vec<Result<State, DecodeError>>,
    /// The decoded state part of a `StatePart`, and where its entries lie.
    pub(crate) part: Option<Box<PartDecoded>>,
}

impl Decoder {
    /// Decodes `bytes`: the message, then each delta it carries, each under
    /// its own size limit, checked before anything is allocated.
    pub fn decode(&self, bytes: &[u8]) -> Decoded {
        let msg = Message::decode(bytes, self.max_message_len);
        let states = match &msg {
            Ok(Message::Deltas { vars, .. }) => vars
                .iter()
                .map(|v| codec::decode(&v.delta, self.max_delta_len))
                .collect(),
            Ok(Message::State { vars, .. }) => vars
                .iter()
                .map(|v| codec::decode(&v.delta, self.max_state_len))
                .collect(),
            Ok(Message::Reply { result, .. }) => match &**result {
                Ok(Replied {
                    change: Some(v), ..
                }) => vec![codec::decode(&v.delta, self.max_delta_len)],
                _ => Vec::new(),
            },
            Ok(Message::Offer { var: Some(v), .. }) => {
                vec![codec::decode(&v.delta, self.max_state_len)]
            }
            Ok(Message::Repair { vars, .. }) => vars
                .iter()
                .map(|v| codec::decode(&v.delta, self.max_delta_len))
                .collect(),
            _ => Vec::new(),
        };
        // A part before the end is not a valid state on its own: the whole
        // is validated once assembled.
        let part = match &msg {
            Ok(Message::StatePart { part, .. }) => {
                // A part is bounded by its message, not by `max_delta_len`:
                // a state larger than a delta comes in parts.
                Some(Box::new(DecodedPart::decode(part, self.max_message_len)))
            }
            _ => None,
        };
        Decoded {
            len: bytes.len(),
            msg,
            states,
            part,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_input() {
        let m = Message::Deltas {
            from: 3,
            to: 9,
            base: 3,
            vars: vec![VarDelta {
                name: "x".into(),
                kind: Kind::Counter,
                delta: vec![1, 0, 0],
            }],
            complete: false,
        };
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes, 1 << 20).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(Message::decode(&bytes[..cut], 1 << 20).is_err());
        }
        assert!(matches!(
            Message::decode(&bytes, 4),
            Err(DecodeError::TooLarge { .. })
        ));
        // A length prefix claiming a huge vector fails without allocating it.
        let huge = [codec::FORMAT_VERSION, 0, 1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Message::decode(&huge, 1 << 20).is_err());
    }
}
