//! The transport's wire format: a handshake opening every connection, then
//! length-prefixed frames, each a Raft [`Message`], a request or a reply.
//!
//! ```text
//! hello (dialer -> acceptor):   magic[4] "RWRT" | transport version u8 | codec version u8
//!                               | from NodeId u64 BE | to NodeId u64 BE
//!                               | cluster name length u8 | cluster name (UTF-8)
//!                               | node name length u8 | dialer's node name (UTF-8)
//!                               | auth mode u8 | nonce[32]
//! answer (acceptor -> dialer):  magic[4] | verdict u8
//!                               then, only if the verdict is 0 (accepted so far):
//!                               | node name length u8 | acceptor's node name | nonce[32]
//!                               | proof[32] (secret mode; zeros otherwise)
//! secret mode only:
//!   proof (dialer -> acceptor): proof[32]
//!   final (acceptor -> dialer): magic[4] | verdict u8
//! frame (dialer -> acceptor):   length u32 BE (of what follows) | kind u8 | body
//!                               | tag[32] (secret mode only)
//!   kind 1 raft:    codec::encode(message)
//!   kind 2 request: call id u64 BE | payload
//!   kind 3 reply:   call id u64 BE | status u8 | payload
//! ```
//!
//! Frames travel one way, from dialer to acceptor: a reply to a request goes back on
//! the answering node's own connection to the asker. The tag of a frame is an
//! HMAC-SHA256 under the session key over its sequence number, length, kind and body
//! (see [`super::auth`]). The proofs cover the transcript: every byte of the hello and
//! of the answer up to the proof.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::auth::{Session, MAC_LEN, NONCE_LEN};
use crate::raft::codec::{decode, encode_into, DecodeError, MAX_BYTES_LEN, WIRE_VERSION};
use crate::raft::{Message, NodeId};

/// Opens every connection so a stray client (or another protocol) is told apart at once.
pub const MAGIC: [u8; 4] = *b"RWRT";
/// Version of the handshake and framing; bumped on any incompatible change to either.
/// The message encoding carries its own version ([`WIRE_VERSION`]), also checked at handshake.
/// Version 2: frame kinds (requests and replies), node names and authentication.
pub const TRANSPORT_VERSION: u8 = 2;
/// Longest cluster name: it travels behind a one-byte length, and names are short labels.
pub const MAX_CLUSTER_NAME_LEN: usize = u8::MAX as usize;
/// Longest node name in a handshake: the config's own bound on node ids.
pub const MAX_NODE_NAME_LEN: usize = crate::config::MAX_NODE_ID_BYTES;
/// Room for everything in a message besides its largest byte string: header varints, a
/// snapshot's member lists (2 × 1024 ids × 10 bytes at most) and length prefixes.
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;
/// Largest frame body accepted or sent. Snapshots travel as single messages, so a frame
/// must hold the codec's largest byte string plus overhead; anything above is hostile.
pub const MAX_FRAME_BYTES: usize = MAX_BYTES_LEN as usize + FRAME_OVERHEAD_BYTES;
/// Largest request or reply payload: a forwarded change is at most a batch of
/// upstreams (a few MiB of JSON); a larger one is refused before it is sent.
pub const MAX_CALL_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of the hello before the cluster name.
const HELLO_FIXED_LEN: usize = MAGIC.len() + 1 + 1 + 8 + 8 + 1;
/// Read buffers above this are released after a frame, so one snapshot does not pin
/// tens of megabytes for the life of a connection.
const READ_BUF_KEEP_BYTES: usize = 1024 * 1024;

const KIND_RAFT: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_REPLY: u8 = 3;

/// How the dialer means to authenticate; both sides must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Insecure = 0,
    Secret = 1,
    Certificates = 2,
}

impl AuthMode {
    fn from_byte(b: u8) -> Option<AuthMode> {
        Some(match b {
            0 => AuthMode::Insecure,
            1 => AuthMode::Secret,
            2 => AuthMode::Certificates,
            _ => return None,
        })
    }
}

