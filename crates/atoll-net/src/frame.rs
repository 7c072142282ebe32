//! Length-prefixed frames on a QUIC stream, bounded before allocation, and the
//! handshake frame.

use crate::NetError;
use serde::{Deserialize, Serialize};

/// Reads one frame: a 4-byte big-endian length, then that many bytes. The
/// length is checked against `max` before anything is allocated. `Ok(None)`
/// means the peer finished the stream cleanly between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, NetError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(NetError::stream(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(NetError::FrameTooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await.map_err(NetError::stream)?;
    Ok(Some(buf))
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, payload: &[u8]) -> Result<(), NetError> {
    let len = u32::try_from(payload.len()).map_err(|_| NetError::FrameTooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(NetError::stream)?;
    send.write_all(payload).await.map_err(NetError::stream)
}

/// The first frame each side sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always `*b"atoll"`.
    pub magic: [u8; 5],
    /// The replication protocol version the sender speaks.
    pub protocol: u32,
    /// The sender's cluster.
    pub cluster_id: u128,
    /// The sender's node id.
    pub node_id: u64,
    /// The sender's incarnation: new each time its store is opened, so a peer
    /// can tell a restarted (or restored) node from a reconnecting one.
    pub incarnation: u64,
}

/// The largest handshake frame accepted.
pub const MAX_HELLO_LEN: usize = 256;

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> Vec<u8> {
        atoll_crdt::codec::encode(self)
    }

    /// Decodes a hello from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Hello, NetError> {
        let h: Hello =
            atoll_crdt::codec::decode_unvalidated(bytes, MAX_HELLO_LEN).map_err(|e| {
                NetError::Handshake {
                    code: Some(crate::CloseCode::BadHandshake),
                    why: format!("undecodable hello: {e}"),
                }
            })?;
        if &h.magic != b"atoll" {
            return Err(NetError::Handshake {
                code: Some(crate::CloseCode::BadHandshake),
                why: "not an atoll peer (bad magic)".into(),
            });
        }
        Ok(h)
    }
}
