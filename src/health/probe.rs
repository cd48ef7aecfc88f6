//! One health probe of one upstream: an HTTP GET whose status must be expected, or,
//! for a pool without active checks, a TCP connect. Bounded by a timeout and by
//! [`MAX_STATUS_LINE`] bytes read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::health::Active;
use crate::config::UpstreamAddr;

/// Most bytes read while looking for the status line of a check's answer.
pub const MAX_STATUS_LINE: usize = 1024;

/// True when the upstream passes: the check's expected status within `timeout`, or
/// (`check` is `None`) a TCP connection within it.
pub async fn probe(addr: &UpstreamAddr, check: Option<&Active>, timeout: Duration) -> bool {
    let result = tokio::time::timeout(timeout, async {
        let mut stream = connect(addr).await?;
        let Some(check) = check else {
            return Ok(true);
        };
        let status = http_status(&mut stream, addr, &check.path).await?;
        Ok::<_, std::io::Error>(check.expects(status))
    })
    .await;
    matches!(result, Ok(Ok(true)))
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
