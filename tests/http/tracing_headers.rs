//! Request ids and W3C trace context through the proxy (real sockets on 127.0.0.1),
//! and the log formats of the binary: JSON lines with `--log-format json`, levels from
//! `RUST_LOG`, the request id in the access log.

use crate::common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    binary, config_yaml, get_req, head_handler, Client, PoolSpec, Resp, SeenHead, TempFile,
    TestProxy, Upstream, WAIT,
};
use http::Request;
use ringway::proxy::headers::valid_traceparent;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A proxy over one upstream that answers with the request head it received; only
/// `/app` is routed (anything else is ringway's own 404).
async fn setup() -> (TestProxy, Upstream) {
    let up = Upstream::start("head", head_handler("head")).await;
    let proxy = TestProxy::start(&config_yaml(
        &[PoolSpec::new("app").prefix("/app").upstream(&up)],
        &[],
    ))
    .await;
    (proxy, up)
}

fn with_headers(path: &str, headers: &[(&str, &str)]) -> Request<common::Body> {
    let mut req = get_req(path);
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

/// The request as the upstream saw it, and the response's `X-Request-Id`.
async fn exchange(client: &mut Client, headers: &[(&str, &str)]) -> (SeenHead, String, Resp) {
    let resp = client.send(with_headers("/app/x", headers)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = SeenHead::parse(&resp.text());
    let id = resp.all("x-request-id");
    assert_eq!(id.len(), 1, "exactly one x-request-id in the response");
    (seen, id[0].clone(), resp)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn a_valid_request_id_is_kept_passed_upstream_and_returned() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    for id in [
        "abc-123",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        &"z".repeat(128),
    ] {
        let (seen, returned, _) = exchange(&mut client, &[("x-request-id", id)]).await;
        assert_eq!(seen.one("x-request-id"), Some(id));
        assert_eq!(returned, id);
    }
}

#[tokio::test]
async fn a_missing_request_id_is_generated_unique_and_the_same_both_ways() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let mut ids = BTreeSet::new();
    for _ in 0..100 {
        let (seen, returned, _) = exchange(&mut client, &[]).await;
        assert!(is_hex(&returned, 32), "{returned:?}");
        assert_eq!(seen.one("x-request-id"), Some(returned.as_str()));
        ids.insert(returned);
    }
    assert_eq!(ids.len(), 100, "every generated id is new");
}

#[tokio::test]
async fn an_invalid_request_id_is_replaced() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let long = "a".repeat(129);
    for bad in ["has space", "tab\there", long.as_str()] {
        let (seen, returned, _) = exchange(&mut client, &[("x-request-id", bad)]).await;
        assert!(is_hex(&returned, 32), "{bad:?} replaced by {returned:?}");
        assert_eq!(seen.one("x-request-id"), Some(returned.as_str()));
    }
    // Two ids are no id: replaced by one.
    let (seen, returned, _) = exchange(
        &mut client,
        &[("x-request-id", "one"), ("x-request-id", "two")],
    )
    .await;
    assert!(is_hex(&returned, 32));
    assert_eq!(seen.all("x-request-id"), [returned.as_str()]);
}

#[tokio::test]
async fn the_request_id_survives_being_named_in_connection() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let headers = [("x-request-id", "kept-1"), ("connection", "x-request-id")];
    let (seen, returned, _) = exchange(&mut client, &headers).await;
    assert_eq!(returned, "kept-1");
    assert_eq!(seen.one("x-request-id"), Some("kept-1"));
}

#[tokio::test]
async fn ringway_s_own_answers_carry_the_request_id() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let resp = client
        .send(with_headers("/elsewhere", &[("x-request-id", "lost-1")]))
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.all("x-request-id"), ["lost-1"]);
    let resp = client.send(with_headers("/elsewhere", &[])).await;
    assert!(is_hex(&resp.all("x-request-id")[0], 32));
}

