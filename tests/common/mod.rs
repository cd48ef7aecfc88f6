//! Shared harness for the data-plane integration tests: upstream servers on
//! 127.0.0.1:0, config text naming them, the proxy served in-process on 127.0.0.1:0,
//! and small HTTP/1.1, HTTP/2 and raw-TCP clients. Every wait is bounded by [`WAIT`].

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use ringway::config::Config;
use ringway::proxy::server::Server;
use ringway::proxy::{Proxy, Snapshot};

/// Upper bound on any single wait in these tests: generous for a loaded 2-core
/// machine, short enough that a hang fails the test instead of the CI run.
pub const WAIT: Duration = Duration::from_secs(20);

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, Error>;

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// ---------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------

type BoxFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
/// Answers one request an upstream received.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture + Send + Sync>;

pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// An HTTP/1.1 upstream on 127.0.0.1 that can be stopped for real: [`Upstream::stop`]
/// closes its listener and every connection it accepted, so connects are refused.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(name: &str, handler: Handler) -> Upstream {
        let listener = TcpListener::bind(loopback()).await.expect("bind upstream");
        Upstream::serve(name, listener, handler)
    }

    /// Serves `handler` on an already bound listener.
    pub fn serve(name: &str, listener: TcpListener, handler: Handler) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stop_rx => break,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let h = handler.clone();
                        async move { Ok::<_, Infallible>(h(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
                // Reap finished connections so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
            drop(listener);
            conns.shutdown().await;
        });
        Upstream {
            name: name.to_owned(),
            addr,
            accepted,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// An upstream answering like `ringway echo`: `x-upstream: NAME`, body echoed or
    /// `NAME METHOD URI\n`.
    pub async fn echo(name: &str) -> Upstream {
        Upstream::start(name, echo_handler(name)).await
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection; returns once they are closed.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within("upstream stop", task).await.expect("upstream task");
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn echo_handler(name: &str) -> Handler {
    let name: Arc<str> = name.into();
    handler(move |req: Request<Incoming>| {
        let name = name.clone();
        async move {
            let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
                || req.headers().contains_key(header::TRANSFER_ENCODING);
            let line = format!("{name} {} {}\n", req.method(), req.uri());
            let body = if has_body {
                req.into_body().map_err(Error::from).boxed()
            } else {
                full(line)
            };
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert("x-upstream", HeaderValue::from_str(&name).unwrap());
            resp
        }
    })
}

/// An upstream whose body is the request head it received: the request line
/// (`METHOD URI VERSION`), then one `name: value` line per header, then a blank line
/// and the request body. Its response also carries hop-by-hop headers a proxy must
/// strip (see [`HOP_RESPONSE_HEADERS`]).
pub fn head_handler(name: &str) -> Handler {
    let name: Arc<str> = name.into();
    handler(move |req: Request<Incoming>| {
        let name = name.clone();
        async move {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            text.push('\n');
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            text.push_str(&String::from_utf8_lossy(&body));
            let mut resp = Response::new(full(text));
            let h = resp.headers_mut();
            h.insert("x-upstream", HeaderValue::from_str(&name).unwrap());
            for (k, v) in HOP_RESPONSE_HEADERS {
                h.append(*k, HeaderValue::from_static(v));
            }
            h.append("x-resp-kept", HeaderValue::from_static("yes"));
            h.append(header::VIA, HeaderValue::from_static("1.1 origin"));
            resp
        }
    })
}

/// Hop-by-hop response headers [`head_handler`] sends; none may reach a client.
pub const HOP_RESPONSE_HEADERS: &[(&str, &str)] = &[
    ("connection", "x-resp-secret"),
    ("x-resp-secret", "1"),
    ("keep-alive", "timeout=5"),
    ("proxy-connection", "keep-alive"),
    ("proxy-authenticate", "Basic realm=\"r\""),
    ("trailer", "x-never"),
];

/// A request head as [`head_handler`] reported it.
#[derive(Debug)]
pub struct SeenHead {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl SeenHead {
    pub fn parse(text: &str) -> SeenHead {
        let (head, body) = text.split_once("\n\n").expect("head then blank line");
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap_or((l, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        SeenHead {
            request_line,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} appears {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

// ---------------------------------------------------------------------------------
// Config text
// ---------------------------------------------------------------------------------

/// One pool of a test config.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: String,
    /// Extra `key: value` lines for the pool, written as given.
    pub options: Vec<String>,
    /// `(id, address, weight)`.
    pub upstreams: Vec<(String, SocketAddr, u32)>,
}

impl PoolSpec {
    pub fn new(name: &str) -> PoolSpec {
        PoolSpec {
            name: name.to_owned(),
            hosts: vec!["*".into()],
            path_prefix: "/".into(),
            options: Vec::new(),
            upstreams: Vec::new(),
        }
    }

    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    pub fn prefix(mut self, prefix: &str) -> Self {
        self.path_prefix = prefix.to_owned();
        self
    }

    pub fn opt(mut self, line: &str) -> Self {
        self.options.push(line.to_owned());
        self
    }

    /// Adds an upstream with its name as id and weight 1.
    pub fn upstream(self, up: &Upstream) -> Self {
        self.weighted(up, 1)
    }

    pub fn weighted(self, up: &Upstream, weight: u32) -> Self {
        self.address(&up.name, up.addr, weight)
    }

    pub fn address(mut self, id: &str, addr: SocketAddr, weight: u32) -> Self {
        self.upstreams.push((id.to_owned(), addr, weight));
        self
    }

    pub fn upstreams(self, ups: &[Upstream]) -> Self {
        ups.iter().fold(self, |p, u| p.upstream(u))
    }
}

/// A whole config file: one listener on 127.0.0.1:0, `limits` lines, the pools.
pub fn config_yaml(pools: &[PoolSpec], limits: &[&str]) -> String {
    // Each config gets its own data dir: an instance run from it keeps Raft state
    // there, and state left by another test must never be picked up.
    static N: AtomicUsize = AtomicUsize::new(0);
    let data_dir = std::env::temp_dir().join(format!(
        "ringway-test-data-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let mut y = format!(
        "node:\n  id: test\n  data_dir: {:?}\nlisteners:\n  - address: 127.0.0.1:0\n",
        data_dir.display().to_string()
    );
    if !limits.is_empty() {
        y.push_str("limits:\n");
        for l in limits {
            y.push_str(&format!("  {l}\n"));
        }
    }
    y.push_str("pools:\n");
    for p in pools {
        let hosts: Vec<String> = p.hosts.iter().map(|h| format!("{h:?}")).collect();
        y.push_str(&format!("  - name: {}\n", p.name));
        y.push_str(&format!("    hosts: [{}]\n", hosts.join(", ")));
        y.push_str(&format!("    path_prefix: {:?}\n", p.path_prefix));
        for o in &p.options {
            y.push_str(&format!("    {o}\n"));
        }
        y.push_str("    upstreams:\n");
        for (id, addr, weight) in &p.upstreams {
            y.push_str(&format!(
                "      - id: {id:?}\n        address: {addr}\n        weight: {weight}\n"
            ));
        }
    }
    y
}

/// Each `(pool lines, expected text)`: a one-pool config (upstream at `addr`) with
/// those lines is refused with an error containing the text.
pub fn refused_pool_settings(addr: SocketAddr, cases: &[(Vec<&str>, &str)]) {
    for (lines, want) in cases {
        let mut pool = PoolSpec::new("p");
        for l in lines {
            pool = pool.opt(l);
        }
        let yaml = config_yaml(&[pool.address("a", addr, 1)], &[]);
        let err = Config::parse(&yaml)
            .err()
            .unwrap_or_else(|| panic!("{lines:?} was accepted"))
            .to_string();
        assert!(err.contains(want), "{lines:?}: {err}");
    }
}

pub fn parse_config(yaml: &str) -> Config {
    Config::parse(yaml).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"))
}

/// The upstream id the config's ring gives `key` in `pool` (via `ringway::cli::route`).
pub fn predict(config: &Config, pool: &str, key: &str) -> String {
    let out = ringway::cli::route(config, Some(pool), &[key.to_owned()]).expect("route");
    let line = out.lines().next().expect("one line");
    let (k, id) = line.split_once('\t').expect("KEY\\tID");
    assert_eq!(k, key);
    id.to_owned()
}

/// The failover order for `key`: upstream ids in ring-walk order.
pub fn walk_ids(config: &Config, pool: &str, key: &str, limit: usize) -> Vec<String> {
    let p = config.pools.iter().find(|p| p.name == pool).expect("pool");
    let ring = ringway::proxy::snapshot::pool_ring(p);
    ring.walk(ringway::ring::point(key.as_bytes()), limit)
        .map(|i| p.upstreams[i].id.clone())
        .collect()
}

// ---------------------------------------------------------------------------------
// The proxy, in-process
// ---------------------------------------------------------------------------------

pub struct TestProxy {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    pub async fn start(yaml: &str) -> TestProxy {
        TestProxy::start_with(parse_config(yaml)).await
    }

    pub async fn start_with(config: Config) -> TestProxy {
        let proxy = Arc::new(Proxy::new(Snapshot::build(&config, None)));
        let server = Server::bind(&[loopback()], proxy.clone(), config.limits.clone())
            .await
            .expect("bind proxy")
            .with_headers(config.listeners.iter().map(|l| l.headers));
        let addr = server.local_addrs()[0];
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestProxy {
            addr,
            proxy,
            config,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts a graceful shutdown (returns at once).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `Server::run` to return (after shutdown and draining).
    pub async fn finished(&mut self) {
        if let Some(task) = self.task.take() {
            within("proxy server to finish", task)
                .await
                .expect("server task");
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(self.addr, path).await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-upstream` header test upstreams set.
    pub fn upstream(&self) -> String {
        match self.headers.get("x-upstream") {
            Some(v) => v.to_str().unwrap().to_owned(),
            None => panic!("no x-upstream header: {} {:?}", self.status, self.text()),
        }
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

pub async fn collect(resp: Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = within("response body", body.collect())
        .await
        .expect("response body")
        .to_bytes();
    Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// `GET path` with `Host: ringway.test`.
pub fn get_req(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, "ringway.test")
        .body(empty())
        .unwrap()
}

/// One HTTP/1.1 keep-alive connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    _conn: JoinHandle<()>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect to proxy");
        let (sender, conn) = within(
            "handshake",
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Client {
            sender,
            _conn: conn,
        }
    }

    pub async fn send(&mut self, req: Request<Body>) -> Resp {
        collect(self.send_head(req).await).await
    }

    /// Sends and returns once the response head arrives.
    pub async fn send_head(&mut self, req: Request<Body>) -> Response<Incoming> {
        within("connection ready", self.sender.ready())
            .await
            .expect("connection ready");
        within("response head", self.sender.send_request(req))
            .await
            .expect("response head")
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(get_req(path)).await
    }
}

/// `GET path` over a new connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, get_req(path)).await
}

/// Sends one request over a new connection.
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Resp {
    Client::connect(addr).await.send(req).await
}

/// Writes `bytes` on a new connection and reads until the server closes it.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    within("write", s.write_all(bytes)).await.unwrap();
    read_to_close(&mut s).await
}

/// Reads until EOF (or a reset) within [`WAIT`].
pub async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = within("read until the server closes", s.read_to_end(&mut out)).await;
    out
}

/// An HTTP/1.x response parsed from raw bytes (Content-Length or chunked bodies).
#[derive(Debug)]
pub struct RawResponse {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn parse(bytes: &[u8]) -> RawResponse {
        let end = find(bytes, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).expect("utf-8 head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let rest = &bytes[end + 4..];
        let mut r = RawResponse {
            status_line,
            status,
            headers,
            body: Vec::new(),
        };
        r.body = if r
            .one("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            dechunk(rest)
        } else if let Some(n) = r.one("content-length") {
            rest[..n.parse::<usize>().unwrap()].to_vec()
        } else {
            rest.to_vec()
        };
        r
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = find(b, b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// An HTTP/2 prior-knowledge connection.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (sender, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        ),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

// ---------------------------------------------------------------------------------
// The ringway binary as a child process
// ---------------------------------------------------------------------------------

/// A file in a fresh temporary directory, removed on drop.
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringway-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
}

/// A long-running `ringway` child (run or echo), killed on drop. Its stderr is read
/// on a thread; the address it logs as listening is the readiness signal.
pub struct Child {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<String>>,
    _config: Option<TempFile>,
}

impl Child {
    /// Spawns the binary with `args` and waits for the log line `MARKER ... addr=IP:PORT`.
    /// RUST_LOG keeps ringway's own info lines (the listening address) and drops the
    /// per-request access log.
    pub fn spawn(args: &[&str], marker: &str, config: Option<TempFile>) -> Child {
        use std::io::BufRead;
        let mut child = binary()
            .args(args)
            .env("RUST_LOG", "warn,ringway=info,ringway::access=warn")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ringway");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let marker = marker.to_owned();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(&marker) {
                    if let Some(addr) = field_addr(&line) {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut c = Child {
            child,
            addr: loopback(),
            log,
            _config: config,
        };
        match rx.recv_timeout(WAIT) {
            Ok(addr) => c.addr = addr,
            Err(_) => panic!(
                "ringway {args:?} never logged its address; log:\n{}",
                c.log()
            ),
        }
        c
    }

    /// `ringway run --config FILE` on a config written to a temp file.
    pub fn run(yaml: &str) -> Child {
        let file = TempFile::new("ringway.yaml", yaml);
        let path = file.path.to_str().unwrap().to_owned();
        Child::spawn(&["run", "--config", &path], "ringway listening", Some(file))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A `/proc/PID/status` value in KiB, e.g. `VmHWM` (peak resident set size).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in /proc status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `addr=IP:PORT` field of a log line.
fn field_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("addr=")? + 5..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
