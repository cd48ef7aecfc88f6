//! How peer connections are made: the [`Dialer`] and [`Acceptor`] seams, with plain TCP
//! as the default. Mutual TLS plugs in here by wrapping the TCP stream; everything above
//! (handshake, framing, queues) only sees a [`BoxStream`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::raft::NodeId;

/// A connected byte stream to or from a peer (TCP, or TLS over TCP).
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerStream for T {}

/// A type-erased peer stream; one allocation per connection, not per message.
pub type BoxStream = Box<dyn PeerStream>;

/// A boxed, sendable future (what the seam traits return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a seam proved about the other end: the names its certificate was issued to.
pub trait PeerIdentity: Send + Sync + 'static {
    /// True when the verified certificate names `node` (a DNS subject alternative name).
    fn has_name(&self, node: &str) -> bool;
}

/// A connection made by a seam, with the identity it verified (none for plain TCP).
pub struct Connected {
    pub stream: BoxStream,
    pub identity: Option<Box<dyn PeerIdentity>>,
}

impl Connected {
    /// A connection whose peer is not identified by the seam.
    pub fn anonymous(stream: BoxStream) -> Connected {
        Connected {
            stream,
            identity: None,
        }
    }
}

/// Opens outbound connections. A TLS dialer connects TCP, then runs a client handshake
/// presenting this node's certificate and verifying that the server is `peer`.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, peer: NodeId, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connected>>;
}

/// Wraps accepted TCP connections. A TLS acceptor runs the server handshake and
/// requires a client certificate from the cluster's CA.
pub trait Acceptor: Send + Sync + 'static {
    fn accept(&self, tcp: TcpStream, remote: SocketAddr) -> BoxFuture<'_, io::Result<Connected>>;
}

/// Plain TCP with Nagle off: Raft messages are small and latency-sensitive.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, _peer: NodeId, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connected>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(Connected::anonymous(Box::new(tcp)))
        })
    }
}

/// Plain TCP: the accepted stream is used as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpAcceptor;

impl Acceptor for TcpAcceptor {
    fn accept(&self, tcp: TcpStream, _remote: SocketAddr) -> BoxFuture<'_, io::Result<Connected>> {
        Box::pin(async move {
            tcp.set_nodelay(true)?;
            Ok(Connected::anonymous(Box::new(tcp)))
        })
    }
}
