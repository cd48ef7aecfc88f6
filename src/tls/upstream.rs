//! TLS towards a pool's upstreams: trust from a CA bundle or the system's store, the
//! SNI name (the upstream's host unless the pool names one), an optional client
//! certificate, or, only when asked by name, no verification at all.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use super::files::{load_roots, CertStore, LoadError};
use super::provider;
use crate::config::{PoolTls, UpstreamProtocol};

/// An upstream connection once its TLS handshake is done.
pub type UpstreamStream = tokio_rustls::client::TlsStream<TcpStream>;

/// ALPN names offered to upstreams, by the pool's protocol.
const ALPN_HTTP1: &[u8] = b"http/1.1";
const ALPN_H2: &[u8] = b"h2";

fn alpn(protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    match protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => vec![ALPN_HTTP1.to_vec()],
        UpstreamProtocol::H2 => vec![ALPN_H2.to_vec()],
        UpstreamProtocol::Auto => vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
    }
}

/// One pool's TLS client side. Two are equal when built from the same settings, so
/// rebuilding a snapshot keeps upstreams' pooled connections.
pub struct UpstreamTls {
    spec: PoolTls,
    protocol: UpstreamProtocol,
    /// A file that became unusable makes every connect fail naming it.
    connector: Result<tokio_rustls::TlsConnector, String>,
}

impl UpstreamTls {
    /// Builds the client side of `spec`. `tls::check` refuses unusable files at start;
    /// should one break later, connects fail with its error (a 502), never a panic.
    pub fn new(spec: &PoolTls, protocol: UpstreamProtocol) -> Arc<UpstreamTls> {
        let connector = build(spec)
            .map(|mut c| {
                c.alpn_protocols = alpn(protocol);
                tokio_rustls::TlsConnector::from(Arc::new(c))
            })
            .map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                lines.join("; ")
            });
        if let Err(e) = &connector {
            tracing::error!(error = %e, "upstream TLS unusable; connects will fail");
        }
        Arc::new(UpstreamTls {
            spec: spec.clone(),
            protocol,
            connector,
        })
    }

    /// Everything wrong with the files `spec` names.
    pub fn problems(spec: &PoolTls) -> Vec<LoadError> {
        build(spec).err().unwrap_or_default()
    }

    /// Runs the client handshake on `tcp` to the upstream `host` (or the pool's
    /// `server_name`). The caller bounds it in time.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<UpstreamStream, String> {
        let connector = self.connector.as_ref().map_err(|e| e.clone())?;
        let name = self.spec.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| format!("{name:?} cannot be a TLS server name: {e}"))?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {name} failed: {e}"))
    }

    /// Whether certificates go unverified (logged loudly at start).
    pub fn insecure(&self) -> bool {
        self.spec.insecure_skip_verify
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.protocol == other.protocol
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("spec", &self.spec)
            .field("usable", &self.connector.is_ok())
            .finish()
    }
}

fn build(spec: &PoolTls) -> Result<ClientConfig, Vec<LoadError>> {
    let mut errors = Vec::new();
    let roots = match &spec.ca_file {
        _ if spec.insecure_skip_verify => None,
        Some(path) => load_roots(path, "ca_file")
            .map(Arc::new)
            .map_err(|e| errors.push(e))
            .ok(),
        None => system_roots().map_err(|e| errors.push(e)).ok(),
    };
    let client = match &spec.client_cert {
        Some(pair) => CertStore::load(std::slice::from_ref(pair))
            .map(|s| {
                s.watch();
                Some(s)
            })
            .map_err(|mut e| {
                e.field = if e.field == "key" {
                    "client_key"
                } else {
                    "client_cert"
                };
                errors.push(e)
            })
            .ok(),
        None => Some(None),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            vec![LoadError {
                field: "ca_file",
                message: format!("TLS setup failed: {e}"),
            }]
        })?;
    let (Some(client), true) = (client, errors.is_empty()) else {
        return Err(errors);
    };
    let builder = match roots {
        Some(roots) => builder.with_root_certificates(roots),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify)),
    };
    let mut config = match client {
        Some(store) => builder.with_client_cert_resolver(store),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn(UpstreamProtocol::Http1);
    Ok(config)
}

/// The system's trust store, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, LoadError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(roots) = ROOTS.get() {
        return Ok(roots.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "skipping part of the system trust store");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(LoadError {
            field: "ca_file",
            message: "not set, and the system trust store holds no usable certificate".into(),
        });
    }
    Ok(ROOTS.get_or_init(|| Arc::new(roots)).clone())
}

/// `insecure_skip_verify: true`: any certificate is accepted (the handshake's
/// signatures are still checked against it, so the peer holds its key).
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        super::cluster::tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        super::cluster::tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        super::cluster::verify_schemes()
    }
}
