//! Configuration: the raw YAML shape ([`raw`]), the typed and validated [`Config`]
//! ([`build`]), and loading a file with every error reported at once.
//!
//! Building a config does no I/O beyond reading the file: addresses are parsed, not
//! resolved, and nothing is bound.

pub mod access_log;
pub mod bounds;
mod build;
pub mod cache;
pub mod discover;
pub mod health;
pub mod http2;
pub mod paths;
mod raw;
pub mod retry;
pub mod slow_start;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::balance::{HashKey, HostPattern, MissingKey};
pub use cache::CacheSettings;
pub use http2::{Http2Settings, UpstreamProtocol};
pub use retry::{AtLimit, RetryOn, RetryPolicy, UpstreamLimits};
pub use slow_start::SlowStart;

pub use bounds::{valid_node_id, MAX_NODE_ID_BYTES};
pub use build::{parse_upstream_addr, FieldError};

/// Virtual nodes per unit of weight when a pool does not say.
pub const DEFAULT_VNODES: u32 = 150;
/// Distinct upstreams tried for one request when a pool does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Hard upper bound on `max_attempts`: also the size of the ring walk's inline memory.
pub const MAX_ATTEMPTS_LIMIT: u32 = 16;
/// TCP connect timeout to an upstream: long enough for a loaded LAN peer, short
/// enough that a black-holed upstream costs one request two seconds, not a minute.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time from a request being written upstream to its response head arriving.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// A body (either direction) that moves no byte for this long is aborted; also how
/// long an idle pooled upstream connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle keep-alive connections kept per upstream.
pub const DEFAULT_MAX_IDLE_PER_UPSTREAM: usize = 64;
/// Client connections served at once per instance; further accepts wait.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest request head accepted from a client (HTTP/1 read buffer, HTTP/2 header list).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time a client gets from its connection being accepted (TLS handshake and protocol
/// detection included) to its first complete request head, and for each later HTTP/1
/// head: a real client sends one in milliseconds; a silent socket is let go well
/// before it can matter.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A client connection (HTTP/1 or HTTP/2) with no request in flight for this long is
/// closed: browsers keep idle connections for about a minute at most, and every held
/// connection is a slot of `max_connections`.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a client gets to send a whole request body, however steadily it trickles:
/// ten minutes carries a gigabyte over a slow (15 Mbit/s) link, and bounds how long a
/// slow-drip upload holds a connection and an upstream slot.
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(600);
/// Time in-flight requests get to finish after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A whole, validated ringway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: Node,
    pub listeners: Vec<Listener>,
    pub admin: Option<Admin>,
    pub cluster: Option<Cluster>,
    pub limits: Limits,
    pub pools: Vec<Pool>,
    /// What each request writes to the access log (`access_log`).
    pub access_log: access_log::AccessLog,
}

/// This instance's identity and where it keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub data_dir: PathBuf,
}

/// A client-facing socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    /// Terminate TLS on this socket; absent: plain HTTP/1.1 and h2c.
    pub tls: Option<ListenerTls>,
    /// Which headers ringway adds to the requests it takes on this listener.
    pub headers: HeaderWork,
}

/// The header work ringway does for the requests of one listener (`listeners[].headers`);
/// all on by default. Off means ringway adds nothing of that kind: what the client sent
/// passes through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderWork {
    /// `X-Forwarded-For`, `-Proto` and `-Host` (`forwarded`).
    pub forwarded: bool,
    /// `Via` on requests and responses (`via`).
    pub via: bool,
    /// An `X-Request-Id` made when the client sent none usable, sent upstream and
    /// returned (`request_id`).
    pub request_id: bool,
    /// A W3C `traceparent` started when the client sent none valid (`traceparent`).
    pub traceparent: bool,
}

impl Default for HeaderWork {
    fn default() -> HeaderWork {
        HeaderWork {
            forwarded: true,
            via: true,
            request_id: true,
            traceparent: true,
        }
    }
}

/// Time a client gets to complete its TLS handshake when the file does not say.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Picked by the SNI name the client asks for, matched against each certificate's
    /// names; the first is the default (no SNI, or a name none of them covers).
    pub certificates: Vec<CertPair>,
    pub handshake_timeout: Duration,
}

