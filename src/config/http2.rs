//! `pools[].protocol` and `pools[].http2`: which HTTP version ringway speaks to a pool's
//! upstreams, and the bounds of its HTTP/2 connections.

use std::fmt;
use std::time::Duration;

/// The HTTP version ringway speaks to a pool's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time per connection (the default).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`); the pool needs a `tls` section.
    H2,
    /// HTTP/2 in clear text, with prior knowledge (RFC 9113 §3.3).
    H2c,
    /// Over TLS, whatever ALPN settles (`h2` preferred, else HTTP/1.1); in clear text,
    /// HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    pub fn parse(s: &str) -> Result<UpstreamProtocol, String> {
        match s {
            "http1" => Ok(UpstreamProtocol::Http1),
            "h2" => Ok(UpstreamProtocol::H2),
            "h2c" => Ok(UpstreamProtocol::H2c),
            "auto" => Ok(UpstreamProtocol::Auto),
            other => Err(format!(
                "must be one of http1, h2, h2c, auto, got {other:?}"
            )),
        }
    }

    /// Whether connections to the pool may speak HTTP/2.
    pub fn may_use_h2(self) -> bool {
        !matches!(self, UpstreamProtocol::Http1)
    }
}

impl fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Auto => "auto",
        })
    }
}

/// HTTP/2 connections open to one upstream (per instance), by default. A few
/// connections spread a busy upstream's streams over more than one TCP window and
/// server thread without giving up multiplexing.
pub const DEFAULT_H2_MAX_CONNECTIONS: usize = 4;
/// Most connections to one upstream: past this, multiplexing is not being used.
pub const MAX_H2_MAX_CONNECTIONS: u64 = 1_024;
/// Streams ringway opens at once on one HTTP/2 connection, by default: the floor
/// RFC 9113 §6.5.2 recommends servers allow, and the common server default.
pub const DEFAULT_H2_MAX_STREAMS: usize = 100;
/// Most streams per connection ringway will open: the largest settings seen in
/// practice are around this.
pub const MAX_H2_MAX_STREAMS: u64 = 10_000;
/// A connection with no frame received for this long is sent a PING.
pub const DEFAULT_H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// A PING unanswered for this long closes the connection.
pub const DEFAULT_H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `pools[].http2`: bounds of the HTTP/2 connections to each upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Connections open to one upstream at once (`max_connections_per_upstream`).
    pub max_connections: usize,
    /// Streams open at once on one connection (`max_streams_per_connection`); the
    /// upstream's own `SETTINGS_MAX_CONCURRENT_STREAMS` lowers it further.
    pub max_streams: usize,
    /// PING after this long without a frame from the upstream (`keepalive_interval_ms`).
    pub keepalive_interval: Duration,
    /// Close a connection whose PING is unanswered for this long
    /// (`keepalive_timeout_ms`).
    pub keepalive_timeout: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_connections: DEFAULT_H2_MAX_CONNECTIONS,
            max_streams: DEFAULT_H2_MAX_STREAMS,
            keepalive_interval: DEFAULT_H2_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_H2_KEEPALIVE_TIMEOUT,
        }
    }
}
