//! TLS everywhere, and the only module that names rustls types.
//!
//! - [`ServerTls`]: terminating TLS on a client listener or the admin API, the
//!   certificate picked by SNI, ALPN offering `h2` and `http/1.1`, certificates
//!   reloaded when their files change ([`CertStore`]).
//! - [`UpstreamTls`]: TLS towards a pool's upstreams (CA bundle or the system roots,
//!   SNI name, optional client certificate, or verification explicitly off).
//! - [`cluster`]: mutual TLS for the Raft transport, plugged into its
//!   `Dialer`/`Acceptor` seam.
//! - [`check`]: reads every file a config names and reports what is wrong with each,
//!   in the config's own error form, before anything starts.
//!
//! The crypto provider is *ring* (pure Rust and C, no cmake), chosen once here.

pub mod cluster;
mod files;
mod server;
mod upstream;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;

use crate::config::{Config, FieldError};

pub use files::{CertStore, LoadError};
pub use server::{ServerStream, ServerTls};
pub use upstream::{UpstreamStream, UpstreamTls};

/// How often certificate and key files are re-read to notice a replacement. Reading
/// a few small files once a second costs nothing; a renewal shows within a second.
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// ALPN protocols a listener offers, in the server's order of preference.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The one crypto provider every config here is built with.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads and parses every certificate, key and CA file `config` names; each problem
/// comes back as a field error at the field naming the file
/// (`listeners[0].tls.certificates[1].key: cannot read /x: ...`).
pub fn check(config: &Config) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut report = |base: String, e: LoadError| {
        errors.push(FieldError {
            path: format!("{base}.{}", e.field),
            message: e.message,
        })
    };
    for (i, l) in config.listeners.iter().enumerate() {
        for (j, pair) in l.tls.iter().flat_map(|t| t.certificates.iter()).enumerate() {
            if let Err(e) = files::load_pair(pair, "cert", "key") {
                report(format!("listeners[{i}].tls.certificates[{j}]"), e);
            }
        }
    }
    if let Some(pair) = config.admin.as_ref().and_then(|a| a.tls.as_ref()) {
        if let Err(e) = files::load_pair(pair, "cert", "key") {
            report("admin.tls".into(), e);
        }
    }
    for (i, p) in config.pools.iter().enumerate() {
        if let Some(tls) = &p.tls {
            for e in UpstreamTls::problems(tls) {
                report(format!("pools[{i}].tls"), e);
            }
        }
    }
    if let Some(tls) = config.cluster.as_ref().and_then(|c| c.tls.as_ref()) {
        for e in cluster::problems(tls) {
            report("cluster.tls".into(), e);
        }
    }
    if let Some(path) = config.cluster.as_ref().and_then(|c| c.secret_file.as_ref()) {
        if let Err(e) = crate::cluster::transport::Secret::load(path) {
            errors.push(FieldError {
                path: "cluster.secret_file".into(),
                message: e.to_string(),
            });
        }
    }
    errors
}