/// A PEM certificate chain (leaf first) and the PEM private key that goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS towards a pool's upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolTls {
    /// PEM bundle of the CAs trusted for upstream certificates; absent: the system's
    /// trust store.
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and verified against the certificate; absent: the upstream's
    /// host.
    pub server_name: Option<String>,
    /// Certificate presented to upstreams that ask for one.
    pub client_cert: Option<CertPair>,
    /// Accept any upstream certificate. Only for tests and emergencies.
    pub insecure_skip_verify: bool,
}

/// Mutual TLS between the instances of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    /// The cluster CA: peers must present a certificate that chains to it.
    pub ca_file: PathBuf,
    /// This instance's certificate (signed by the cluster CA) and key.
    pub identity: CertPair,
}

/// The admin API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
    /// File holding the bearer token that admin mutations require; without it they
    /// are refused.
    pub token_file: Option<PathBuf>,
    /// Serve the admin API over TLS with this certificate.
    pub tls: Option<CertPair>,
}

/// Raft heartbeat interval when the file does not say.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
/// Raft election timeout (the base of the randomized one) when the file does not say.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// An election timeout must span at least this many heartbeats, or a follower would
/// start elections while a healthy leader's heartbeat is merely late.
pub const MIN_ELECTION_HEARTBEATS: u32 = 3;

/// The Raft group this instance belongs to. Absent from the file: a group of one, on
/// the same code path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Where this node listens for its peers.
    pub address: SocketAddr,
    /// Every voter, this node included: node id to peer address.
    pub peers: std::collections::BTreeMap<String, SocketAddr>,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    /// This instance starts with an empty log and no configuration of its own and waits
    /// to be added by the cluster (`ringway cluster add-node`). Ignored once its data
    /// dir holds state.
    pub join: bool,
    /// Applied entries kept in the log after the last snapshot before the state is
    /// folded into a new snapshot and the log compacted.
    pub compact_threshold: u64,
    /// Mutual TLS between instances; absent: plain TCP.
    pub tls: Option<ClusterTls>,
    /// Without `tls`: a file holding the shared cluster secret that authenticates
    /// every peer connection (at least 32 bytes, readable by its owner only).
    pub secret_file: Option<PathBuf>,
    /// Allows a cluster of more than one member with neither `tls` nor `secret_file`
    /// (peers unauthenticated); warned about at every start.
    pub insecure_plaintext: bool,
}

/// Default `cluster.compact_threshold`.
pub const DEFAULT_COMPACT_THRESHOLD: u64 = 1000;
/// Bounds of `cluster.compact_threshold`: below the lower, snapshots would be taken
/// nearly every change; above the upper, restarts replay too long a log.
pub const MIN_COMPACT_THRESHOLD: u64 = 10;
pub const MAX_COMPACT_THRESHOLD: u64 = 1_000_000;

/// Per-instance bounds on what clients may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub request_body_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Upstream-facing timeouts of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub response_header: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response_header: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A named set of upstreams and how requests are spread over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
    pub hash_key: HashKey,
    pub on_missing_key: MissingKey,
    pub vnodes: u32,
    pub max_attempts: u32,
    pub timeouts: Timeouts,
    pub max_idle_per_upstream: usize,
    pub upstreams: Vec<Upstream>,
    /// TLS towards the upstreams; absent: plain HTTP.
    pub tls: Option<PoolTls>,
    /// The HTTP version spoken to the upstreams (`protocol`).
    pub protocol: UpstreamProtocol,
    /// Bounds of HTTP/2 connections to the upstreams (`http2`).
    pub http2: Http2Settings,
    /// Which failed attempts are tried again on the next upstream (`retry`).
    pub retry: RetryPolicy,
    /// Caps per upstream on this instance (`upstream_limits`).
    pub upstream_limits: UpstreamLimits,
    /// Detection, active checks and breaker policy (`health`).
    pub health: health::Health,
    /// Bounded load: an upstream with more than this percentage of the pool's mean
    /// in-flight requests passes a key on to the next upstream on the ring. `None`
    /// (the default) turns it off.
    pub hash_balance_factor: Option<u32>,
    /// How a joining or readmitted upstream ramps up to its share of the ring
    /// (`slow_start_ms`, `slow_start_steps`).
    pub slow_start: SlowStart,
    /// The pool's response cache (`cache`); `None` (the default) turns it off.
    pub cache: Option<cache::CacheSettings>,
    /// Upstreams found in DNS by the cluster's leader instead of `upstreams` (which is
    /// then empty).
    pub discover: Option<discover::Discover>,
}

