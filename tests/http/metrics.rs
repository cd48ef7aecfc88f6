//! `GET /metrics` on a real `ringway run` process: counters move by exactly the
//! requests sent, the output passes `promtool check metrics`, and a real Prometheus
//! server scrapes it.
//!
//! promtool and prometheus come from Debian's `prometheus` package, which
//! `scripts/test.sh` installs (`scripts/install-test-deps.sh`); without them these
//! tests fail, naming the command that installs them.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_yaml, Child, Client, PoolSpec, TempFile, Upstream, WAIT};
use http::Request;

/// A port free right now, below the kernel's ephemeral range (see tests/cluster/process.rs).
fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `GET path` over HTTP/1.0; the body, when the answer is a 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    // `HTTP/1.x 200 ...`: servers answer an HTTP/1.0 request in 1.0 or 1.1.
    let status = head.split(' ').nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// Polls `f` until it gives a value, for at most `bound`.
fn eventually<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One parsed scrape: (name, labels) -> value.
#[derive(Debug)]
struct Scrape(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("NAME VALUE");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').expect("}"))),
                None => (series, BTreeMap::new()),
            };
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape(samples)
    }

    /// The sample with exactly these labels (0 when absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }
}

/// `a="x",b="y\"z"` (values escaped as the text format escapes them).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// A `ringway run` process with its admin listener, and the upstreams it proxies to:
/// pool `web` (`/web`, hashed on the path) over a and b; pool `fail` (`/fail`) over a
/// dead address `c` (nothing listens there) and the live `a`.
struct Instance {
    child: Child,
    admin: SocketAddr,
    rt: tokio::runtime::Runtime,
    _upstreams: Vec<Upstream>,
    config: ringway::config::Config,
}

impl Instance {
    fn start() -> Instance {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (a, b) = rt.block_on(async { (Upstream::echo("a").await, Upstream::echo("b").await) });
        let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pools = [
            PoolSpec::new("web")
                .prefix("/web")
                .opt("hash_key: path")
                .upstream(&a)
                .upstream(&b),
            PoolSpec::new("fail")
                .prefix("/fail")
                .opt("hash_key: path")
                // Every request to the dead upstream is a connect error and a retry,
                // rather than the local fast path skipping it after the first.
                .opt("health: {passive: {local_suspicion_ms: 0}}")
                .address("c", dead, 1)
                .upstream(&a),
        ];
        let yaml = format!("{}admin:\n  address: {admin}\n", config_yaml(&pools, &[]));
        let config = common::parse_config(&yaml);
        let child = Child::run(&yaml);
        Instance {
            child,
            admin,
            rt,
            _upstreams: vec![a, b],
            config,
        }
    }

    fn scrape(&self) -> Scrape {
        let text = eventually("GET /metrics", WAIT, || http_get(self.admin, "/metrics"));
        Scrape::parse(&text)
    }

    fn text(&self) -> String {
        eventually("GET /metrics", WAIT, || http_get(self.admin, "/metrics"))
    }

    /// Scrapes once no request is in flight (responses are counted when they end,
    /// which may be just after the client has read them).
    fn settled(&self) -> Scrape {
        eventually("in-flight requests back to 0", WAIT, || {
            let s = self.scrape();
            (s.get("ringway_requests_in_flight", &[]) == 0.0).then_some(s)
        })
    }
}

/// What the client saw, per upstream (`x-upstream`, or `-` for ringway's own answers).
#[derive(Default, Debug)]
struct Seen {
    requests: BTreeMap<String, u64>,
    body_bytes: BTreeMap<String, u64>,
}

impl Seen {
    fn add(&mut self, resp: &common::Resp) {
        let who = resp
            .headers
            .get("x-upstream")
            .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned());
        *self.requests.entry(who.clone()).or_default() += 1;
        *self.body_bytes.entry(who).or_default() += resp.body.len() as u64;
    }
}

