//! One upstream's HTTP/2 connections: at most `max_connections`, each carrying at most
//! `max_streams` requests at once.
//!
//! A request takes a stream slot on the first open connection with one free (filling
//! connections in order keeps their number low); with none free, a new connection is
//! opened while fewer than `max_connections` are open or being opened; with the cap
//! reached, the request waits for a slot up to the pool's connect timeout and then goes
//! to the next upstream on the ring (nothing was sent). A connection that received
//! `GOAWAY` or closed is dropped from the set at once: its streams finish on it, and
//! new requests open a new connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::client::conn::http2;
use tokio::sync::Notify;

use crate::config::Http2Settings;
use crate::proxy::replay::UpBody;

pub(super) type H2Sender = http2::SendRequest<UpBody>;

/// One HTTP/2 connection and the streams it carries now.
#[derive(Debug)]
pub(super) struct H2Conn {
    pub(super) sender: H2Sender,
    streams: AtomicUsize,
    /// The upstream sent `GOAWAY` on it (seen as a refused stream): no new streams,
    /// whatever hyper says of it yet.
    draining: AtomicBool,
}

impl H2Conn {
    fn usable(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && !self.sender.is_closed() && self.sender.is_ready()
    }
}

/// The HTTP/2 side of one upstream.
#[derive(Debug)]
pub(super) struct H2Pool {
    settings: Http2Settings,
    conns: Mutex<Conns>,
    /// Told whenever a stream slot or a connection slot frees up.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Conns {
    open: Vec<Arc<H2Conn>>,
    /// Connections being opened now (they count against the cap).
    connecting: usize,
}

/// A stream slot on one connection, held for one request until its response ends (or
/// it is dropped); the slot is given back on drop.
#[derive(Debug)]
pub struct Lease {
    conn: Arc<H2Conn>,
    pool: Arc<H2Pool>,
}

impl Lease {
    pub(super) fn sender(&self) -> H2Sender {
        self.conn.sender.clone()
    }

    /// Takes the connection out of use: the upstream is draining it.
    pub(super) fn drain(&self) {
        self.conn.draining.store(true, Ordering::Release);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.streams.fetch_sub(1, Ordering::AcqRel);
        self.pool.freed.notify_one();
    }
}

/// A slot to open a connection in; given back on drop unless the connection is added.
pub(super) struct Opening {
    pool: Arc<H2Pool>,
    done: bool,
}

impl Opening {
    /// Adds the new connection, with this request's stream on it.
    pub(super) fn opened(mut self, sender: H2Sender) -> Lease {
        self.done = true;
        let conn = Arc::new(H2Conn {
            sender,
            streams: AtomicUsize::new(1),
            draining: AtomicBool::new(false),
        });
        let mut c = self.pool.lock();
        c.connecting -= 1;
        c.open.push(conn.clone());
        drop(c);
        // The new connection has room for more than this request.
        self.pool.freed.notify_waiters();
        Lease {
            conn,
            pool: self.pool.clone(),
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if !self.done {
            self.pool.lock().connecting -= 1;
            self.pool.freed.notify_one();
        }
    }
}

/// What a request gets from [`H2Pool::take`].
pub(super) enum Slot {
    Stream(Lease),
    Open(Opening),
}

impl H2Pool {
    pub(super) fn new(settings: Http2Settings) -> Arc<H2Pool> {
        Arc::new(H2Pool {
            settings,
            conns: Mutex::new(Conns::default()),
            freed: Notify::new(),
        })
    }

    pub(super) fn settings(&self) -> &Http2Settings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream on an open connection, or the right to open one; `None` when every
    /// connection is full and no more may be opened.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut c = self.lock();
        c.open.retain(|conn| conn.usable());
        let max = self.settings.max_streams;
        for conn in &c.open {
            let taken = conn
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok();
            if taken {
                return Some(Slot::Stream(Lease {
                    conn: conn.clone(),
                    pool: self.clone(),
                }));
            }
        }
        if c.open.len() + c.connecting < self.settings.max_connections {
            c.connecting += 1;
            return Some(Slot::Open(Opening {
                pool: self.clone(),
                done: false,
            }));
        }
        None
    }

    /// A stream slot, or the right to open a connection, waiting up to `wait` for one
    /// to free up; `None` when none did.
    pub(super) async fn take(self: &Arc<Self>, wait: Duration) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Connections open now, and streams in use on them (for metrics and tests).
    pub(super) fn usage(&self) -> (usize, usize) {
        let c = self.lock();
        let open: Vec<&Arc<H2Conn>> = c.open.iter().filter(|conn| conn.usable()).collect();
        let streams = open
            .iter()
            .map(|conn| conn.streams.load(Ordering::Acquire))
            .sum();
        (open.len(), streams)
    }
}
