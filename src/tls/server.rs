//! Terminating TLS on a listener (client-facing or admin): the certificate picked by
//! SNI from a reloading [`CertStore`], ALPN offering `h2` then `http/1.1`, and every
//! handshake bounded in time.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};

use super::files::{CertStore, LoadError};
use super::{provider, SERVER_ALPN};
use crate::config::{CertPair, ListenerTls};

/// A client connection once its TLS handshake is done.
pub type ServerStream<S> = tokio_rustls::server::TlsStream<S>;

/// TLS termination for one listener; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    store: Arc<CertStore>,
}

impl ServerTls {
    /// Loads a listener's certificates and starts watching their files (on the current
    /// tokio runtime).
    pub fn new(tls: &ListenerTls) -> Result<ServerTls, LoadError> {
        ServerTls::from_pairs(&tls.certificates, tls.handshake_timeout)
    }

    /// Like [`ServerTls::new`] from the certificates themselves (the first is the
    /// default for clients sending no SNI name, or one no certificate covers).
    pub fn from_pairs(
        pairs: &[CertPair],
        handshake_timeout: Duration,
    ) -> Result<ServerTls, LoadError> {
        let store = CertStore::load(pairs)?;
        store.watch();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| LoadError {
                field: "certificates",
                message: format!("TLS setup failed: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
            store,
        })
    }

    /// Runs the server handshake on `stream`, within the handshake timeout.
    pub async fn accept<S>(&self, stream: S) -> io::Result<ServerStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(done) => done,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not done within {:?}", self.handshake_timeout),
            )),
        }
    }

    /// The certificates served, as currently loaded.
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.store
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("certs", &self.store)
            .finish()
    }
}