/// One backend server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Ring identity; defaults to the address as written.
    pub id: String,
    pub address: UpstreamAddr,
    pub weight: u32,
}

/// An upstream's `host:port`. The host is an IP literal or a DNS name resolved at
/// connect time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamAddr {
    pub host: String,
    pub port: u16,
    /// Set when `host` is an IP literal, so connecting needs no lookup.
    pub ip: Option<IpAddr>,
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid config file: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {} error{}:\n{}", path.display(), errors.len(), if errors.len() == 1 { "" } else { "s" }, list(errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    lines.join("\n")
}

impl Config {
    /// The slow start of pool `pool`, `None` when the file has no such pool (the
    /// settings a command that adds upstreams is wrapped with).
    pub fn slow_start(&self, pool: &str) -> Option<SlowStart> {
        Some(self.pools.iter().find(|p| p.name == pool)?.slow_start)
    }

    /// Reads and validates a config file (at most [`bounds::MAX_CONFIG_BYTES`]); its
    /// relative paths name files beside it (see [`Config::from_file_text`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = read_bounded(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        Config::from_file_text(path, text)
    }

    /// Parses and validates the text of the file at `path`, then resolves its
    /// relative paths (data dir, token, TLS and secret files) against the directory
    /// of that file rather than the working directory ([`paths`]).
    pub fn from_file_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text).map_err(|e| e.at(path))?;
        config.resolve_paths(&paths::base_dir(path));
        Ok(config)
    }

    /// Parses and validates config text; paths stay as written (relative ones are
    /// relative to the working directory). Text over [`bounds::MAX_CONFIG_BYTES`] or
    /// nested deeper than [`bounds::MAX_YAML_DEPTH`] is refused before it is parsed.
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        if text.len() as u64 > bounds::MAX_CONFIG_BYTES {
            return Err(ParseError::Syntax(too_large()));
        }
        bounds::check_yaml_depth(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        let raw: raw::RawConfig = if text.trim().is_empty() {
            raw::RawConfig::default()
        } else {
            serde_yaml::from_str(text)
                .map_err(|e| ParseError::Syntax(plain_words(&e.to_string())))?
        };
        build::build(raw).map_err(ParseError::Invalid)
    }
}

/// Reads at most [`bounds::MAX_CONFIG_BYTES`] of a file (one byte more tells that it
/// is larger).
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(bounds::MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > bounds::MAX_CONFIG_BYTES {
        return Err(ConfigError::Syntax {
            path: path.to_owned(),
            message: too_large(),
        });
    }
    Ok(bytes)
}

fn too_large() -> String {
    let max = bounds::MAX_CONFIG_BYTES;
    format!("larger than {max} bytes, the largest config file read")
}

/// serde names the expected shape by ringway's internal type (`struct RawNode`);
/// users need to hear that a section must be a mapping.
fn plain_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("struct Raw") {
        out.push_str(&rest[..at]);
        out.push_str("a mapping");
        let tail = &rest[at + "struct Raw".len()..];
        rest = tail.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    out
}

/// A [`ConfigError`] before it knows which file it came from.
#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<FieldError>),
}

impl ParseError {
    /// Names the file the text came from.
    pub fn at(self, path: &Path) -> ConfigError {
        let path = path.to_owned();
        match self {
            ParseError::Syntax(message) => ConfigError::Syntax { path, message },
            ParseError::Invalid(errors) => ConfigError::Invalid { path, errors },
        }
    }

    /// The field errors, empty for a syntax error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ParseError::Syntax(_) => &[],
            ParseError::Invalid(errors) => errors,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Syntax(m) => write!(f, "not a valid config file: {m}"),
            ParseError::Invalid(errors) => f.write_str(&list(errors)),
        }
    }
}
