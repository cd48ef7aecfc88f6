//! The `tls` sections: their shape only. Whether the files can be read and hold what
//! they should is checked by `tls::check`, which does the I/O this layer must not.

use std::path::PathBuf;

use serde_yaml::Value;

use super::super::raw::{RawCertPair, RawClusterTls, RawListenerTls, RawPoolTls};
use super::{is_dns_name, join, shown, Checker};
use crate::config::{CertPair, ClusterTls, ListenerTls, PoolTls, DEFAULT_TLS_HANDSHAKE_TIMEOUT};

/// A listener with more certificates than this is a typo or a generated file gone
/// wrong: each handshake without a matching SNI name scans them all.
const MAX_CERTIFICATES: usize = 256;

impl Checker {
    pub(super) fn listener_tls(&mut self, path: &str, raw: RawListenerTls) -> Option<ListenerTls> {
        self.unknown(path, &raw.unknown);
        let handshake_timeout = self.millis(
            &join(path, "handshake_timeout_ms"),
            &raw.handshake_timeout_ms,
            DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        );
        let list_path = join(path, "certificates");
        let raw_certs = raw.certificates.unwrap_or_default();
        if raw_certs.is_empty() {
            self.error(
                &list_path,
                "must list at least one certificate (cert and key)",
            );
            return None;
        }
        if raw_certs.len() > MAX_CERTIFICATES {
            self.error(
                &list_path,
                format!(
                    "must list at most {MAX_CERTIFICATES} certificates, got {}",
                    raw_certs.len()
                ),
            );
        }
        let mut certificates = Vec::with_capacity(raw_certs.len());
        let mut ok = true;
        for (i, pair) in raw_certs.into_iter().enumerate() {
            match self.cert_pair(&format!("{list_path}[{i}]"), pair) {
                Some(p) => certificates.push(p),
                None => ok = false,
            }
        }
        ok.then_some(ListenerTls {
            certificates,
            handshake_timeout,
        })
    }

    pub(super) fn cert_pair(&mut self, path: &str, raw: RawCertPair) -> Option<CertPair> {
        self.unknown(path, &raw.unknown);
        let cert = self.file(&join(path, "cert"), &raw.cert);
        let key = self.file(&join(path, "key"), &raw.key);
        Some(CertPair {
            cert: cert?,
            key: key?,
        })
    }

    pub(super) fn pool_tls(&mut self, path: &str, raw: RawPoolTls) -> Option<PoolTls> {
        self.unknown(path, &raw.unknown);
        let ca_file = self.opt_file(&join(path, "ca_file"), &raw.ca_file);
        let server_name = self.server_name(&join(path, "server_name"), &raw.server_name);
        let insecure_path = join(path, "insecure_skip_verify");
        let insecure_skip_verify = match &raw.insecure_skip_verify {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(
                    &insecure_path,
                    format!("must be true or false, got {}", shown(other)),
                );
                false
            }
        };
        if insecure_skip_verify && ca_file.as_ref().is_some_and(|f| f.is_some()) {
            self.error(
                &insecure_path,
                "contradicts ca_file: a CA bundle is pointless when certificates are not verified",
            );
        }
        let client_cert = self.client_pair(path, &raw);
        Some(PoolTls {
            ca_file: ca_file?,
            server_name: server_name?,
            client_cert: client_cert?,
            insecure_skip_verify,
        })
    }

    /// `client_cert` and `client_key` come together or not at all.
    fn client_pair(&mut self, path: &str, raw: &RawPoolTls) -> Option<Option<CertPair>> {
        let cert_path = join(path, "client_cert");
        let key_path = join(path, "client_key");
        let cert = self.opt_file(&cert_path, &raw.client_cert)?;
        let key = self.opt_file(&key_path, &raw.client_key)?;
        match (cert, key) {
            (Some(cert), Some(key)) => Some(Some(CertPair { cert, key })),
            (None, None) => Some(None),
            (Some(_), None) => {
                self.error(key_path, "is required when client_cert is set");
                None
            }
            (None, Some(_)) => {
                self.error(cert_path, "is required when client_key is set");
                None
            }
        }
    }

    fn server_name(&mut self, path: &str, raw: &Option<Value>) -> Option<Option<String>> {
        let Some(v) = raw else {
            return Some(None);
        };
        let name = self.string(path, v)?;
        if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(&name) {
            self.error(
                path,
                format!("must be a DNS name or an IP address, got {name:?}"),
            );
            return None;
        }
        Some(Some(name))
    }

    pub(super) fn cluster_tls(&mut self, raw: RawClusterTls) -> Option<ClusterTls> {
        const PATH: &str = "cluster.tls";
        self.unknown(PATH, &raw.unknown);
        let ca_file = self.file(&join(PATH, "ca_file"), &raw.ca_file);
        let cert = self.file(&join(PATH, "cert"), &raw.cert);
        let key = self.file(&join(PATH, "key"), &raw.key);
        Some(ClusterTls {
            ca_file: ca_file?,
            identity: CertPair {
                cert: cert?,
                key: key?,
            },
        })
    }

    fn file(&mut self, path: &str, v: &Option<Value>) -> Option<PathBuf> {
        self.required(path, v)
            .and_then(|v| self.string(path, v))
            .map(PathBuf::from)
    }

    /// `Some(None)` when absent, `None` when present but not a usable path.
    fn opt_file(&mut self, path: &str, v: &Option<Value>) -> Option<Option<PathBuf>> {
        match v {
            None => Some(None),
            Some(v) => self.string(path, v).map(|s| Some(PathBuf::from(s))),
        }
    }
}
