//! One upstream's client side: keep-alive HTTP/1.1 connections, pooled.
//!
//! A request first tries idle pooled connections, then opens a new one. A connection
//! is made *before* the request is handed over, so a refused or timed-out connect
//! leaves the request (and its body) untouched for the next upstream on the ring.
//! After a response, the connection returns to the pool once hyper reports it ready
//! for the next request (its response body fully read).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;
use super::error::ConnectError;
use crate::config::UpstreamAddr;

type Sender = http1::SendRequest<RequestBody>;

/// Settings one upstream's client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Idle pooled connections older than this are closed, not reused.
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// The client side of one upstream.
#[derive(Debug)]
pub struct UpstreamClient {
    pub id: Arc<str>,
    pub addr: UpstreamAddr,
    settings: ClientSettings,
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

/// How sending on one connection ended, when it did not bring a response.
pub enum SendError {
    /// The request was never written (the connection had closed): it comes back and
    /// may go elsewhere.
    NotSent(Box<Request<RequestBody>>, hyper::Error),
    /// The request may have been written: it must not be sent again.
    Failed(hyper::Error),
}

impl UpstreamClient {
    pub fn new(id: Arc<str>, addr: UpstreamAddr, settings: ClientSettings) -> Self {
        UpstreamClient {
            id,
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn settings(&self) -> ClientSettings {
        self.settings
    }

    /// An idle connection ready for a request, newest first.
    pub fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.sender.is_ready() && conn.since.elapsed() < self.settings.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Opens a new connection within the connect timeout.
    pub async fn connect(&self) -> Result<Sender, ConnectError> {
        let connect = async {
            match self.addr.ip {
                Some(ip) => TcpStream::connect((ip, self.addr.port)).await,
                None => TcpStream::connect((self.addr.host.as_str(), self.addr.port)).await,
            }
        };
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Err(_) => return Err(ConnectError::TimedOut),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Refused)
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %id, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `req` on `sender`, then pools the connection once it is ready again.
    pub async fn send(
        self: &Arc<Self>,
        mut sender: Sender,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let result = sender.try_send_request(req).await;
        match result {
            Ok(resp) => {
                self.checkin_when_ready(sender);
                Ok(resp)
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Err(SendError::NotSent(Box::new(req), e.into_error())),
                None => Err(SendError::Failed(e.into_error())),
            },
        }
    }

    fn checkin_when_ready(self: &Arc<Self>, mut sender: Sender) {
        if self.settings.max_idle == 0 {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                this.checkin(sender);
            }
        });
    }

    fn checkin(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections now pooled (for tests and the admin view).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
