//! The transport's wire format: a handshake opening every connection, then
//! length-prefixed frames each carrying one codec-encoded Raft [`Message`].
//!
//! ```text
//! hello (dialer -> acceptor):  magic[4] "RWRT" | transport version u8 | codec version u8
//!                              | from NodeId u64 BE | to NodeId u64 BE
//!                              | cluster name length u8 | cluster name (UTF-8)
//! verdict (acceptor -> dialer): magic[4] | status u8 (0 accepted, else a rejection reason)
//! frame (dialer -> acceptor):  length u32 BE (1..=MAX_FRAME_BYTES) | codec::encode(message)
//! ```
//!
//! Connections are one-way after the handshake: the dialer only writes frames.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::raft::codec::{decode, encode_into, DecodeError, MAX_BYTES_LEN, WIRE_VERSION};
use crate::raft::{Message, NodeId};

/// Opens every connection so a stray client (or another protocol) is told apart at once.
pub const MAGIC: [u8; 4] = *b"RWRT";
/// Version of the handshake and framing; bumped on any incompatible change to either.
/// The message encoding carries its own version ([`WIRE_VERSION`]), also checked at handshake.
pub const TRANSPORT_VERSION: u8 = 1;
/// Longest cluster name: it travels behind a one-byte length, and names are short labels.
pub const MAX_CLUSTER_NAME_LEN: usize = u8::MAX as usize;
/// Room for everything in a message besides its largest byte string: header varints, a
/// snapshot's member lists (2 × 1024 ids × 10 bytes at most) and length prefixes.
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;
/// Largest frame body accepted or sent. Snapshots travel as single messages, so a frame
/// must hold the codec's largest byte string plus overhead; anything above is hostile.
pub const MAX_FRAME_BYTES: usize = MAX_BYTES_LEN as usize + FRAME_OVERHEAD_BYTES;
/// Bytes of the hello before the cluster name.
const HELLO_FIXED_LEN: usize = MAGIC.len() + 1 + 1 + 8 + 8 + 1;
/// Read buffers above this are released after a frame, so one snapshot does not pin
/// tens of megabytes for the life of a connection.
const READ_BUF_KEEP_BYTES: usize = 1024 * 1024;

/// What a dialer announces when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The dialing node.
    pub from: NodeId,
    /// The node the dialer believes it reached.
    pub to: NodeId,
    /// The cluster the dialer belongs to.
    pub cluster: String,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted = 0,
    /// Transport or codec version not spoken here.
    BadVersion = 1,
    /// The dialer belongs to another cluster.
    WrongCluster = 2,
    /// The dialer's id is not in the acceptor's current peer set.
    UnknownPeer = 3,
    /// The dialer meant another node (stale address after a membership change).
    WrongNode = 4,
}

impl Verdict {
    fn from_byte(b: u8) -> Option<Verdict> {
        Some(match b {
            0 => Verdict::Accepted,
            1 => Verdict::BadVersion,
            2 => Verdict::WrongCluster,
            3 => Verdict::UnknownPeer,
            4 => Verdict::WrongNode,
            _ => return None,
        })
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// The first bytes are not [`MAGIC`]: not a ringway peer.
    BadMagic,
    /// A transport or codec version this build does not speak.
    BadVersion {
        transport: u8,
        codec: u8,
    },
    /// The cluster name is not UTF-8.
    BadName,
    /// The acceptor answered with something other than a known verdict.
    BadVerdict(u8),
    /// The acceptor refused us.
    Rejected(Verdict),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "handshake i/o: {e}"),
            other => write!(f, "handshake failed: {other:?}"),
        }
    }
}

/// Encodes a hello; the caller guarantees the name fits [`MAX_CLUSTER_NAME_LEN`].
pub fn encode_hello(h: &Hello) -> Vec<u8> {
    let name = &h.cluster.as_bytes()[..h.cluster.len().min(MAX_CLUSTER_NAME_LEN)];
    let mut out = Vec::with_capacity(HELLO_FIXED_LEN + name.len());
    out.extend_from_slice(&MAGIC);
    out.push(TRANSPORT_VERSION);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&h.from.to_be_bytes());
    out.extend_from_slice(&h.to.to_be_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}

/// Reads and checks a hello's magic and versions; cluster and ids are the caller's to judge.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, HandshakeError> {
    let mut fixed = [0u8; HELLO_FIXED_LEN];
    r.read_exact(&mut fixed).await?;
    if fixed[..4] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let (transport, codec) = (fixed[4], fixed[5]);
    if transport != TRANSPORT_VERSION || codec != WIRE_VERSION {
        return Err(HandshakeError::BadVersion { transport, codec });
    }
    let from = u64::from_be_bytes(fixed[6..14].try_into().unwrap_or_default());
    let to = u64::from_be_bytes(fixed[14..22].try_into().unwrap_or_default());
    let mut name = vec![0u8; usize::from(fixed[22])];
    r.read_exact(&mut name).await?;
    let cluster = String::from_utf8(name).map_err(|_| HandshakeError::BadName)?;
    Ok(Hello { from, to, cluster })
}

