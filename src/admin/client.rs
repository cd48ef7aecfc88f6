//! A small client for the admin API, as the `ringway cluster` and `ringway route --live`
//! commands reach a running instance: a host name or address resolved within a
//! deadline, plain HTTP/1.1 or TLS with the server's name verified, and every step
//! bounded in time and size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::MAX_ADMIN_BODY;
use crate::config::{CertPair, PoolTls};
use crate::tls::UpstreamTls;

/// Time a name lookup may take: a resolver that has not answered in five seconds is
/// broken or unreachable, and an operator at a prompt should hear so.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one TCP connect may take: an admin API on a LAN answers in milliseconds; a
/// black-holed address costs five seconds before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the TLS handshake may take once connected (the server's own bound).
pub const HANDSHAKE_TIMEOUT: Duration = crate::config::DEFAULT_TLS_HANDSHAKE_TIMEOUT;
/// Time from a request sent to its whole answer read: adding a member answers once it
/// caught up, which may take [`super::JOIN_TIMEOUT`]; the rest is margin for the
/// commit and the answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(super::JOIN_TIMEOUT.as_secs() + 15);
/// Addresses of one name tried in turn: a name with more is a load balancer's, and
/// trying them all would multiply [`CONNECT_TIMEOUT`].
pub const MAX_ADDRESSES: usize = 4;

/// Where an admin API is and how to talk to it.
#[derive(Clone)]
pub struct Endpoint {
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `Some`: HTTPS, verifying the server's certificate against `host`.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// Whom an HTTPS client trusts for the admin API's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The CA certificates in this PEM file.
    CaFile(std::path::PathBuf),
    /// The system's trust store.
    System,
}

impl Endpoint {
    /// An endpoint at `host:port`, over TLS trusting `trust` when it is `Some`.
    /// A CA file that cannot be used is refused here, naming it.
    pub fn new(host: &str, port: u16, trust: Option<Trust>) -> Result<Endpoint, String> {
        let tls = match trust {
            None => None,
            Some(trust) => Some(tls_client(trust)?),
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// `http://HOST:PORT` or `https://HOST:PORT`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// `HOST:PORT`, with an IPv6 address in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a connection (name lookup, TCP, TLS, HTTP/1.1 handshake), each step within
    /// its deadline. Several requests may then be sent on it, one after another.
    pub async fn connect(&self) -> Result<Connection, String> {
        let tcp = self.tcp().await?;
        let sender = match &self.tls {
            None => handshake(tcp).await,
            Some(tls) => {
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(&self.host, tcp))
                    .await
                    .map_err(|_| format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))?
                    .map_err(|e| match e.contains("InvalidContentType") {
                        true => {
                            format!("{e} (is the admin API plain HTTP? give --admin http://...)")
                        }
                        false => e,
                    })?;
                handshake(stream).await
            }
        }
        .map_err(|e| format!("{}: {e}", self.url()))?;
        Ok(Connection {
            sender,
            authority: self.authority(),
            url: self.url(),
            tls: self.tls.is_some(),
        })
    }

    /// Sends one request on a new connection and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, HeaderValue)],
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), String> {
        let mut conn = self.connect().await?;
        conn.call(method, path, headers, body).await
    }

    async fn tcp(&self) -> Result<TcpStream, String> {
        let addrs = self.resolve().await?;
        let mut failures = Vec::new();
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: no answer within {CONNECT_TIMEOUT:?}")),
            }
        }
        Err(format!(
            "cannot connect to {} ({})",
            self.url(),
            failures.join("; ")
        ))
    }

    /// The addresses of `host`, at most [`MAX_ADDRESSES`] of them; an IP address
    /// needs no lookup.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| {
                format!(
                    "cannot resolve {:?}: no answer within {RESOLVE_TIMEOUT:?}",
                    self.host
                )
            })?
            .map_err(|e| format!("cannot resolve {:?}: {e}", self.host))?;
        let addrs: Vec<SocketAddr> = found.take(MAX_ADDRESSES).collect();
        if addrs.is_empty() {
            return Err(format!("cannot resolve {:?}: no address", self.host));
        }
        Ok(addrs)
    }
}

/// The HTTPS client side: the same TLS client as a pool's upstreams use (the
/// provider, HTTP/1.1 by ALPN, the server name verified), with no client certificate.
fn tls_client(trust: Trust) -> Result<Arc<UpstreamTls>, String> {
    let ca_file = match trust {
        Trust::CaFile(path) => Some(path),
        Trust::System => None,
    };
    let spec = PoolTls {
        ca_file,
        server_name: None,
        client_cert: None::<CertPair>,
        insecure_skip_verify: false,
    };
    let problems = UpstreamTls::problems(&spec);
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
        return Err(format!("TLS towards the admin API: {}", lines.join("; ")));
    }
    Ok(UpstreamTls::new(
        &spec,
        crate::config::UpstreamProtocol::Http1,
    ))
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
    let (sender, conn) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("no HTTP handshake within {HANDSHAKE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// How a TLS server's answer to plain HTTP reads to an HTTP/1.1 client: an alert it
/// cannot parse, or the connection closed.
const TLS_SIGNS: [&str; 2] = ["invalid HTTP version", "connection closed before message"];

/// An open connection to an admin API.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    url: String,
    /// Whether it is HTTPS.
    tls: bool,
}

impl Connection {
    /// Sends one request and reads the whole answer (at most [`MAX_ADMIN_BODY`]
    /// bytes) within [`ANSWER_TIMEOUT`]. Errors name the server and what failed.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, HeaderValue)],
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), String> {
        let url = self.url.clone();
        tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(method, path, headers, body))
            .await
            .map_err(|_| format!("{url}: no answer within {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| match !self.tls && TLS_SIGNS.iter().any(|s| e.contains(s)) {
                true => format!("{url}: {e} (does the admin API have admin.tls? give --admin https://... or --cacert)"),
                false => format!("{url}: {e}"),
            })
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, HeaderValue)],
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value.clone());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_ADMIN_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((parts, bytes))
    }
}

/// `Authorization: Bearer TOKEN` as a header pair.
pub fn bearer(token: &str) -> Result<(&'static str, HeaderValue), String> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map(|v| (header::AUTHORIZATION.as_str(), v))
        .map_err(|_| "the admin token holds characters a header cannot carry".to_owned())
}
