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

/// Opens outbound connections. A TLS dialer connects TCP, then runs a client handshake
/// presenting this node's certificate and verifying that the server is `peer`.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, peer: NodeId, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>>;
}

/// Wraps accepted TCP connections. A TLS acceptor runs the server handshake and
/// requires a client certificate from the cluster's CA.
pub trait Acceptor: Send + Sync + 'static {
    fn accept(&self, tcp: TcpStream, remote: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>>;
}

/// Plain TCP with Nagle off: Raft messages are small and latency-sensitive.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, _peer: NodeId, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxStream)
        })
    }
}

/// Plain TCP: the accepted stream is used as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpAcceptor;

impl Acceptor for TcpAcceptor {
    fn accept(&self, tcp: TcpStream, _remote: SocketAddr) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxStream)
        })
    }
}