/// What a dialer announces when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The dialing node.
    pub from: NodeId,
    /// The node the dialer believes it reached.
    pub to: NodeId,
    /// The cluster the dialer belongs to.
    pub cluster: String,
    /// The dialer's node name (its Raft id derives from it).
    pub name: String,
    pub mode: AuthMode,
    pub nonce: [u8; NONCE_LEN],
}

/// The acceptor's answer to an accepted hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The acceptor's node name.
    pub name: String,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; MAC_LEN],
}

/// The acceptor's verdict on a hello (and, in secret mode, on the dialer's proof).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted = 0,
    /// Transport or codec version not spoken here.
    BadVersion = 1,
    /// The dialer belongs to another cluster.
    WrongCluster = 2,
    /// The dialer's id is not a member here: it was never added, or was removed.
    NotAMember = 3,
    /// The dialer meant another node (stale address after a membership change).
    WrongNode = 4,
    /// The dialer's proof of the secret, or its certificate's names, do not hold.
    NotAuthenticated = 5,
    /// The dialer authenticates another way than this node (secret, TLS, none).
    AuthMismatch = 6,
}

impl Verdict {
    fn from_byte(b: u8) -> Option<Verdict> {
        Some(match b {
            0 => Verdict::Accepted,
            1 => Verdict::BadVersion,
            2 => Verdict::WrongCluster,
            3 => Verdict::NotAMember,
            4 => Verdict::WrongNode,
            5 => Verdict::NotAuthenticated,
            6 => Verdict::AuthMismatch,
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
    /// A name is not UTF-8 or too long, or the auth mode is unknown.
    BadName,
    /// The acceptor answered with something other than a known verdict.
    BadVerdict(u8),
    /// The acceptor refused us.
    Rejected(Verdict),
    /// The acceptor did not prove it knows the cluster secret.
    AcceptorNotAuthenticated,
    /// The acceptor's name or certificate is not the node we dialled.
    AcceptorNotThePeer(String),
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
            HandshakeError::Rejected(Verdict::NotAMember) => {
                write!(f, "refused: this node is not a member of the peer's cluster")
            }
            HandshakeError::Rejected(Verdict::NotAuthenticated) => write!(
                f,
                "refused: authentication failed (wrong cluster secret, or a certificate not issued to this node's name)"
            ),
            HandshakeError::AcceptorNotAuthenticated => {
                write!(f, "the peer does not know the cluster secret")
            }
            HandshakeError::AcceptorNotThePeer(why) => write!(f, "not the peer dialled: {why}"),
            other => write!(f, "handshake failed: {other:?}"),
        }
    }
}

fn push_name(out: &mut Vec<u8>, name: &str, max: usize) {
    let name = &name.as_bytes()[..name.len().min(max)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

/// Encodes a hello; names longer than their bounds are cut (validated at start).
pub fn encode_hello(h: &Hello) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_FIXED_LEN + 2 * 64 + 1 + NONCE_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(TRANSPORT_VERSION);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&h.from.to_be_bytes());
    out.extend_from_slice(&h.to.to_be_bytes());
    push_name(&mut out, &h.cluster, MAX_CLUSTER_NAME_LEN);
    push_name(&mut out, &h.name, MAX_NODE_NAME_LEN);
    out.push(h.mode as u8);
    out.extend_from_slice(&h.nonce);
    out
}

async fn read_name<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u8,
    max: usize,
) -> Result<String, HandshakeError> {
    if usize::from(len) > max {
        return Err(HandshakeError::BadName);
    }
    let mut name = vec![0u8; usize::from(len)];
    r.read_exact(&mut name).await?;
    String::from_utf8(name).map_err(|_| HandshakeError::BadName)
}

