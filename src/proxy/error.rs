//! Why a request could not be proxied, who is at fault, whether it may be tried again,
//! and the answer the client gets.
//!
//! [`ProxyError::classify`] is the one place an error becomes a status code and a
//! metric label; [`ProxyError::fault`] says whose doing it was (only
//! [`Fault::Upstream`] errors ever count against an upstream's health), and
//! [`ProxyError::retry`] whether sending the request again could be safe. The body a
//! client gets is a short line of text naming what happened; a gRPC call gets the
//! same text as its `grpc-message`, with the code [`ProxyError::grpc_status`] picks.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use super::grpc::{Code, TimeoutError};

/// How connecting to one upstream failed. Nothing was sent, so another upstream may
/// be tried.
#[derive(Debug)]
pub enum ConnectError {
    Refused,
    TimedOut,
    Other(String),
    /// Every HTTP/2 connection to the upstream carried its most streams, and no slot
    /// freed up within the connect timeout (a local bound, not the upstream's fault).
    Busy(String),
    /// The upstream already had `upstream_limits.max_connections` connections open
    /// from this instance, none of them idle (a local bound).
    AtConnections(usize),
    /// An HTTP/2 upstream refused the stream before processing it (draining after a
    /// `GOAWAY`, or shedding load with `REFUSED_STREAM`): not a failure of its health.
    StreamRefused(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused => f.write_str("connection refused"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
            ConnectError::Other(why) => f.write_str(why),
            ConnectError::Busy(why) => write!(f, "busy: {why}"),
            ConnectError::AtConnections(max) => {
                write!(
                    f,
                    "at its limit of {max} connections (upstream_limits.max_connections)"
                )
            }
            ConnectError::StreamRefused(why) => {
                write!(f, "stream refused before processing: {why}")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// Whose doing a failed request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something ringway refuses, or failed to send its request.
    Client,
    /// An upstream refused, failed or was too slow: the only fault detection counts.
    Upstream,
    /// ringway's configuration has nowhere to send the request.
    Proxy,
}

impl Fault {
    /// The fault as a label value: `client`, `upstream` or `proxy`.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Proxy => "proxy",
        }
    }
}

/// Whether a failed request could be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached an upstream: any request may be sent again.
    Safe,
    /// The request may have reached the upstream and no response came back: only an
    /// idempotent request may be sent again.
    IfIdempotent,
    /// Sending it again cannot help (the client's fault, or nowhere to send it).
    Never,
}

/// What a client did wrong with its request body, as the body was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFault {
    /// The body broke its framing (a bad chunk, fewer bytes than `Content-Length`,
    /// the connection closed mid-body).
    Malformed(String),
    /// No byte of the body arrived within the idle timeout.
    Stalled(Duration),
    /// The whole body did not arrive within `limits.request_body_timeout_ms`.
    TooSlow(Duration),
}

impl fmt::Display for BodyFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyFault::Malformed(why) => write!(f, "malformed request body: {why}"),
            BodyFault::Stalled(idle) => {
                write!(f, "request body sent no data for {}ms", idle.as_millis())
            }
            BodyFault::TooSlow(total) => write!(
                f,
                "request body not complete within {}ms",
                total.as_millis()
            ),
        }
    }
}

impl std::error::Error for BodyFault {}

/// A request head ringway refuses before routing it (RFC 9110, RFC 9112).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadFault {
    /// More than one `Host` header: which one routes the request is ambiguous.
    DuplicateHost,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// `Transfer-Encoding` other than a lone `chunked`: ringway would decode the
    /// chunking and forward the other codings' bytes without saying so.
    UnsupportedCoding(String),
    /// A gRPC call's `grpc-timeout` is malformed.
    GrpcTimeout(TimeoutError),
}

