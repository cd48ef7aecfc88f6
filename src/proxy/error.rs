//! Why a request could not be proxied, who is at fault, and the answer the client gets.
//!
//! [`ProxyError::status`] is the one place an error becomes a status code; its body is
//! a short line of text naming what happened.

use std::fmt;

use http::StatusCode;

/// How connecting to one upstream failed. Nothing was sent, so another upstream may
/// be tried.
#[derive(Debug)]
pub enum ConnectError {
    Refused,
    TimedOut,
    Other(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused => f.write_str("connection refused"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
            ConnectError::Other(why) => f.write_str(why),
        }
    }
}

/// A request that ringway answered itself.
#[derive(Debug)]
pub enum ProxyError {
    /// No pool serves this host and path (client's request, 404).
    NoPool { host: Option<String>, path: String },
    /// The pool's hash key is absent and its policy is `reject` (client, 400).
    MissingKey { pool: String, key: String },
    /// The pool has no upstream on its ring (operator, 503).
    EmptyPool { pool: String },
    /// Every upstream tried refused or failed to connect (upstreams, 502).
    Unreachable {
        pool: String,
        attempts: usize,
        last: String,
    },
    /// Every upstream tried timed out while connecting (upstreams, 504).
    ConnectTimedOut { pool: String, attempts: usize },
    /// The upstream took too long to send its response head (upstream, 504).
    ResponseTimedOut { upstream: String },
    /// The upstream failed after the request was sent; not retried (upstream, 502).
    UpstreamFailed { upstream: String, reason: String },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoPool { .. } => StatusCode::NOT_FOUND,
            ProxyError::MissingKey { .. } => StatusCode::BAD_REQUEST,
            ProxyError::EmptyPool { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimedOut { .. } | ProxyError::ResponseTimedOut { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NoPool { host, path } => write!(
                f,
                "no pool serves host {} and path {path}",
                host.as_deref().unwrap_or("(none)")
            ),
            ProxyError::MissingKey { pool, key } => {
                write!(f, "pool {pool} hashes on {key}, which this request lacks")
            }
            ProxyError::EmptyPool { pool } => write!(f, "pool {pool} has no upstreams"),
            ProxyError::Unreachable {
                pool,
                attempts,
                last,
            } => write!(
                f,
                "no upstream of pool {pool} could be reached ({attempts} tried; last: {last})"
            ),
            ProxyError::ConnectTimedOut { pool, attempts } => write!(
                f,
                "connecting to pool {pool} timed out ({attempts} upstreams tried)"
            ),
            ProxyError::ResponseTimedOut { upstream } => {
                write!(f, "upstream {upstream} did not answer in time")
            }
            ProxyError::UpstreamFailed { upstream, reason } => {
                write!(f, "upstream {upstream} failed: {reason}")
            }
        }
    }
}
