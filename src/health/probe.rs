//! One health probe of one upstream: an HTTP GET whose status must be expected, a
//! gRPC `grpc.health.v1.Health/Check` over HTTP/2 that must answer `SERVING`, or, for
//! a pool without active checks, a TCP connect. Bounded by a timeout and by
//! [`MAX_STATUS_LINE`] bytes read (HTTP), or [`grpc_health::MAX_RESPONSE_BYTES`] of
//! body and [`MAX_GRPC_HEADER_LIST`] of headers (gRPC).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::grpc_health::{self, CHECK_PATH, SERVING};
use crate::config::health::{Active, CheckKind};
use crate::config::UpstreamAddr;

/// Most bytes read while looking for the status line of a check's answer.
pub const MAX_STATUS_LINE: usize = 1024;
/// Most bytes of response headers (and of trailers) a gRPC check accepts: a health
/// answer carries a handful of short headers.
pub const MAX_GRPC_HEADER_LIST: u32 = 16 * 1024;

/// A connection a probe speaks over.
pub trait ProbeIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ProbeIo for T {}

/// A connecting future of [`ProbeTls`].
pub type TlsConnecting<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn ProbeIo>, String>> + Send + 'a>>;

/// A pool's TLS client side as a probe needs it, handed in by the control layer (which
/// implements it for the pool's `tls::UpstreamTls`): health names no TLS type.
pub trait ProbeTls: Send + Sync {
    /// Runs the client handshake on `tcp` to `host` and returns the connection once
    /// the upstream agreed to HTTP/2 (ALPN `h2`); an error says what failed.
    fn connect_h2<'a>(&'a self, host: &'a str, tcp: TcpStream) -> TlsConnecting<'a>;
}

/// True when the upstream passes: the check's answer within `timeout`, or (`check`
/// is `None`) a TCP connection within it. `tls` is the pool's: gRPC checks of a TLS
/// pool run over it.
pub async fn probe(
    addr: &UpstreamAddr,
    check: Option<&Active>,
    tls: Option<&dyn ProbeTls>,
    timeout: Duration,
) -> bool {
    let result = tokio::time::timeout(timeout, async {
        let mut stream = connect(addr).await.map_err(|e| e.to_string())?;
        match check.map(|c| &c.kind) {
            None => Ok(true),
            Some(CheckKind::Http { path, .. }) => {
                let status = http_status(&mut stream, addr, path)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(check.is_some_and(|c| c.expects(status)))
            }
            Some(CheckKind::Grpc { service }) => grpc_check(stream, addr, tls, service).await,
        }
    })
    .await;
    match result {
        Ok(Ok(passed)) => passed,
        Ok(Err(why)) => {
            tracing::debug!(upstream = %addr, %why, "health probe failed");
            false
        }
        Err(_) => {
            tracing::debug!(upstream = %addr, ?timeout, "health probe timed out");
            false
        }
    }
}

async fn connect(addr: &UpstreamAddr) -> std::io::Result<TcpStream> {
    match addr.ip {
        Some(ip) => TcpStream::connect((ip, addr.port)).await,
        None => TcpStream::connect((addr.host.as_str(), addr.port)).await,
    }
}

async fn http_status(
    stream: &mut TcpStream,
    addr: &UpstreamAddr,
    path: &str,
) -> std::io::Result<u16> {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringway-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf).ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

/// The status of an `HTTP/1.x NNN ...` line.
pub fn parse_status(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.trim();
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// One gRPC health check on `tcp`, over TLS when the pool has it. `Ok(false)` is an
/// answer other than `SERVING`; `Err` says what went wrong on the way.
async fn grpc_check(
    tcp: TcpStream,
    addr: &UpstreamAddr,
    tls: Option<&dyn ProbeTls>,
    service: &str,
) -> Result<bool, String> {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => grpc_exchange(tcp, "http", addr, service).await,
        Some(tls) => {
            let stream = tls.connect_h2(&addr.host, tcp).await?;
            grpc_exchange(stream, "https", addr, service).await
        }
    }
}

/// Ends the connection task when the exchange is over, however it ended.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn grpc_exchange<S>(
    stream: S,
    scheme: &str,
    addr: &UpstreamAddr,
    service: &str,
) -> Result<bool, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_GRPC_HEADER_LIST)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = Request::post(format!("{scheme}://{addr}{CHECK_PATH}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "ringway-health")
        .body(Full::new(grpc_health::encode_request(service)))
        .map_err(|e| format!("building the check request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending the check: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()));
    }
    // A trailers-only answer carries grpc-status in the headers (e.g. NOT_FOUND for
    // an unknown service).
    if let Some(code) = resp.headers().get("grpc-status") {
        return Err(format!("grpc-status {code:?} without an answer"));
    }
    let body = Limited::new(resp.into_body(), grpc_health::MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let code = body.trailers().and_then(|t| t.get("grpc-status")).cloned();
    if code.as_ref().map(|c| c.as_bytes()) != Some(b"0") {
        return Err(format!("grpc-status {code:?} in the trailers"));
    }
    let status = grpc_health::decode_response(&body.to_bytes())
        .map_err(|e| format!("the answer is not a health answer: {e}"))?;
    Ok(status == SERVING)
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20000 OK\r\n"), None);
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b""), None);
    }
}