#[tokio::test]
async fn a_valid_traceparent_passes_untouched_with_its_tracestate() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let headers = [("traceparent", TRACEPARENT), ("tracestate", state)];
    let (seen, _, _) = exchange(&mut client, &headers).await;
    assert_eq!(seen.one("traceparent"), Some(TRACEPARENT));
    assert_eq!(seen.one("tracestate"), Some(state));
    // A later version with more fields is passed on as well.
    let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later";
    let (seen, _, _) = exchange(&mut client, &[("traceparent", future)]).await;
    assert_eq!(seen.one("traceparent"), Some(future));
}

#[tokio::test]
async fn a_missing_traceparent_starts_a_trace() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let mut traces = BTreeSet::new();
    for _ in 0..20 {
        let (seen, _, _) = exchange(&mut client, &[]).await;
        let tp = seen.one("traceparent").expect("a traceparent is started");
        assert!(valid_traceparent(tp.as_bytes()), "{tp:?}");
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp:?}");
        traces.insert(tp[3..35].to_owned());
    }
    assert_eq!(traces.len(), 20, "every started trace has its own id");
    // A tracestate without its traceparent is dropped.
    let (seen, _, _) = exchange(&mut client, &[("tracestate", "orphan=1")]).await;
    assert!(seen.one("traceparent").is_some());
    assert_eq!(seen.one("tracestate"), None);
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_and_its_tracestate_dropped() {
    let (proxy, _up) = setup().await;
    let mut client = Client::connect(proxy.addr).await;
    let upper = TRACEPARENT.to_uppercase();
    for bad in [
        "garbage",
        upper.as_str(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        let headers = [("traceparent", bad), ("tracestate", "congo=t61rcWkgMzE")];
        let (seen, _, _) = exchange(&mut client, &headers).await;
        let tp = seen.one("traceparent").unwrap();
        assert_ne!(tp, bad);
        assert!(
            valid_traceparent(tp.as_bytes()),
            "{bad:?} replaced by {tp:?}"
        );
        assert_eq!(seen.one("tracestate"), None, "{bad:?}");
    }
    // Two traceparents are replaced by one.
    let headers = [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)];
    let (seen, _, _) = exchange(&mut client, &headers).await;
    let tp = seen.one("traceparent").unwrap();
    assert_ne!(tp, TRACEPARENT);
}

/// A listener with every optional header switched off adds nothing: the upstream sees
/// what the client sent (an id, an invalid traceparent and its tracestate untouched),
/// and the response carries no `Via` and no `X-Request-Id` of ringway's.
#[tokio::test]
async fn a_listener_with_the_header_work_off_adds_nothing() {
    let up = Upstream::start("head", head_handler("head")).await;
    let yaml = config_yaml(&[PoolSpec::new("app").prefix("/app").upstream(&up)], &[])
        .replace(
            "  - address: 127.0.0.1:0\n",
            "  - address: 127.0.0.1:0\n    headers: {forwarded: false, via: false, request_id: false, traceparent: false}\n",
        );
    let config = common::parse_config(&yaml);
    assert!(!config.listeners[0].headers.via, "the file switched it off");
    let proxy = TestProxy::start_with(config).await;
    let mut client = Client::connect(proxy.addr).await;

    let resp = client.send(with_headers("/app/x", &[])).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = SeenHead::parse(&resp.text());
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "x-request-id",
        "traceparent",
    ] {
        assert_eq!(seen.one(name), None, "{name} added upstream");
    }
    // The upstream's own Via passes; ringway adds none.
    assert_eq!(resp.all("via"), ["1.1 origin"], "via on the response");
    assert!(
        resp.all("x-request-id").is_empty(),
        "x-request-id on the response"
    );
    assert!(
        seen.one("host").is_some(),
        "Host still reaches the upstream"
    );

    let sent = [
        ("x-request-id", "client-1"),
        ("traceparent", "garbage"),
        ("tracestate", "congo=1"),
        ("x-forwarded-for", "10.1.1.1"),
    ];
    let resp = client.send(with_headers("/app/y", &sent)).await;
    let seen = SeenHead::parse(&resp.text());
    for (name, value) in sent {
        assert_eq!(seen.one(name), Some(value), "{name} passes unchanged");
    }
    assert!(resp.all("x-request-id").is_empty());
}