#[test]
fn counters_move_by_exactly_the_requests_sent() {
    let inst = Instance::start();
    let before = inst.settled();
    // Keys of pool `fail` whose ring owner is the dead upstream: each fails over to a.
    let failing: Vec<String> = (0..200)
        .map(|i| format!("/fail/{i}"))
        .filter(|k| common::predict(&inst.config, "fail", k) == "c")
        .take(3)
        .collect();
    assert_eq!(failing.len(), 3);
    let proxy = inst.child.addr;
    let (web, posted, fail, lost) = inst.rt.block_on(async {
        let mut client = Client::connect(proxy).await;
        let (mut web, mut fail, mut lost) = (Seen::default(), Seen::default(), Seen::default());
        for i in 0..12 {
            web.add(&client.get(&format!("/web/k{i}")).await);
        }
        let mut posted = 0;
        for i in 0..5u64 {
            let body = "x".repeat(1000 + i as usize);
            posted += body.len() as u64;
            let req = Request::post(format!("/web/post{i}"))
                .header("host", "ringway.test")
                .body(common::full(body))
                .unwrap();
            web.add(&client.send(req).await);
        }
        for key in &failing {
            let resp = client.get(key).await;
            assert_eq!(resp.status, 200, "{key} fails over to a");
            fail.add(&resp);
        }
        for _ in 0..2 {
            let resp = client.get("/nowhere").await;
            assert_eq!(resp.status, 404);
            lost.add(&resp);
        }
        (web, posted, fail, lost)
    });
    let after = inst.settled();
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let mut web_total = 0;
    for up in ["a", "b"] {
        let n = web.requests.get(up).copied().unwrap_or(0) as f64;
        let bytes = web.body_bytes.get(up).copied().unwrap_or(0) as f64;
        let pair = [("pool", "web"), ("upstream", up)];
        let ok = [("pool", "web"), ("upstream", up), ("class", "2xx")];
        assert_eq!(delta("ringway_requests_total", &ok), n, "web/{up}");
        assert_eq!(delta("ringway_request_duration_seconds_count", &pair), n);
        let inf = [("pool", "web"), ("upstream", up), ("le", "+Inf")];
        assert_eq!(delta("ringway_request_duration_seconds_bucket", &inf), n);
        assert_eq!(delta("ringway_response_bytes_total", &pair), bytes);
        assert_eq!(after.get("ringway_ring_points", &pair), 150.0);
        web_total += n as u64;
    }
    assert_eq!(web_total, 17);
    assert_eq!(
        delta("ringway_request_bytes_total", &[("pool", "web")]),
        posted as f64
    );

    let via_a = [("pool", "fail"), ("upstream", "a")];
    let dead = [("pool", "fail"), ("upstream", "c")];
    assert_eq!(
        delta(
            "ringway_requests_total",
            &[("pool", "fail"), ("upstream", "a"), ("class", "2xx")]
        ),
        3.0
    );
    assert_eq!(delta("ringway_upstream_connect_errors_total", &dead), 3.0);
    assert_eq!(delta("ringway_upstream_retries_total", &via_a), 3.0);
    assert_eq!(delta("ringway_upstream_retries_total", &dead), 0.0);
    assert_eq!(delta("ringway_upstream_connect_errors_total", &via_a), 0.0);
    let connect = [("pool", "fail"), ("upstream", "c"), ("phase", "connect")];
    assert_eq!(
        delta("ringway_upstream_timeouts_total", &connect),
        0.0,
        "refused, not timed out"
    );
    assert_eq!(
        delta("ringway_response_bytes_total", &via_a),
        fail.body_bytes["a"] as f64
    );

    let unrouted = [("pool", ""), ("upstream", ""), ("class", "4xx")];
    assert_eq!(delta("ringway_requests_total", &unrouted), 2.0);
    assert_eq!(
        delta(
            "ringway_response_bytes_total",
            &[("pool", ""), ("upstream", "")]
        ),
        lost.body_bytes["-"] as f64
    );
    assert_eq!(after.get("ringway_requests_in_flight", &[]), 0.0);
}