impl fmt::Display for HeadFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadFault::DuplicateHost => f.write_str("more than one Host header"),
            HeadFault::MissingHost => f.write_str("HTTP/1.1 request without a Host header"),
            HeadFault::UnsupportedCoding(te) => write!(
                f,
                "Transfer-Encoding {te:?} is not supported (only a lone chunked)"
            ),
            HeadFault::GrpcTimeout(why) => write!(f, "{why}"),
        }
    }
}

/// A request that ringway answered itself.
#[derive(Debug)]
pub enum ProxyError {
    /// No pool serves this host and path.
    NoPool { host: Option<String>, path: String },
    /// The pool's hash key is absent and its policy is `reject`.
    MissingKey { pool: String, key: String },
    /// The pool has no upstream on its ring.
    EmptyPool { pool: String },
    /// Every upstream tried refused or failed to connect.
    Unreachable {
        pool: String,
        attempts: usize,
        last: String,
    },
    /// Every upstream tried timed out while connecting.
    ConnectTimedOut { pool: String, attempts: usize },
    /// The upstream took too long to read the request or send its response head.
    ResponseTimedOut { upstream: String },
    /// The upstream failed after the request was sent.
    UpstreamFailed { upstream: String, reason: String },
    /// The request head breaks the protocol.
    BadHead(HeadFault),
    /// The client's request body failed while it was being forwarded.
    ClientBody(BodyFault),
    /// A gRPC call's own deadline (`grpc-timeout`) passed before a response head.
    DeadlineExceeded { timeout: Duration },
    /// Every upstream tried was at one of the pool's `upstream_limits` (or the key's
    /// upstream stayed there for the whole queue timeout): `limit` names the cap
    /// (`max_inflight`, with a cluster-wide figure already shared out, or
    /// `max_connections`) and `max` its value on this instance.
    AtLimit {
        pool: String,
        limit: &'static str,
        max: usize,
    },
}

