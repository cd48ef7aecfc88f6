//! A small client for the admin API: followers forwarding changes to the leader, and
//! the `ringway cluster` and `ringway route --live` commands.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use super::MAX_ADMIN_BODY;

/// Sends one request to the admin API at `addr` and reads the whole answer (at most
/// [`MAX_ADMIN_BODY`] bytes). Errors name what failed.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, HeaderValue)],
    body: Bytes,
) -> Result<(http::response::Parts, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        req = req.header(*name, value.clone());
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| format!("{addr}: reading the answer: {e}"))?
        .to_bytes();
    Ok((parts, bytes))
}

/// `Authorization: Bearer TOKEN` as a header pair.
pub fn bearer(token: &str) -> Result<(&'static str, HeaderValue), String> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map(|v| (header::AUTHORIZATION.as_str(), v))
        .map_err(|_| "the admin token holds characters a header cannot carry".to_owned())
}