/// Reads and checks a hello's magic, versions and shape; the rest is the caller's to judge.
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
    let cluster = read_name(r, fixed[22], MAX_CLUSTER_NAME_LEN).await?;
    let name_len = r.read_u8().await?;
    let name = read_name(r, name_len, MAX_NODE_NAME_LEN).await?;
    let mode = AuthMode::from_byte(r.read_u8().await?).ok_or(HandshakeError::BadName)?;
    let mut nonce = [0u8; NONCE_LEN];
    r.read_exact(&mut nonce).await?;
    Ok(Hello {
        from,
        to,
        cluster,
        name,
        mode,
        nonce,
    })
}

/// Encodes a verdict alone: a refusal, or the final verdict of secret mode.
pub fn encode_verdict(v: Verdict) -> [u8; 5] {
    let [a, b, c, d] = MAGIC;
    [a, b, c, d, v as u8]
}

/// The accepted answer up to (not including) the proof: what the proofs cover.
pub fn encode_answer_head(name: &str, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = encode_verdict(Verdict::Accepted).to_vec();
    push_name(&mut out, name, MAX_NODE_NAME_LEN);
    out.extend_from_slice(nonce);
    out
}

/// Reads a verdict; anything but `Accepted` is an error.
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

/// Reads the acceptor's answer: a refusal is an error; otherwise its name, nonce and
/// proof, and the bytes the proofs cover (appended to `transcript`).
pub async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
    transcript: &mut Vec<u8>,
) -> Result<Answer, HandshakeError> {
    read_verdict(r).await?;
    let len = r.read_u8().await?;
    let name = read_name(r, len, MAX_NODE_NAME_LEN).await?;
    let mut nonce = [0u8; NONCE_LEN];
    r.read_exact(&mut nonce).await?;
    let mut proof = [0u8; MAC_LEN];
    r.read_exact(&mut proof).await?;
    transcript.extend_from_slice(&encode_answer_head(&name, &nonce));
    Ok(Answer { name, nonce, proof })
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Raft(Message),
    /// A request to the receiving node, answered by a [`Frame::Reply`] with its id.
    Request {
        id: u64,
        payload: Vec<u8>,
    },
    /// The answer to request `id` of the receiving node.
    Reply {
        id: u64,
        status: ReplyStatus,
        payload: Vec<u8>,
    },
}

/// How a request was dealt with by the transport answering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The payload is the handler's answer.
    Answered = 0,
    /// The asker already has the most requests in flight with this node.
    Busy = 1,
    /// This node serves no requests (it has no handler).
    NotServing = 2,
    /// The handler did not answer within the transport's bound.
    TimedOut = 3,
}

impl ReplyStatus {
    fn from_byte(b: u8) -> Option<ReplyStatus> {
        Some(match b {
            0 => ReplyStatus::Answered,
            1 => ReplyStatus::Busy,
            2 => ReplyStatus::NotServing,
            3 => ReplyStatus::TimedOut,
            _ => return None,
        })
    }
}

impl Frame {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Raft(m) => m.body.name(),
            Frame::Request { .. } => "request",
            Frame::Reply { .. } => "reply",
        }
    }
}

/// Appends `frame`, tagged under `session` if there is one. Returns false (and leaves
/// `out` unchanged) if the body exceeds [`MAX_FRAME_BYTES`], which the receiver would
/// refuse.
pub fn push_frame(out: &mut Vec<u8>, frame: &Frame, session: Option<&mut Session>) -> bool {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match frame {
        Frame::Raft(msg) => {
            out.push(KIND_RAFT);
            encode_into(msg, out);
        }
        Frame::Request { id, payload } => {
            out.push(KIND_REQUEST);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(payload);
        }
        Frame::Reply {
            id,
            status,
            payload,
        } => {
            out.push(KIND_REPLY);
            out.extend_from_slice(&id.to_be_bytes());
            out.push(*status as u8);
            out.extend_from_slice(payload);
        }
    }
    let body_len = out.len() - start - 5;
    if body_len > MAX_FRAME_BYTES {
        out.truncate(start);
        return false;
    }
    let tag_len = if session.is_some() { MAC_LEN } else { 0 };
    let len = (1 + body_len + tag_len) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    if let Some(s) = session {
        let tag = s.seal(&out[start..start + 5], &out[start + 5..]);
        out.extend_from_slice(&tag);
    }
    true
}

