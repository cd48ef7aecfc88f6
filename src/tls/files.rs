//! Certificate, key and CA files: reading and parsing PEM with errors that name the
//! file, and [`CertStore`], a set of certificates swapped whole when their files
//! change.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use md5::{Digest, Md5};
use rustls::client::verify_server_name;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};

use super::{provider, CERT_POLL_INTERVAL};
use crate::config::CertPair;

/// A file that could not be used, and the config field that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The field within its section: `cert`, `key`, `ca_file`, `client_cert`, ...
    pub field: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

fn fail(field: &'static str, message: String) -> LoadError {
    LoadError { field, message }
}

fn read(path: &Path, field: &'static str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| fail(field, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
fn parse_certs(
    path: &Path,
    bytes: &[u8],
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(bytes) {
        let cert =
            item.map_err(|e| fail(field, format!("{}: not valid PEM: {e}", path.display())))?;
        out.push(cert);
    }
    if out.is_empty() {
        return Err(fail(
            field,
            format!(
                "{}: holds no PEM certificate (BEGIN CERTIFICATE)",
                path.display()
            ),
        ));
    }
    Ok(out)
}

fn parse_key(
    path: &Path,
    bytes: &[u8],
    field: &'static str,
) -> Result<PrivateKeyDer<'static>, LoadError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => "holds no PEM private key (BEGIN PRIVATE KEY)".to_owned(),
            other => format!("not a valid PEM private key: {other}"),
        };
        fail(field, format!("{}: {why}", path.display()))
    })
}

/// Parses a certificate chain and its key, checking that the key is usable and
/// belongs to the chain's leaf.
fn certified_key(
    pair: &CertPair,
    cert_pem: &[u8],
    key_pem: &[u8],
    fields: (&'static str, &'static str),
) -> Result<CertifiedKey, LoadError> {
    let (cert_field, key_field) = fields;
    let chain = parse_certs(&pair.cert, cert_pem, cert_field)?;
    ParsedCertificate::try_from(&chain[0]).map_err(|e| {
        fail(
            cert_field,
            format!(
                "{}: not a usable X.509 certificate: {e}",
                pair.cert.display()
            ),
        )
    })?;
    let key = parse_key(&pair.key, key_pem, key_field)?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| {
        fail(
            key_field,
            format!("{}: unusable private key: {e}", pair.key.display()),
        )
    })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(_) => Err(fail(
            key_field,
            format!(
                "{} is not the private key of the certificate in {}",
                pair.key.display(),
                pair.cert.display()
            ),
        )),
    }
}

/// Reads and parses a certificate and key; `fields` name them in errors.
pub(super) fn load_pair(
    pair: &CertPair,
    cert_field: &'static str,
    key_field: &'static str,
) -> Result<Arc<CertifiedKey>, LoadError> {
    let cert = read(&pair.cert, cert_field)?;
    let key = read(&pair.key, key_field)?;
    certified_key(pair, &cert, &key, (cert_field, key_field)).map(Arc::new)
}

/// A trust store of every certificate in a PEM bundle.
pub(super) fn load_roots(path: &Path, field: &'static str) -> Result<RootCertStore, LoadError> {
    let bytes = read(path, field)?;
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(path, &bytes, field)? {
        roots.add(cert).map_err(|e| {
            fail(
                field,
                format!("{}: not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

type Fingerprint = [u8; 16];

/// What a certificate's files held when last read: their reload is only attempted
/// when this changes, so a broken replacement is reported once, not every poll.
fn fingerprint(cert: &[u8], key: &[u8]) -> Fingerprint {
    let mut h = Md5::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// The certificates one endpoint presents, in configured order (the first is the
/// default), swapped whole when a file changes. Handshakes read the current set
/// without waiting; a connection keeps the certificate it was opened with.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<Vec<Arc<CertifiedKey>>>,
    pairs: Vec<CertPair>,
    /// What the files held when loaded: the watcher's starting point.
    loaded: Vec<Option<Fingerprint>>,
}

impl CertStore {
    /// Loads every pair; fails on the first unusable file. Call [`CertStore::watch`]
    /// to follow file changes.
    pub fn load(pairs: &[CertPair]) -> Result<Arc<CertStore>, LoadError> {
        if pairs.is_empty() {
            return Err(fail("certificates", "no certificate configured".into()));
        }
        let mut keys = Vec::with_capacity(pairs.len());
        let mut loaded = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let cert = read(&pair.cert, "cert")?;
            let key = read(&pair.key, "key")?;
            keys.push(Arc::new(certified_key(pair, &cert, &key, ("cert", "key"))?));
            loaded.push(Some(fingerprint(&cert, &key)));
        }
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(keys),
            pairs: pairs.to_vec(),
            loaded,
        }))
    }

    /// The certificate for an SNI name: the first whose names cover it (wildcards as
    /// X.509 has them), else the first configured.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current.load();
        if let Some(name) = sni.and_then(|n| ServerName::try_from(n).ok()) {
            let covers = |ck: &&Arc<CertifiedKey>| {
                ck.end_entity_cert()
                    .ok()
                    .and_then(|der| ParsedCertificate::try_from(der).ok())
                    .is_some_and(|parsed| verify_server_name(&parsed, &name).is_ok())
            };
            if let Some(ck) = certs.iter().find(covers) {
                return Some(ck.clone());
            }
        }
        certs.first().cloned()
    }

    /// Polls the files every [`CERT_POLL_INTERVAL`] on the current tokio runtime until
    /// the store is dropped. A changed pair that loads replaces its certificate; one
    /// that does not is logged with its file, and the previous certificate stays.
    pub fn watch(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to watch certificate files on; they will not be reloaded");
            return;
        };
        runtime.spawn(poll_files(Arc::downgrade(self), self.loaded.clone()));
    }

    /// Re-reads every pair once; returns whether any certificate was replaced.
    fn reload(&self, seen: &mut [Option<Fingerprint>]) -> bool {
        let mut next: Option<Vec<Arc<CertifiedKey>>> = None;
        for (i, pair) in self.pairs.iter().enumerate() {
            let (cert, key) = match (std::fs::read(&pair.cert), std::fs::read(&pair.key)) {
                (Ok(c), Ok(k)) => (c, k),
                (Err(e), _) | (_, Err(e)) => {
                    if seen[i].take().is_some() {
                        tracing::error!(cert = %pair.cert.display(), key = %pair.key.display(), error = %e, "cannot read certificate files; keeping the loaded certificate");
                    }
                    continue;
                }
            };
            let print = fingerprint(&cert, &key);
            if seen[i] == Some(print) {
                continue;
            }
            seen[i] = Some(print);
            match certified_key(pair, &cert, &key, ("cert", "key")) {
                Ok(ck) => {
                    let slot = next.get_or_insert_with(|| self.current.load().to_vec());
                    slot[i] = Arc::new(ck);
                    tracing::info!(cert = %pair.cert.display(), "certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "new certificate not loaded; keeping the previous one")
                }
            }
        }
        let changed = next.is_some();
        if let Some(next) = next {
            self.current.store(Arc::new(next));
        }
        changed
    }
}

async fn poll_files(store: Weak<CertStore>, mut seen: Vec<Option<Fingerprint>>) {
    loop {
        tokio::time::sleep(CERT_POLL_INTERVAL).await;
        let Some(store) = store.upgrade() else { return };
        let done = tokio::task::spawn_blocking(move || {
            store.reload(&mut seen);
            seen
        })
        .await;
        match done {
            Ok(s) => seen = s,
            Err(_) => return,
        }
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.pick(None)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
