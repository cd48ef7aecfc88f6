//! How a peer proves who it is, in each of the transport's modes.
//!
//! - [`PeerAuth::Certificates`] (`cluster.tls`): the TLS seam verified the peer's
//!   certificate chain; the handshake then requires the node name a peer announces to
//!   be a DNS name in its certificate's subject alternative names, so a certificate
//!   issued to `n2` cannot speak as `n3`. Both directions are checked.
//! - [`PeerAuth::Secret`] (`cluster.secret_file`): a shared secret, never sent. Each
//!   side sends a fresh random nonce; each proves knowledge of the secret with an
//!   HMAC-SHA256 over the whole handshake transcript (both nonces, both names and
//!   ids, the cluster); a session key is derived from the same transcript, and every
//!   frame carries an HMAC under it over a per-connection sequence number, so a frame
//!   replayed, reordered or spliced from another connection is refused.
//! - [`PeerAuth::Insecure`]: nothing is checked beyond the cluster name and ids
//!   (`cluster.insecure_plaintext`, or a group of one).

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of each side's handshake nonce: 256 random bits, never repeated in practice.
pub const NONCE_LEN: usize = 32;
/// Bytes of an HMAC-SHA256 tag (proofs and frame tags are not truncated).
pub const MAC_LEN: usize = 32;
/// Shortest accepted cluster secret: 256 bits, the strength of the MAC itself.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest accepted secret file: a secret is a key, not a document; anything larger
/// is the wrong file.
pub const MAX_SECRET_BYTES: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// How this transport authenticates its peers.
#[derive(Clone, Default)]
pub enum PeerAuth {
    /// Names and ids are taken on trust (see the module docs).
    #[default]
    Insecure,
    /// A shared secret; see the module docs.
    Secret(Secret),
    /// Mutual TLS through the seam; names must match certificates.
    Certificates,
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerAuth::Insecure => "Insecure",
            PeerAuth::Secret(_) => "Secret",
            PeerAuth::Certificates => "Certificates",
        })
    }
}

/// The cluster secret. Its bytes never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret file was refused; `Display` names the file and the rule.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: holds {len} bytes; a cluster secret needs {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES}")]
    Length { path: String, len: usize },
    #[error("{path}: readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
}

impl Secret {
    /// A secret from bytes (surrounding whitespace kept: the file's bytes are the key).
    pub fn new(bytes: Vec<u8>) -> Result<Secret, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length {
                path: "<memory>".into(),
                len: bytes.len(),
            });
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret file: it must hold [`MIN_SECRET_BYTES`] to [`MAX_SECRET_BYTES`]
    /// bytes (one trailing newline is not part of the key) and, on Unix, be readable
    /// by its owner only.
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        check_mode(&shown, &meta)?;
        if meta.len() > MAX_SECRET_BYTES as u64 + 1 {
            return Err(SecretError::Length {
                path: shown,
                len: meta.len() as usize,
            });
        }
        let mut bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        Secret::new(bytes).map_err(|e| match e {
            SecretError::Length { len, .. } => SecretError::Length { path: shown, len },
            other => other,
        })
    }

    fn mac(&self, label: &[u8], transcript: &[u8]) -> [u8; MAC_LEN] {
        keyed(&self.0, &[label, transcript])
    }

    /// The acceptor's proof over the handshake transcript.
    pub fn acceptor_proof(&self, transcript: &[u8]) -> [u8; MAC_LEN] {
        self.mac(b"ringway transport acceptor proof", transcript)
    }

    /// The dialer's proof over the handshake transcript.
    pub fn dialer_proof(&self, transcript: &[u8]) -> [u8; MAC_LEN] {
        self.mac(b"ringway transport dialer proof", transcript)
    }

    /// The key that tags this connection's frames.
    pub fn session(&self, transcript: &[u8]) -> Session {
        Session {
            key: self.mac(b"ringway transport session key", transcript),
            seq: 0,
        }
    }
}

#[cfg(unix)]
fn check_mode(path: &str, meta: &std::fs::Metadata) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Permissions {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &str, _meta: &std::fs::Metadata) -> Result<(), SecretError> {
    Ok(())
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
/// Fills `buf` from the operating system's secure random source (handshake nonces).
pub(crate) fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::getrandom(buf).map_err(|e| {
        std::io::Error::other(format!("the system's secure random source failed: {e}"))
    })
}

fn keyed(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Compares tags in constant time.
pub(crate) fn tags_equal(a: &[u8; MAC_LEN], b: &[u8]) -> bool {
    if b.len() != MAC_LEN {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One direction of an authenticated connection: the session key and the sequence
/// number of the next frame. Sender and receiver each keep their own copy.
pub struct Session {
    key: [u8; MAC_LEN],
    seq: u64,
}

impl Session {
    /// The tag of the next frame (`header` is its length and kind, `body` the rest),
    /// advancing the sequence number.
    pub fn seal(&mut self, header: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
        let tag = keyed(&self.key, &[&self.seq.to_be_bytes(), header, body]);
        self.seq += 1;
        tag
    }

    /// Checks the next frame's tag; the sequence number advances only on success.
    pub fn open(&mut self, header: &[u8], body: &[u8], tag: &[u8]) -> bool {
        let want = keyed(&self.key, &[&self.seq.to_be_bytes(), header, body]);
        let ok = tags_equal(&want, tag);
        if ok {
            self.seq += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> Secret {
        Secret::new(vec![b; MIN_SECRET_BYTES]).unwrap()
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Secret::new(vec![1; MIN_SECRET_BYTES - 1]).is_err());
        assert!(Secret::new(vec![1; MAX_SECRET_BYTES + 1]).is_err());
    }

    #[test]
    fn proofs_depend_on_secret_side_and_transcript() {
        let (a, b) = (secret(1), secret(2));
        assert_ne!(a.acceptor_proof(b"t"), b.acceptor_proof(b"t"));
        assert_ne!(a.acceptor_proof(b"t"), a.dialer_proof(b"t"));
        assert_ne!(a.dialer_proof(b"t"), a.dialer_proof(b"u"));
    }

    #[test]
    fn frames_are_bound_to_session_and_order() {
        let s = secret(1);
        let (mut tx, mut rx) = (s.session(b"one"), s.session(b"one"));
        let t0 = tx.seal(b"h", b"first");
        let t1 = tx.seal(b"h", b"second");
        // Out of order, or from another session: refused.
        assert!(!rx.open(b"h", b"second", &t1));
        assert!(!s.session(b"two").open(b"h", b"first", &t0));
        assert!(rx.open(b"h", b"first", &t0));
        // Replayed: refused.
        assert!(!rx.open(b"h", b"first", &t0));
        assert!(rx.open(b"h", b"second", &t1));
        let t2 = tx.seal(b"h", b"third");
        assert!(!rx.open(b"h", b"thirD", &t2));
    }
}