#[tokio::test]
async fn http2_requests_get_the_same_headers() {
    let (proxy, _up) = setup().await;
    let mut h2 = common::h2_client(proxy.addr).await;
    let req = Request::get("http://ringway.test/app/h2")
        .header("x-request-id", "h2-id")
        .header("traceparent", TRACEPARENT)
        .body(common::empty())
        .unwrap();
    let resp = common::collect(h2.send_request(req).await.unwrap()).await;
    assert_eq!(resp.all("x-request-id"), ["h2-id"]);
    let seen = SeenHead::parse(&resp.text());
    assert_eq!(seen.one("x-request-id"), Some("h2-id"));
    assert_eq!(seen.one("traceparent"), Some(TRACEPARENT));
}

// ---------------------------------------------------------------------------------
// Logs of the binary
// ---------------------------------------------------------------------------------

/// A `ringway run` with a given log format and `RUST_LOG`, its stderr collected.
struct Logged {
    child: std::process::Child,
    listen: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _config: TempFile,
    _up: Upstream,
}

impl Logged {
    async fn start(format: &str, rust_log: &str) -> Logged {
        let up = Upstream::start("head", head_handler("head")).await;
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let yaml = config_yaml(&[PoolSpec::new("app").upstream(&up)], &[])
            .replace("127.0.0.1:0", &listen.to_string());
        let config = TempFile::new("ringway.yaml", &yaml);
        let mut child = binary()
            .args(["--log-format", format, "run", "--config"])
            .arg(&config.path)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringway");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let logged = Logged {
            child,
            listen,
            log,
            reader: Some(reader),
            _config: config,
            _up: up,
        };
        logged.wait_listening().await;
        logged
    }

    /// Connects until the listener answers (no log line is needed for that).
    async fn wait_listening(&self) {
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(self.listen).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "never listened: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a line containing `needle`.
    async fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?}: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit: every line is written by then.
    fn stop(&mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader ends at the pipe's end of file, with every line read.
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        self.lines()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let mut ringway = Logged::start("json", "info").await;
    let resp = common::send(
        ringway.listen,
        with_headers("/j", &[("x-request-id", "json-1")]),
    )
    .await;
    assert_eq!(resp.status, 200);
    let line = ringway.line_with("json-1").await;
    let access: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(access["target"], "ringway::access");
    assert_eq!(access["level"], "INFO");
    let fields = &access["fields"];
    assert_eq!(fields["request_id"], "json-1");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["pool"], "app");
    assert_eq!(fields["upstream"], "head");
    let trace = fields["trace_id"].as_str().unwrap();
    assert!(is_hex(trace, 32), "{trace:?}");
    for line in ringway.stop() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_the_request_id_and_rust_log_sets_levels() {
    let mut ringway = Logged::start("text", "info").await;
    let resp = common::send(
        ringway.listen,
        with_headers("/t", &[("x-request-id", "text-1")]),
    )
    .await;
    assert_eq!(resp.status, 200);
    let line = ringway.line_with("request_id=\"text-1\"").await;
    assert!(
        line.contains("ringway::access") && line.contains("status=200"),
        "{line}"
    );
    assert!(
        !line.trim_start().starts_with('{'),
        "text, not JSON: {line}"
    );
    ringway.stop();

    // RUST_LOG=warn: neither the access log nor any other info line.
    let mut quiet = Logged::start("text", "warn").await;
    let resp = common::send(
        quiet.listen,
        with_headers("/q", &[("x-request-id", "quiet-1")]),
    )
    .await;
    assert_eq!(resp.status, 200);
    let lines = quiet.stop();
    assert!(
        lines.iter().all(|l| !l.contains("INFO")),
        "RUST_LOG=warn still logged info: {lines:?}"
    );
    // And RUST_LOG=...,ringway::access=off turns only the access log off.
    let mut no_access = Logged::start("text", "info,ringway::access=off").await;
    common::send(
        no_access.listen,
        with_headers("/n", &[("x-request-id", "off-1")]),
    )
    .await;
    let lines = no_access.stop();
    assert!(
        lines.iter().any(|l| l.contains("ringway listening")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("off-1")), "{lines:?}");
}
