//! gRPC backends in-process on 127.0.0.1: the Echo service and the standard health
//! service (`tonic-health`) served by tonic, over h2c or over TLS with ALPN `h2`.
//! Every accepted connection is counted (accepted so far, open now, most open at
//! once). A backend can shut down gracefully on demand (tonic sends GOAWAY, finishes
//! the calls it accepted, closes its listener) and start again on the same port.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::PrivateKeyDer;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::common::{loopback, within};
use crate::grpc::echo::EchoServer;
use crate::tlsutil::Leaf;

/// Accepted connections handed to tonic but not yet taken: a short queue, since
/// tonic takes each at once.
const ACCEPT_QUEUE: usize = 16;

/// Connections one backend has seen.
#[derive(Default)]
pub struct Conns {
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
}

impl Conns {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn max_open(&self) -> usize {
        self.max_open.load(Ordering::SeqCst)
    }

    fn opened(self: &Arc<Self>) -> Arc<Self> {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_open.fetch_max(now, Ordering::SeqCst);
        self.clone()
    }
}

/// A connection stream that counts itself open until dropped.
pub struct Counted<S> {
    inner: S,
    conns: Arc<Conns>,
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> Connected for Counted<S> {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

type Io = Box<dyn IoStream>;
trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// One gRPC backend.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub conns: Arc<Conns>,
    /// Set `SERVING` / `NOT_SERVING` per service ("" is the server overall).
    pub health: HealthReporter,
    tls: Option<Arc<ServerConfig>>,
    /// Connections older than this get a graceful GOAWAY (tonic's
    /// `max_connection_age`) while the listener stays open.
    max_age: Option<Duration>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend speaking h2c (HTTP/2 with prior knowledge, no TLS).
    pub async fn h2c(name: &str) -> Backend {
        Backend::start(name, None, None).await
    }

    /// A backend behind TLS with `leaf`, offering ALPN `h2` only.
    pub async fn tls(name: &str, leaf: &Leaf) -> Backend {
        Backend::start(name, Some(server_config(leaf)), None).await
    }

    /// An h2c backend that sends each connection a graceful GOAWAY once it is `age`
    /// old and keeps accepting new ones.
    pub async fn h2c_recycling(name: &str, age: Duration) -> Backend {
        Backend::start(name, None, Some(age)).await
    }

    async fn start(
        name: &str,
        tls: Option<Arc<ServerConfig>>,
        max_age: Option<Duration>,
    ) -> Backend {
        let listener = TcpListener::bind(loopback()).await.expect("bind backend");
        let mut backend = Backend {
            name: name.to_owned(),
            addr: listener.local_addr().expect("backend address"),
            conns: Arc::default(),
            health: HealthReporter::new(),
            tls,
            max_age,
            stop: None,
            task: None,
        };
        backend.serve(listener);
        backend
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = mpsc::channel::<io::Result<Counted<Io>>>(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            self.tls.clone(),
            self.conns.clone(),
            tx,
        ));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(age) = self.max_age {
            builder = builder.max_connection_age(age);
        }
        let router = builder
            .add_service(EchoServer::new(&self.name))
            .add_service(HealthServer::new(HealthService::from_health_reporter(
                self.health.clone(),
            )));
        let name = self.name.clone();
        self.task = Some(tokio::spawn(async move {
            let stopped = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = router
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), stopped)
                .await
            {
                panic!("backend {name} failed: {e}");
            }
        }));
        self.stop = Some(stop_tx);
    }

    /// Sets the health of `service` ("" for the whole server).
    pub async fn set_health(&self, service: &str, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status(service, status).await;
    }

    /// Starts a graceful shutdown: the listener closes (new connects are refused),
    /// every connection gets GOAWAY, calls already accepted run to their end.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until every connection has closed.
    pub async fn shutdown(&mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            within("backend graceful shutdown", task)
                .await
                .expect("backend task");
        }
    }

    /// Serves again on the same address (after [`Backend::shutdown`]).
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "restart after shutdown only");
        let listener = within("rebind backend", async {
            loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("rebind {}: {e}", self.addr),
                }
            }
        })
        .await;
        self.serve(listener);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Accepts until tonic stops taking connections (its end of `tx` closes), then drops
/// the listener so later connects are refused. TLS handshakes run in their own tasks.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    conns: Arc<Conns>,
    tx: mpsc::Sender<io::Result<Counted<Io>>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let tcp = tokio::select! {
            _ = tx.closed() => break,
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let _ = tcp.set_nodelay(true);
        let conns = conns.clone();
        let Some(acceptor) = acceptor.clone() else {
            let io: Io = Box::new(tcp);
            let counted = Counted {
                inner: io,
                conns: conns.opened(),
            };
            if tx.send(Ok(counted)).await.is_err() {
                break;
            }
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let io: Io = Box::new(tls);
            let counted = Counted {
                inner: io,
                conns: conns.opened(),
            };
            let _ = tx.send(Ok(counted)).await;
        });
    }
}

fn server_config(leaf: &Leaf) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::try_from(leaf.key_der.clone()).expect("leaf key");
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .expect("leaf certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// An address on 127.0.0.1 where nothing listens: connects are refused.
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind(loopback()).await.expect("bind");
    l.local_addr().expect("address")
}
