//! One upstream's client side: keep-alive HTTP/1.1 connections, pooled, over TLS
//! when the pool says so (the TLS handshake is part of connecting, bounded by the
//! same connect timeout).
//!
//! A request first tries idle pooled connections, then opens a new one. A connection
//! is made *before* the request is handed over, so a refused or timed-out connect
//! leaves the request (and its body) untouched for the next upstream on the ring.
//! A response comes with a [`PooledConn`]: the response body hands it back when it has
//! been read to its end, and the connection is pooled again at once. A body cut short
//! drops it instead, and hyper closes that connection.

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
use crate::tls::UpstreamTls;

type Sender = http1::SendRequest<RequestBody>;

/// Settings one upstream's client uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Idle pooled connections older than this are closed, not reused.
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// TLS towards the upstream; `None` is plain HTTP.
    pub tls: Option<Arc<UpstreamTls>>,
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

/// A connection lent to one exchange. [`PooledConn::release`] returns it to its
/// upstream's pool; dropping it instead lets hyper close it.
#[derive(Debug)]
pub struct PooledConn {
    sender: Sender,
    client: Arc<UpstreamClient>,
}

impl PooledConn {
    /// Pools the connection again: call only once the response body was read whole.
    pub fn release(self) {
        self.client.checkin(self.sender);
    }
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

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// An idle connection, newest first. It may still be finishing its previous
    /// exchange; [`UpstreamClient::send`] waits for it to be ready.
    pub fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < self.settings.idle_timeout {
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
        match &self.settings.tls {
            None => self.handshake(stream).await,
            Some(tls) => {
                let connect = tls.connect(&self.addr.host, stream);
                match tokio::time::timeout(self.settings.connect_timeout, connect).await {
                    Err(_) => Err(ConnectError::TimedOut),
                    Ok(Err(why)) => Err(ConnectError::Other(why)),
                    Ok(Ok(stream)) => self.handshake(stream).await,
                }
            }
        }
    }

    /// Starts HTTP/1.1 on a connected stream, its connection driven by a task of its own.
    async fn handshake<S>(&self, stream: S) -> Result<Sender, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
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

    /// Sends `req` on `sender`. The response comes with its connection, to be handed
    /// back once the response body has been read.
    pub async fn send(
        self: &Arc<Self>,
        mut sender: Sender,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledConn), SendError> {
        // A pooled connection becomes ready as soon as hyper has finished its previous
        // exchange, or fails here if the upstream closed it meanwhile.
        if let Err(e) = sender.ready().await {
            return Err(SendError::NotSent(Box::new(req), e));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((
                resp,
                PooledConn {
                    sender,
                    client: self.clone(),
                },
            )),
            Err(mut e) => match e.take_message() {
                Some(req) => Err(SendError::NotSent(Box::new(req), e.into_error())),
                None => Err(SendError::Failed(e.into_error())),
            },
        }
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
