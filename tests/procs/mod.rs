//! Helpers for tests that run real `ringway run` processes on 127.0.0.1: instances
//! with their own config, data dir and log; plain HTTP/1.1 calls; polling with a
//! bound; echo upstreams; and TCP relays that can cut the traffic between two
//! instances.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

/// Every wait gives up here.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A port free right now, below the kernel's ephemeral range (which starts at 32768
/// by default), so outgoing connections of other tests cannot take it before the
/// instance binds it.
pub fn free_port() -> u16 {
    // A port handed out once is never handed out again by this process: two instances
    // of one test drawing the same free port would fight over it once started.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub struct Instance {
    pub name: String,
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub listener: SocketAddr,
    /// Where this instance listens for its peers.
    pub raft: SocketAddr,
    pub child: Option<Child>,
}

/// `RUST_LOG` of the instances tests start: warnings, and the health and control
/// layers' decisions, which is what a failing test's log is read for.
const INSTANCE_LOG: &str = "warn,ringway::health=info,ringway::control=info";

impl Instance {
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the instance with more environment variables (a preloaded library that
    /// skews its clock, say).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", INSTANCE_LOG)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Panics with the instance's log if its process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            let log =
                std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
            panic!("{} exited ({status}):\n{log}", self.name);
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// GET on the admin API; `None` while the instance does not answer.
    pub fn get(&self, path: &str) -> Option<Value> {
        let body = http_get(self.admin, path)?;
        serde_json::from_str(&body).ok()
    }

    /// A change through the admin API with the test token: (status, body).
    pub fn change(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        http_call(
            self.admin,
            method,
            path,
            &["Authorization: Bearer t0ken"],
            body,
        )
    }

    /// The upstream that served `path` through this instance's proxy listener.
    pub fn served_by(&self, path: &str) -> Option<String> {
        let body = http_get(self.listener, path)?;
        Some(body.split(' ').next()?.to_owned())
    }

    /// Runs the `ringway` binary with `args`: (success, stdout, stderr).
    pub fn cli(args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let (status, body) = http_call(addr, "GET", path, &[], "")?;
    (status == 200).then_some(body)
}

/// One HTTP/1.1 exchange: (status, body).
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let length = match (method, body.len()) {
        ("GET", 0) => String::new(),
        (_, n) => format!("Content-Length: {n}\r\n"),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}{length}\r\n"
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_every(what, Duration::from_millis(50), PATIENCE, f)
}

/// Polls `f` every `every` until it gives a value, failing the test after `patience`.
pub fn eventually_every<T>(
    what: &str,
    every: Duration,
    patience: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// A fresh directory for one test's configs, data dirs, logs and token.
pub fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringway-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    dir
}

/// How to write one instance's config.
pub struct Node<'a> {
    pub name: &'a str,
    /// Its `cluster.address`.
    pub raft: SocketAddr,
    /// Its `cluster.peers`, itself included.
    pub peers: Vec<(String, SocketAddr)>,
    /// More lines of the `cluster` section (two-space indented).
    pub cluster_extra: &'a str,
}

