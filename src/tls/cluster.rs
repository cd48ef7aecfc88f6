//! Mutual TLS for the cluster transport, plugged into its [`Dialer`]/[`Acceptor`]
//! seam. Every instance presents its certificate (signed by the cluster CA) on both
//! sides of a connection and accepts only peers whose certificate chains to that CA.
//! A plain-text peer fails the handshake and is refused.
//!
//! The CA admits a peer to the cluster; its certificate says which node it is. Each
//! instance's certificate must carry its node id (`node.id`) as a DNS subject
//! alternative name (the common name is not consulted): the transport's handshake
//! refuses a peer whose announced node name is not in its certificate, in both
//! directions, so a certificate issued to `n2` cannot speak as `n3`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;

use super::files::{load_pair, load_roots, CertStore, LoadError};
use super::provider;
use crate::cluster::transport::{Acceptor, BoxFuture, BoxStream, Connected, Dialer, PeerIdentity};
use crate::config::ClusterTls;
use crate::raft::NodeId;

/// ALPN of the Raft transport: a peer speaking anything else is not one of us.
const CLUSTER_ALPN: &[u8] = b"ringway-raft/1";

/// A dialer and an acceptor for the transport.
pub type Seam = (Arc<dyn Dialer>, Arc<dyn Acceptor>);

/// The transport's dialer and acceptor for `tls`; the instance's certificate is
/// reloaded when its files change (the CA is read once).
pub fn transport(tls: &ClusterTls) -> Result<Seam, LoadError> {
    let roots = Arc::new(load_roots(&tls.ca_file, "ca_file")?);
    let identity = CertStore::load(std::slice::from_ref(&tls.identity))?;
    identity.watch();
    let setup_failed = |e: &dyn std::fmt::Display| LoadError {
        field: "ca_file",
        message: format!("{}: cannot build the TLS setup: {e}", tls.ca_file.display()),
    };
    let client_auth = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| setup_failed(&e))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_failed(&e))?
        .with_client_cert_verifier(client_auth)
        .with_cert_resolver(identity.clone());
    server.alpn_protocols = vec![CLUSTER_ALPN.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_failed(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterCaVerifier { roots }))
        .with_client_cert_resolver(identity);
    client.alpn_protocols = vec![CLUSTER_ALPN.to_vec()];
    let dialer = TlsDialer(tokio_rustls::TlsConnector::from(Arc::new(client)));
    let acceptor = TlsAcceptor(tokio_rustls::TlsAcceptor::from(Arc::new(server)));
    Ok((Arc::new(dialer), Arc::new(acceptor)))
}

/// Everything wrong with the files `tls` names.
pub(super) fn problems(tls: &ClusterTls) -> Vec<LoadError> {
    let mut out = Vec::new();
    if let Err(e) = load_roots(&tls.ca_file, "ca_file") {
        out.push(e);
    }
    if let Err(e) = load_pair(&tls.identity, "cert", "key") {
        out.push(e);
    }
    out
}

/// Connects TCP, then runs the client handshake; the transport bounds both in time.
struct TlsDialer(tokio_rustls::TlsConnector);

impl Dialer for TlsDialer {
    fn dial(&self, peer: NodeId, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connected>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = self.0.connect(name, tcp).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("TLS handshake with peer {peer} at {addr} failed: {e}"),
                )
            })?;
            let identity = CertIdentity::of(tls.get_ref().1.peer_certificates());
            Ok(Connected {
                stream: Box::new(tls) as BoxStream,
                identity,
            })
        })
    }
}

/// Runs the server handshake, requiring a client certificate from the cluster CA;
/// the transport bounds it in time.
struct TlsAcceptor(tokio_rustls::TlsAcceptor);

impl Acceptor for TlsAcceptor {
    fn accept(&self, tcp: TcpStream, remote: SocketAddr) -> BoxFuture<'_, io::Result<Connected>> {
        Box::pin(async move {
            tcp.set_nodelay(true)?;
            match self.0.accept(tcp).await {
                Ok(tls) => {
                    let identity = CertIdentity::of(tls.get_ref().1.peer_certificates());
                    Ok(Connected {
                        stream: Box::new(tls) as BoxStream,
                        identity,
                    })
                }
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "peer refused: TLS handshake failed (plain text, or a certificate not from the cluster CA)");
                    Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("TLS handshake with {remote} failed: {e}"),
                    ))
                }
            }
        })
    }
}

/// The verified end-entity certificate of a peer.
struct CertIdentity(CertificateDer<'static>);

impl CertIdentity {
    fn of(chain: Option<&[CertificateDer<'static>]>) -> Option<Box<dyn PeerIdentity>> {
        let leaf = chain?.first()?.clone();
        Some(Box::new(CertIdentity(leaf)))
    }
}

impl PeerIdentity for CertIdentity {
    fn has_name(&self, node: &str) -> bool {
        let Ok(name) = ServerName::try_from(node.to_owned()) else {
            return false;
        };
        ParsedCertificate::try_from(&self.0)
            .and_then(|cert| rustls::client::verify_server_name(&cert, &name))
            .is_ok()
    }
}

/// Accepts a server certificate that chains to the cluster CA, whatever its names
/// (the transport's handshake then checks the name against the node dialled).
#[derive(Debug)]
struct ClusterCaVerifier {
    roots: Arc<RootCertStore>,
}

impl ServerCertVerifier for ClusterCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes()
    }
}

pub(super) fn tls12_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

pub(super) fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

pub(super) fn verify_schemes() -> Vec<SignatureScheme> {
    provider()
        .signature_verification_algorithms
        .supported_schemes()
}