/// Why reading a frame ended the connection.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    Closed,
    Io(io::Error),
    /// A length out of bounds.
    BadLength(u32),
    /// An unknown kind, or a request or reply too short for its header.
    BadKind(u8),
    /// The tag does not match: forged, replayed, reordered or corrupted.
    BadTag,
    /// The message did not decode.
    Decode(DecodeError),
}

/// Reads one frame into `buf` (reused across calls), checks its tag under `session`
/// (if any) and decodes it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    session: Option<&mut Session>,
) -> Result<Frame, FrameError> {
    let mut len_bytes = [0u8; 4];
    match r.read_exact(&mut len_bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_be_bytes(len_bytes);
    let tag_len = if session.is_some() { MAC_LEN } else { 0 };
    if (len as usize) < 1 + tag_len || len as usize > 1 + MAX_FRAME_BYTES + tag_len {
        return Err(FrameError::BadLength(len));
    }
    read_body(r, buf, len as usize).await?;
    if let Some(s) = session {
        let (rest, tag) = buf.split_at(buf.len() - MAC_LEN);
        let mut header = [0u8; 5];
        header[..4].copy_from_slice(&len_bytes);
        header[4] = rest[0];
        if !s.open(&header, &rest[1..], tag) {
            return Err(FrameError::BadTag);
        }
        buf.truncate(buf.len() - MAC_LEN);
    }
    let frame = parse(buf);
    if buf.capacity() > READ_BUF_KEEP_BYTES {
        *buf = Vec::new();
    }
    frame
}

/// Decodes a frame's kind and body (`buf` holds both, the tag already removed).
fn parse(buf: &[u8]) -> Result<Frame, FrameError> {
    let (kind, body) = (buf[0], &buf[1..]);
    let id = || -> Result<u64, FrameError> {
        let bytes = body.get(..8).ok_or(FrameError::BadKind(kind))?;
        Ok(u64::from_be_bytes(bytes.try_into().unwrap_or_default()))
    };
    match kind {
        KIND_RAFT => decode(body).map(Frame::Raft).map_err(FrameError::Decode),
        KIND_REQUEST => Ok(Frame::Request {
            id: id()?,
            payload: body[8..].to_vec(),
        }),
        KIND_REPLY => {
            let id = id()?;
            let status = body
                .get(8)
                .and_then(|&b| ReplyStatus::from_byte(b))
                .ok_or(FrameError::BadKind(kind))?;
            Ok(Frame::Reply {
                id,
                status,
                payload: body[9..].to_vec(),
            })
        }
        other => Err(FrameError::BadKind(other)),
    }
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
    use super::super::auth::Secret;
    use super::*;
    use crate::raft::MessageBody;

    fn msg() -> Frame {
        Frame::Raft(Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Heartbeat { commit: 4 },
        })
    }

    fn hello() -> Hello {
        Hello {
            from: 7,
            to: u64::MAX,
            cluster: "edge-eu".into(),
            name: "n1".into(),
            mode: AuthMode::Secret,
            nonce: [9; NONCE_LEN],
        }
    }

    #[tokio::test]
    async fn hello_round_trips() {
        let bytes = encode_hello(&hello());
        assert_eq!(read_hello(&mut &bytes[..]).await.ok(), Some(hello()));
    }

    #[tokio::test]
    async fn hello_rejects_magic_versions_and_modes() {
        let good = encode_hello(&hello());
        let mode_at = good.len() - NONCE_LEN - 1;
        for (at, value) in [(0, b'X'), (4, 99), (5, 99), (mode_at, 7)] {
            let mut bad = good.clone();
            bad[at] = value;
            let err = read_hello(&mut &bad[..]).await;
            assert!(
                matches!(
                    err,
                    Err(HandshakeError::BadMagic
                        | HandshakeError::BadVersion { .. }
                        | HandshakeError::BadName)
                ),
                "byte {at}"
            );
        }
    }

    #[tokio::test]
    async fn verdicts_and_answers_round_trip() {
        let ok = encode_verdict(Verdict::Accepted);
        assert!(read_verdict(&mut &ok[..]).await.is_ok());
        let no = encode_verdict(Verdict::NotAMember);
        assert!(matches!(
            read_verdict(&mut &no[..]).await,
            Err(HandshakeError::Rejected(Verdict::NotAMember))
        ));
        let mut bytes = encode_answer_head("n2", &[3; NONCE_LEN]);
        bytes.extend_from_slice(&[4; MAC_LEN]);
        let mut transcript = Vec::new();
        let a = read_answer(&mut &bytes[..], &mut transcript).await.unwrap();
        assert_eq!(
            (a.name.as_str(), a.nonce, a.proof),
            ("n2", [3; NONCE_LEN], [4; MAC_LEN])
        );
        assert_eq!(transcript, bytes[..bytes.len() - MAC_LEN]);
    }

    #[tokio::test]
    async fn frames_of_every_kind_round_trip_and_bad_lengths_are_refused() {
        let frames = [
            msg(),
            Frame::Request {
                id: 5,
                payload: b"ask".to_vec(),
            },
            Frame::Reply {
                id: 5,
                status: ReplyStatus::Busy,
                payload: Vec::new(),
            },
        ];
        let mut out = Vec::new();
        for f in &frames {
            assert!(push_frame(&mut out, f, None));
        }
        let (mut r, mut buf) = (&out[..], Vec::new());
        for f in &frames {
            assert_eq!(
                read_frame(&mut r, &mut buf, None).await.ok().as_ref(),
                Some(f)
            );
        }
        assert!(matches!(
            read_frame(&mut r, &mut buf, None).await,
            Err(FrameError::Closed)
        ));
        for len in [0u32, MAX_FRAME_BYTES as u32 + 2, u32::MAX] {
            let bytes = len.to_be_bytes();
            let res = read_frame(&mut &bytes[..], &mut buf, None).await;
            assert!(matches!(res, Err(FrameError::BadLength(_))));
        }
        let unknown = [0, 0, 0, 1, 9];
        let res = read_frame(&mut &unknown[..], &mut buf, None).await;
        assert!(matches!(res, Err(FrameError::BadKind(9))));
    }

    #[tokio::test]
    async fn tagged_frames_refuse_tampering_and_replay() {
        let secret = Secret::new(vec![1; 32]).unwrap();
        let mut tx = secret.session(b"t");
        let mut out = Vec::new();
        assert!(push_frame(&mut out, &msg(), Some(&mut tx)));
        let one = out.clone();
        let mut rx = secret.session(b"t");
        let mut buf = Vec::new();
        let got = read_frame(&mut &one[..], &mut buf, Some(&mut rx)).await;
        assert_eq!(got.ok(), Some(msg()));
        // The same bytes again (a replay) fail: the sequence number moved on.
        let again = read_frame(&mut &one[..], &mut buf, Some(&mut rx)).await;
        assert!(matches!(again, Err(FrameError::BadTag)));
        // A flipped body byte fails.
        let mut rx = secret.session(b"t");
        let mut bad = one.clone();
        bad[6] ^= 1;
        let res = read_frame(&mut &bad[..], &mut buf, Some(&mut rx)).await;
        assert!(matches!(res, Err(FrameError::BadTag)));
        // An untagged frame on a tagged connection fails.
        let mut plain = Vec::new();
        push_frame(&mut plain, &msg(), None);
        let mut rx = secret.session(b"t");
        let res = read_frame(&mut &plain[..], &mut buf, Some(&mut rx)).await;
        assert!(matches!(
            res,
            Err(FrameError::BadLength(_) | FrameError::BadTag)
        ));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_a_message() {
        let mut out = Vec::new();
        push_frame(&mut out, &msg(), None);
        out.pop();
        let res = read_frame(&mut &out[..], &mut Vec::new(), None).await;
        assert!(matches!(res, Err(FrameError::Io(_))));
    }
}