/// Encodes the acceptor's verdict.
pub fn encode_verdict(v: Verdict) -> [u8; 5] {
    let [a, b, c, d] = MAGIC;
    [a, b, c, d, v as u8]
}

/// Reads the acceptor's verdict; anything but `Accepted` is an error.
pub async fn read_verdict<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), HandshakeError> {
    let mut buf = [0u8; 5];
    r.read_exact(&mut buf).await?;
    if buf[..4] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    match Verdict::from_byte(buf[4]) {
        Some(Verdict::Accepted) => Ok(()),
        Some(v) => Err(HandshakeError::Rejected(v)),
        None => Err(HandshakeError::BadVerdict(buf[4])),
    }
}

/// Appends `msg` as one frame. Returns false (and leaves `out` unchanged) if the
/// encoding exceeds [`MAX_FRAME_BYTES`], which the receiver would refuse.
pub fn push_frame(out: &mut Vec<u8>, msg: &Message) -> bool {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    encode_into(msg, out);
    let len = out.len() - start - 4;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return false;
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    true
}

/// Why reading a frame ended the connection.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    Closed,
    Io(io::Error),
    /// A length of zero or above [`MAX_FRAME_BYTES`].
    BadLength(u32),
    /// The body did not decode.
    Decode(DecodeError),
}

/// Reads one frame into `buf` (reused across calls) and decodes it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Message, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_be_bytes(len);
    if len == 0 || len as usize > MAX_FRAME_BYTES {
        return Err(FrameError::BadLength(len));
    }
    read_body(r, buf, len as usize).await?;
    let msg = decode(buf).map_err(FrameError::Decode);
    if buf.capacity() > READ_BUF_KEEP_BYTES {
        *buf = Vec::new();
    }
    msg
}

/// Reads exactly `len` bytes, growing `buf` only as data arrives (a claimed length
/// alone never allocates the whole frame).
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(), FrameError> {
    buf.clear();
    let got = r
        .take(len as u64)
        .read_to_end(buf)
        .await
        .map_err(FrameError::Io)?;
    if got < len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MessageBody;

    fn msg() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Heartbeat { commit: 4 },
        }
    }

    #[tokio::test]
    async fn hello_round_trips() {
        let h = Hello {
            from: 7,
            to: u64::MAX,
            cluster: "edge-eu".into(),
        };
        let bytes = encode_hello(&h);
        assert_eq!(read_hello(&mut &bytes[..]).await.ok(), Some(h));
    }

    #[tokio::test]
    async fn hello_rejects_magic_and_versions() {
        let good = encode_hello(&Hello {
            from: 1,
            to: 2,
            cluster: "c".into(),
        });
        for (at, value) in [(0, b'X'), (4, 99), (5, 99)] {
            let mut bad = good.clone();
            bad[at] = value;
            let err = read_hello(&mut &bad[..]).await;
            assert!(
                matches!(
                    err,
                    Err(HandshakeError::BadMagic | HandshakeError::BadVersion { .. })
                ),
                "byte {at}"
            );
        }
    }

    #[tokio::test]
    async fn verdicts_round_trip() {
        let ok = encode_verdict(Verdict::Accepted);
        assert!(read_verdict(&mut &ok[..]).await.is_ok());
        let no = encode_verdict(Verdict::UnknownPeer);
        assert!(matches!(
            read_verdict(&mut &no[..]).await,
            Err(HandshakeError::Rejected(Verdict::UnknownPeer))
        ));
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let mut out = Vec::new();
        assert!(push_frame(&mut out, &msg()));
        assert!(push_frame(&mut out, &msg()));
        let (mut r, mut buf) = (&out[..], Vec::new());
        assert_eq!(read_frame(&mut r, &mut buf).await.ok(), Some(msg()));
        assert_eq!(read_frame(&mut r, &mut buf).await.ok(), Some(msg()));
        assert!(matches!(
            read_frame(&mut r, &mut buf).await,
            Err(FrameError::Closed)
        ));
        for len in [0u32, MAX_FRAME_BYTES as u32 + 1, u32::MAX] {
            let bytes = len.to_be_bytes();
            let res = read_frame(&mut &bytes[..], &mut buf).await;
            assert!(matches!(res, Err(FrameError::BadLength(_))));
        }
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_a_message() {
        let mut out = Vec::new();
        push_frame(&mut out, &msg());
        out.pop();
        let res = read_frame(&mut &out[..], &mut Vec::new()).await;
        assert!(matches!(res, Err(FrameError::Io(_))));
    }
}