impl ProxyError {
    /// The status the client gets and the label metrics and logs use: the one place
    /// where either is decided.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoPool { .. } => (StatusCode::NOT_FOUND, "no_pool"),
            ProxyError::MissingKey { .. } => (StatusCode::BAD_REQUEST, "missing_key"),
            ProxyError::EmptyPool { .. } => (StatusCode::SERVICE_UNAVAILABLE, "empty_pool"),
            ProxyError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "unreachable"),
            ProxyError::ConnectTimedOut { .. } => (StatusCode::GATEWAY_TIMEOUT, "connect_timeout"),
            ProxyError::ResponseTimedOut { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "response_timeout")
            }
            ProxyError::UpstreamFailed { .. } => (StatusCode::BAD_GATEWAY, "upstream_failed"),
            ProxyError::BadHead(HeadFault::UnsupportedCoding(_)) => {
                (StatusCode::NOT_IMPLEMENTED, "unsupported_coding")
            }
            ProxyError::BadHead(HeadFault::GrpcTimeout(_)) => {
                (StatusCode::BAD_REQUEST, "bad_grpc_timeout")
            }
            ProxyError::BadHead(_) => (StatusCode::BAD_REQUEST, "bad_host"),
            ProxyError::ClientBody(BodyFault::Malformed(_)) => {
                (StatusCode::BAD_REQUEST, "bad_body")
            }
            ProxyError::ClientBody(_) => (StatusCode::REQUEST_TIMEOUT, "slow_body"),
            ProxyError::DeadlineExceeded { .. } => (StatusCode::GATEWAY_TIMEOUT, "grpc_deadline"),
            ProxyError::AtLimit { .. } => (StatusCode::SERVICE_UNAVAILABLE, "at_limit"),
        }
    }

    /// The code a gRPC call answered with this error gets (its `grpc-message` is the
    /// error's text). Beside [`ProxyError::classify`], so one place decides every
    /// answer. Nothing reached an upstream, or the upstream failed: `UNAVAILABLE`,
    /// which gRPC clients may retry. Timeouts: `DEADLINE_EXCEEDED`. The client's
    /// own faults: `INVALID_ARGUMENT` for a head ringway refuses; for a request body
    /// that broke its framing `INTERNAL` (the gRPC specification's code for a
    /// protocol violation on the stream), for one that stalled or came too slowly
    /// `CANCELLED` (ringway gave the call up for want of the client's data: neither
    /// the upstream's fault, as `DEADLINE_EXCEEDED` would suggest, nor worth a retry).
    pub fn grpc_status(&self) -> Code {
        match self {
            ProxyError::NoPool { .. } => Code::Unimplemented,
            ProxyError::MissingKey { .. } | ProxyError::BadHead(_) => Code::InvalidArgument,
            // Nothing reached an upstream when connects timed out: UNAVAILABLE, which
            // gRPC clients may retry, as the gRPC guidance has it for connect failures.
            ProxyError::EmptyPool { .. }
            | ProxyError::Unreachable { .. }
            | ProxyError::ConnectTimedOut { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::AtLimit { .. } => Code::Unavailable,
            ProxyError::ResponseTimedOut { .. } | ProxyError::DeadlineExceeded { .. } => {
                Code::DeadlineExceeded
            }
            ProxyError::ClientBody(BodyFault::Malformed(_)) => Code::Internal,
            ProxyError::ClientBody(_) => Code::Cancelled,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    pub fn metric_label(&self) -> &'static str {
        self.classify().1
    }

    /// Whose doing this was.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoPool { .. }
            | ProxyError::MissingKey { .. }
            | ProxyError::BadHead(_)
            | ProxyError::ClientBody(_)
            | ProxyError::DeadlineExceeded { .. } => Fault::Client,
            // A cap of ringway's own configuration, not the upstream's doing.
            ProxyError::EmptyPool { .. } | ProxyError::AtLimit { .. } => Fault::Proxy,
            ProxyError::Unreachable { .. }
            | ProxyError::ConnectTimedOut { .. }
            | ProxyError::ResponseTimedOut { .. }
            | ProxyError::UpstreamFailed { .. } => Fault::Upstream,
        }
    }

    /// Whether the request could be sent again (to this or another upstream).
    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::Unreachable { .. }
            | ProxyError::ConnectTimedOut { .. }
            | ProxyError::AtLimit { .. } => Retry::Safe,
            ProxyError::ResponseTimedOut { .. } | ProxyError::UpstreamFailed { .. } => {
                Retry::IfIdempotent
            }
            ProxyError::NoPool { .. }
            | ProxyError::MissingKey { .. }
            | ProxyError::EmptyPool { .. }
            | ProxyError::BadHead(_)
            | ProxyError::ClientBody(_)
            | ProxyError::DeadlineExceeded { .. } => Retry::Never,
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
            ProxyError::BadHead(why) => write!(f, "bad request: {why}"),
            ProxyError::ClientBody(why) => write!(f, "{why}"),
            ProxyError::DeadlineExceeded { timeout } => write!(
                f,
                "no response within the call's grpc-timeout ({}ms)",
                timeout.as_millis()
            ),
            ProxyError::AtLimit { pool, limit, max } => write!(
                f,
                "every upstream of pool {pool} tried is at its limit of {max} (upstream_limits.{limit} on this instance)"
            ),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::ClientBody(why) => Some(why),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_never_count_against_upstreams_and_are_never_retried() {
        let client = [
            ProxyError::BadHead(HeadFault::DuplicateHost),
            ProxyError::BadHead(HeadFault::MissingHost),
            ProxyError::BadHead(HeadFault::UnsupportedCoding("gzip, chunked".into())),
            ProxyError::ClientBody(BodyFault::Malformed("bad chunk".into())),
            ProxyError::ClientBody(BodyFault::Stalled(Duration::from_secs(1))),
            ProxyError::ClientBody(BodyFault::TooSlow(Duration::from_secs(1))),
        ];
        for e in &client {
            assert_eq!(e.fault(), Fault::Client, "{e}");
            assert_eq!(e.retry(), Retry::Never, "{e}");
            assert!(e.status().is_client_error() || e.status() == 501, "{e}");
        }
        let statuses: Vec<u16> = client.iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(statuses, [400, 400, 501, 400, 408, 408]);
    }

    #[test]
    fn upstream_faults_say_whether_the_request_may_have_been_sent() {
        let unreachable = ProxyError::Unreachable {
            pool: "p".into(),
            attempts: 2,
            last: "a: connection refused".into(),
        };
        assert_eq!(unreachable.fault(), Fault::Upstream);
        assert_eq!(unreachable.retry(), Retry::Safe);
        let failed = ProxyError::UpstreamFailed {
            upstream: "a".into(),
            reason: "reset".into(),
        };
        assert_eq!(failed.retry(), Retry::IfIdempotent);
        assert_eq!(
            failed.classify(),
            (StatusCode::BAD_GATEWAY, "upstream_failed")
        );
        let empty = ProxyError::EmptyPool { pool: "p".into() };
        assert_eq!((empty.fault(), empty.retry()), (Fault::Proxy, Retry::Never));
        let boxed: Box<dyn std::error::Error> = Box::new(failed);
        assert_eq!(boxed.to_string(), "upstream a failed: reset");
    }

    #[test]
    fn every_error_has_a_grpc_status() {
        let up = |s: &str| s.to_string();
        let cases = [
            (
                ProxyError::NoPool {
                    host: None,
                    path: up("/a.B/C"),
                },
                Code::Unimplemented,
            ),
            (
                ProxyError::MissingKey {
                    pool: up("p"),
                    key: up("header:x-user"),
                },
                Code::InvalidArgument,
            ),
            (ProxyError::EmptyPool { pool: up("p") }, Code::Unavailable),
            (
                ProxyError::Unreachable {
                    pool: up("p"),
                    attempts: 2,
                    last: up("a: connection refused"),
                },
                Code::Unavailable,
            ),
            (
                ProxyError::ConnectTimedOut {
                    pool: up("p"),
                    attempts: 1,
                },
                Code::Unavailable,
            ),
            (
                ProxyError::ResponseTimedOut { upstream: up("a") },
                Code::DeadlineExceeded,
            ),
            (
                ProxyError::UpstreamFailed {
                    upstream: up("a"),
                    reason: up("reset"),
                },
                Code::Unavailable,
            ),
            (
                ProxyError::BadHead(HeadFault::MissingHost),
                Code::InvalidArgument,
            ),
            (
                ProxyError::BadHead(HeadFault::GrpcTimeout(TimeoutError::Malformed)),
                Code::InvalidArgument,
            ),
            (
                ProxyError::ClientBody(BodyFault::Malformed(up("bad frame"))),
                Code::Internal,
            ),
            (
                ProxyError::ClientBody(BodyFault::Stalled(Duration::from_secs(1))),
                Code::Cancelled,
            ),
            (
                ProxyError::DeadlineExceeded {
                    timeout: Duration::from_millis(50),
                },
                Code::DeadlineExceeded,
            ),
        ];
        for (e, code) in &cases {
            assert_eq!(e.grpc_status(), *code, "{e}");
        }
    }

    #[test]
    fn a_call_whose_own_deadline_passed_is_never_held_against_the_upstream() {
        let late = ProxyError::DeadlineExceeded {
            timeout: Duration::from_millis(50),
        };
        assert_eq!((late.fault(), late.retry()), (Fault::Client, Retry::Never));
        assert_eq!(
            late.classify(),
            (StatusCode::GATEWAY_TIMEOUT, "grpc_deadline")
        );
        let bad = ProxyError::BadHead(HeadFault::GrpcTimeout(TimeoutError::Unit('x')));
        assert_eq!(
            bad.classify(),
            (StatusCode::BAD_REQUEST, "bad_grpc_timeout")
        );
        assert_eq!(bad.fault(), Fault::Client);
    }
}