#[test]
fn cluster_config_and_process_metrics_are_exported() {
    let inst = Instance::start();
    let s = eventually("this single node to lead", WAIT, || {
        let s = inst.scrape();
        (s.get("ringway_raft_is_leader", &[]) == 1.0).then_some(s)
    });
    assert!(s.get("ringway_raft_term", &[]) >= 1.0);
    assert_eq!(s.get("ringway_raft_role", &[("role", "leader")]), 1.0);
    assert_eq!(s.get("ringway_raft_role", &[("role", "follower")]), 0.0);
    assert!(s.get("ringway_raft_leader_changes_total", &[]) >= 1.0);
    let s = eventually("the bootstrap entry to apply", WAIT, || {
        let s = inst.scrape();
        (s.get("ringway_raft_applied_index", &[]) >= 2.0).then_some(s)
    });
    assert!(s.get("ringway_raft_commit_index", &[]) >= s.get("ringway_raft_applied_index", &[]));
    assert!(s.get("ringway_raft_storage_sync_seconds_count", &[]) >= 1.0);
    assert!(s.get("ringway_config_last_reload_success_timestamp_seconds", &[]) > 1.6e9);
    assert_eq!(
        s.get("ringway_config_reloads_total", &[("result", "success")]),
        0.0
    );
    assert!(s.get("process_open_fds", &[]) > 0.0);
    assert!(s.get("process_resident_memory_bytes", &[]) > 0.0);
    assert!(s.has("process_cpu_seconds_total"));
    // A group of one has no peers; its one member is this voter.
    assert!(!s.has("ringway_raft_messages_sent_total"));
    assert_eq!(s.get("ringway_raft_members", &[("role", "voter")]), 1.0);
    assert_eq!(s.get("ringway_raft_members", &[("role", "learner")]), 0.0);
    assert_eq!(s.get("ringway_raft_membership", &[("role", "voter")]), 1.0);
    assert_eq!(
        s.get("ringway_raft_membership", &[("role", "learner")]),
        0.0
    );
}

/// The path of `name` on the PATH; a test that needs a missing tool fails and says
/// how to install it (never skips).
pub(crate) fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not on the PATH; install the test tools with \
             scripts/install-test-deps.sh (or run the tests with scripts/test.sh)"
        )
    })
}

#[test]
fn promtool_accepts_the_output() {
    let promtool = tool("promtool");
    let inst = Instance::start();
    // Traffic first, so that every family has samples (and a failover, a 404).
    let proxy = inst.child.addr;
    inst.rt.block_on(async {
        let mut client = Client::connect(proxy).await;
        for path in ["/web/1", "/web/2", "/fail/1", "/fail/2", "/nowhere"] {
            client.get(path).await;
        }
    });
    let text = inst.text();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- the output checked:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// A Prometheus server on 127.0.0.1, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _config: TempFile,
    data: PathBuf,
}

impl Prometheus {
    fn start(bin: PathBuf, target: SocketAddr) -> Prometheus {
        let config = TempFile::new(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: ringway\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        );
        let data = config.path.parent().unwrap().join("tsdb");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _config: config,
            data,
        }
    }

    /// The result vector of an instant query.
    fn query(&self, q: &str) -> Option<Vec<serde_json::Value>> {
        let body = http_get(self.addr, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn a_prometheus_server_scrapes_the_admin_endpoint() {
    let bin = tool("prometheus");
    let inst = Instance::start();
    let server = Prometheus::start(bin, inst.admin);
    let target = inst.admin.to_string();
    // Startup, then the first scrape one interval later: generous for a busy machine.
    eventually(
        "prometheus to scrape ringway with up == 1",
        3 * WAIT,
        || {
            let up = server.query("up")?;
            up.iter()
                .any(|s| s["metric"]["instance"] == target.as_str() && s["value"][1] == "1")
                .then_some(())
        },
    );
    let build = eventually("ringway_build_info in prometheus", WAIT, || {
        server.query("ringway_build_info").filter(|r| !r.is_empty())
    });
    assert_eq!(build[0]["value"][1], "1");
}