/// Writes (once) the cluster secret every instance started in `dir` shares, readable
/// by its owner only, and returns its path.
pub fn cluster_secret(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("cluster.secret");
    if !path.exists() {
        std::fs::write(&path, "0123456789abcdef0123456789abcdef-test-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Writes the config of one instance serving pool `web` (hash key: path) over
/// `upstreams`, and starts it.
pub fn start_node(dir: &Path, node: Node<'_>, upstreams: &[SocketAddr]) -> Instance {
    start_node_with(dir, node, upstreams, "")
}

/// [`start_node`] with more lines for pool `web` (four-space indented).
pub fn start_node_with(
    dir: &Path,
    node: Node<'_>,
    upstreams: &[SocketAddr],
    pool_extra: &str,
) -> Instance {
    let (listener, admin) = (free_port(), free_port());
    let peers: Vec<String> = node
        .peers
        .iter()
        .map(|(n, a)| format!("{n}: \"{a}\""))
        .collect();
    let ups: Vec<String> = upstreams
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    let name = node.name;
    let yaml = format!(
        "node: {{id: {name}, data_dir: {data:?}}}\n\
         cluster:\n  address: \"{raft}\"\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n  secret_file: {secret:?}\n{extra}\
         listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
         pools:\n  - name: web\n    hash_key: path\n    upstreams: [{ups}]\n{pool_extra}",
        data = dir.join(name).display().to_string(),
        raft = node.raft,
        token = dir.join("token").display().to_string(),
        peers = peers.join(", "),
        extra = node.cluster_extra,
        secret = cluster_secret(dir).display().to_string(),
        ups = ups.join(", "),
    );
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    let mut i = Instance {
        name: name.to_string(),
        config,
        admin: local(admin),
        listener: local(listener),
        raft: node.raft,
        child: None,
    };
    i.start();
    i
}

/// Three instances n1..n3 that reach each other directly.
pub fn cluster(dir: &Path, upstreams: &[SocketAddr], cluster_extra: &str) -> Vec<Instance> {
    cluster_with(dir, upstreams, cluster_extra, "")
}

/// [`cluster`] with more lines for pool `web` (see [`start_node_with`]).
pub fn cluster_with(
    dir: &Path,
    upstreams: &[SocketAddr],
    cluster_extra: &str,
    pool_extra: &str,
) -> Vec<Instance> {
    let names = ["n1", "n2", "n3"];
    let raft: Vec<SocketAddr> = names.iter().map(|_| local(free_port())).collect();
    let peers: Vec<(String, SocketAddr)> = names
        .iter()
        .zip(&raft)
        .map(|(n, a)| (n.to_string(), *a))
        .collect();
    names
        .iter()
        .zip(&raft)
        .map(|(name, raft)| {
            let node = Node {
                name,
                raft: *raft,
                peers: peers.clone(),
                cluster_extra,
            };
            start_node_with(dir, node, upstreams, pool_extra)
        })
        .collect()
}

/// The leader's name when every running instance names the same leader.
pub fn agreed_leader(instances: &[&Instance]) -> Option<String> {
    let views: Vec<Value> = instances
        .iter()
        .map(|i| i.get("/api/cluster"))
        .collect::<Option<_>>()?;
    let leader = views[0]["leader"].as_str()?.to_owned();
    let leads = views.iter().filter(|v| v["role"] == "leader").count();
    (leads == 1 && views.iter().all(|v| v["leader"] == leader.as_str())).then_some(leader)
}

/// Ring digest and applied index of pool `web` on each instance, once every one of
/// them has applied the bootstrap.
pub fn digests(instances: &[&Instance]) -> Option<Vec<(String, u64)>> {
    instances
        .iter()
        .map(|i| {
            let pools = i.get("/api/pools")?;
            let replicated = !pools["pools"][0]["replicated"].is_null();
            let digest = pools["pools"][0]["ring_digest"].as_str()?.to_owned();
            replicated.then_some((digest, pools["applied"].as_u64()?))
        })
        .collect()
}

/// The same digest on every instance, different from `not` when given.
pub fn same_digest(instances: &[&Instance], not: Option<&str>) -> Option<String> {
    let d = digests(instances)?;
    let first = d[0].0.clone();
    (d.iter().all(|(x, _)| *x == first) && not != Some(first.as_str())).then_some(first)
}

/// The ids of pool `web`'s upstreams as this instance routes them.
pub fn upstream_ids(i: &Instance) -> Option<Vec<String>> {
    let pools = i.get("/api/pools")?;
    Some(
        pools["pools"][0]["upstreams"]
            .as_array()?
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// `n` echo upstreams (each answers with its name, `up0`...) on a runtime of their own.
pub fn echo_upstreams(n: usize) -> (tokio::runtime::Runtime, Vec<SocketAddr>) {
    let rt = runtime();
    let addrs = (0..n)
        .map(|i| {
            let l = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = l.local_addr().unwrap();
            rt.spawn(ringway::echo::serve(l, format!("up{i}")));
            addr
        })
        .collect();
    (rt, addrs)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP relay in front of one address whose traffic the test can cut and slow: while
/// cut, its connections are closed and new ones are closed as soon as they are
/// accepted; while slowed, every chunk it forwards waits the delay first.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    delay_ms: Arc<AtomicU64>,
}

impl Relay {
    pub fn start(rt: &tokio::runtime::Runtime, target: SocketAddr) -> Relay {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(watch::channel(false).0);
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (watcher, delay) = (cut.clone(), delay_ms.clone());
        rt.spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut cut_rx = watcher.subscribe();
                if *cut_rx.borrow() {
                    continue;
                }
                let delay = delay.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ir, ow, delay.clone()) => {}
                        _ = pump(or, iw, delay) => {}
                        _ = cut_rx.wait_for(|&c| c) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut,
            delay_ms,
        }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.set(false, Duration::ZERO);
    }

    /// Cuts or heals the relay, and sets the delay on every chunk it forwards.
    pub fn set(&self, cut: bool, delay: Duration) {
        self.cut.send_replace(cut);
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Copies one direction of a relayed connection, each chunk after the relay's delay.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let d = delay.load(Ordering::Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A `ringway echo` upstream process on a fixed port, so it can come back there.
pub struct Echo {
    pub addr: SocketAddr,
    name: String,
    child: Option<Child>,
}

impl Echo {
    pub fn new(name: &str) -> Echo {
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut e = Echo {
            addr,
            name: name.into(),
            child: None,
        };
        e.start();
        e
    }

    pub fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args([
                "echo",
                "--listen",
                &self.addr.to_string(),
                "--name",
                &self.name,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = self.addr;
        eventually("the echo upstream listening", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
    }

    /// Kills the process: its listener and every connection go at once.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop();
    }
}
