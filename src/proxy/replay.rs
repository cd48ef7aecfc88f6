//! Request bodies on their way upstream, and sending one again from its start.
//!
//! An HTTP/2 upstream may refuse a stream it never processed (`REFUSED_STREAM`, or a
//! `GOAWAY` whose last stream id is below it). Such a request is safe to send to the
//! next upstream on the ring, but by then the connection has taken some of its body.
//! A [`ReplayBody`] keeps what was taken, up to [`MAX_REPLAY_BYTES`], and a replay
//! sends that again before reading on from the client. A body larger than the bound
//! stops being kept (and cannot be replayed) as soon as it passes it: nothing large is
//! ever held.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::body::{BoxError, ClientSide, RequestBody};

/// Most bytes of a request body kept so that the request can be sent again: enough
/// for the unary calls and small API bodies that make up nearly all requests, small
/// enough that thousands in flight hold a few hundred MiB at worst.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// The body of a request as it is handed to an upstream connection.
#[derive(Debug)]
pub enum UpBody {
    /// No body at all: sending it again needs nothing.
    Empty,
    /// A client's body, sent once.
    Direct(RequestBody),
    /// A client's body whose start is kept for a replay.
    Replay(ReplayBody),
}

/// How to build the same body again, once the connection has given up on it.
#[derive(Debug, Clone)]
pub enum Rewind {
    Empty,
    Replay(Arc<Mutex<Shared>>),
}

impl Rewind {
    /// The body from its start, or `None` when more was taken than is kept.
    pub fn body(&self) -> Option<UpBody> {
        match self {
            Rewind::Empty => Some(UpBody::Empty),
            Rewind::Replay(shared) => {
                let mut s = lock(shared);
                if s.overflowed {
                    return None;
                }
                s.generation += 1;
                Some(UpBody::Replay(ReplayBody {
                    shared: shared.clone(),
                    generation: s.generation,
                    pos: 0,
                }))
            }
        }
    }
}

impl UpBody {
    /// `body` as sent once, or kept for a replay.
    pub fn new(body: RequestBody, replayable: bool) -> UpBody {
        if body.is_end_stream() {
            UpBody::Empty
        } else if replayable {
            UpBody::Replay(ReplayBody::new(body))
        } else {
            UpBody::Direct(body)
        }
    }

    /// What builds this body again, if it can be.
    pub fn rewind(&self) -> Option<Rewind> {
        match self {
            UpBody::Empty => Some(Rewind::Empty),
            UpBody::Direct(_) => None,
            UpBody::Replay(r) => {
                (!lock(&r.shared).overflowed).then(|| Rewind::Replay(r.shared.clone()))
            }
        }
    }

    /// See [`RequestBody::track_sent`]; `None` for an empty body.
    pub fn track_sent(&mut self) -> Option<watch::Receiver<bool>> {
        match self {
            UpBody::Empty => None,
            UpBody::Direct(b) => Some(b.track_sent()),
            UpBody::Replay(r) => Some(lock(&r.shared).source.track_sent()),
        }
    }

    /// See [`RequestBody::client_side`].
    pub fn client_side(&self) -> Option<Arc<ClientSide>> {
        match self {
            UpBody::Empty => None,
            UpBody::Direct(b) => b.client_side(),
            UpBody::Replay(r) => lock(&r.shared).source.client_side(),
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Direct(b) => Pin::new(b).poll_frame(cx),
            UpBody::Replay(r) => Pin::new(r).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Direct(b) => b.is_end_stream(),
            UpBody::Replay(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Direct(b) => b.size_hint(),
            UpBody::Replay(r) => r.size_hint(),
        }
    }
}

/// A frame taken from the client's body and kept.
#[derive(Debug)]
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// The client's body and what has been taken of it, shared by every replay.
#[derive(Debug)]
pub struct Shared {
    source: RequestBody,
    kept: Vec<Kept>,
    kept_bytes: usize,
    /// More than [`MAX_REPLAY_BYTES`] was taken: `kept` is emptied, no replay.
    overflowed: bool,
    /// Only the newest reader may read; an older one (a refused stream's body that
    /// the connection has not dropped yet) gets an error.
    generation: u64,
}

/// A request body that keeps what it hands on, so that it can be sent again.
#[derive(Debug)]
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    /// Index of the next kept frame to hand on; past the end, the source is read.
    pos: usize,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReplayBody {
    fn new(source: RequestBody) -> ReplayBody {
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                source,
                kept: Vec::new(),
                kept_bytes: 0,
                overflowed: false,
                generation: 0,
            })),
            generation: 0,
            pos: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body taken over by a later attempt")]
struct Superseded;

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut s = lock(&this.shared);
        if s.generation != this.generation {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(kept) = s.kept.get(this.pos) {
            this.pos += 1;
            let frame = match kept {
                Kept::Data(d) => Frame::data(d.clone()),
                Kept::Trailers(t) => Frame::trailers(t.clone()),
            };
            return Poll::Ready(Some(Ok(frame)));
        }
        let polled = Pin::new(&mut s.source).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if !s.overflowed {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if s.kept_bytes + len > MAX_REPLAY_BYTES {
                    s.overflowed = true;
                    s.kept = Vec::new();
                    s.kept_bytes = 0;
                    this.pos = 0;
                } else {
                    let kept = match (frame.data_ref(), frame.trailers_ref()) {
                        (Some(d), _) => Kept::Data(d.clone()),
                        (None, Some(t)) => Kept::Trailers(t.clone()),
                        (None, None) => return polled,
                    };
                    s.kept_bytes += len;
                    s.kept.push(kept);
                    this.pos += 1;
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared);
        self.pos >= s.kept.len() && s.source.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let s = lock(&self.shared);
        let kept: u64 = s
            .kept
            .iter()
            .skip(self.pos)
            .map(|k| match k {
                Kept::Data(d) => d.len() as u64,
                Kept::Trailers(_) => 0,
            })
            .sum();
        let rest = s.source.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + kept);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + kept);
        }
        hint
    }
}
