//! The access log of a real `ringway run` process, in each format the `access_log`
//! section offers: the fields a text line carries are the ones listed; JSON and
//! combined lines go to standard output and read as those formats do; turned off (by
//! the file or by `RUST_LOG`), no line is written.

use crate::common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, config_yaml, head_handler, PoolSpec, TempFile, Upstream, WAIT};

/// A `ringway run` whose stdout and stderr lines are collected, in front of one
/// upstream named `up` (pool `app`: host `shop.test`, every path); `section` is
/// appended to its config.
struct Logged {
    child: std::process::Child,
    listen: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    config: TempFile,
    _up: Upstream,
}

fn collect(
    from: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Logged {
    async fn start(section: &str, rust_log: &str) -> Logged {
        let up = Upstream::start("up", head_handler("up")).await;
        let listen = SocketAddr::from(([127, 0, 0, 1], crate::procs::free_port()));
        let yaml = config_yaml(
            &[PoolSpec::new("app").hosts(&["shop.test"]).upstream(&up)],
            &[],
        )
        .replace("127.0.0.1:0", &listen.to_string())
            + section;
        let config = TempFile::new("ringway.yaml", &yaml);
        let mut child = binary()
            .args(["run", "--config"])
            .arg(&config.path)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringway");
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        let logged = Logged {
            child,
            listen,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            config,
            _up: up,
        };
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "never listened: {:?}",
                logged.err()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        logged
    }

    fn out(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn err(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    async fn out_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.out().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no stdout line with {needle:?}; stdout {:?}, stderr {:?}",
                self.out(),
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    async fn err_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.err().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?}: {:?}",
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit and for both pipes to end.
    fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        for reader in self.readers.drain(..) {
            reader.join().expect("pipe reader");
        }
    }

    /// One HTTP/1.1 request for host `shop.test:8080` with a user agent and a referer;
    /// the status and the body's length.
    async fn request(&self, target: &str, id: &str) -> (u16, usize) {
        self.request_to("shop.test:8080", target, id).await
    }

    async fn request_to(&self, host: &str, target: &str, id: &str) -> (u16, usize) {
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: probe/1.0 (\"x\")\r\n\
             Referer: https://ref.test/page\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
        );
        let raw = common::raw(self.listen, head.as_bytes()).await;
        let resp = common::RawResponse::parse(&raw);
        (resp.status, resp.body.len())
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_on_stdout_read_as_apache_and_nginx_write_them() {
    let mut ringway = Logged::start("access_log:\n  format: combined\n", "info").await;
    let (status, bytes) = ringway.request("/shop/item?id=7&x=a%20b", "c-1").await;
    assert_eq!(status, 200);
    let line = ringway.out_line("/shop/item").await;
    // 127.0.0.1 - - [02/Dec/2026:08:30:05 +0000] "GET /shop/item?id=7&x=a%20b HTTP/1.1" 200 N "https://ref.test/page" "probe/1.0 (\x22x\x22)"
    let (ip, rest) = line.split_once(" - - [").expect("IP - - [TIME]");
    assert_eq!(ip, "127.0.0.1", "{line}");
    let (time, rest) = rest.split_once("] ").expect("] after the time");
    let (date, zone) = time.split_once(' ').expect("time and zone");
    assert_eq!(zone, "+0000", "{line}");
    let parts: Vec<&str> = date.split(['/', ':']).collect();
    assert_eq!(parts.len(), 6, "dd/Mon/yyyy:HH:MM:SS: {line}");
    assert!(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .contains(&parts[1])
    );
    assert_eq!(
        rest,
        format!(
            "\"GET /shop/item?id=7&x=a%20b HTTP/1.1\" 200 {bytes} \"https://ref.test/page\" \
             \"probe/1.0 (\\x22x\\x22)\""
        ),
        "{line}"
    );
    // A request no pool takes is logged too, with ringway's own answer.
    let (status, _) = ringway.request_to("other.test", "/", "c-2").await;
    assert_eq!(status, 404);
    // The last lines are written before the process exits.
    ringway.stop();
    assert_eq!(
        ringway.out().len(),
        2,
        "one line per request: {:?}",
        ringway.out()
    );
    // Nothing of the access log goes through the process log in this format.
    assert!(
        ringway.err().iter().all(|l| !l.contains("ringway::access")),
        "{:?}",
        ringway.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_listed_fields_in_order() {
    let section = "access_log:\n  format: json\n  fields: [client_ip, host, method, path, query, \
                   status, bytes, user_agent, referer, upstream, duration_ms, request_id, fault]\n";
    let ringway = Logged::start(section, "info").await;
    let (status, bytes) = ringway.request("/a/b?q=1", "j-1").await;
    assert_eq!(status, 200);
    let line = ringway.out_line("j-1").await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    // In the order listed (serde_json's map would sort them: read the line itself).
    let keys = [
        "time",
        "client_ip",
        "host",
        "method",
        "path",
        "query",
        "status",
        "bytes",
        "user_agent",
        "referer",
        "upstream",
        "duration_ms",
        "request_id",
        "fault",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| {
            line.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("no {k}: {line}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "not in the listed order: {line}"
    );
    assert_eq!(v.as_object().unwrap().len(), keys.len(), "{line}");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["host"], "shop.test:8080");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/a/b");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], bytes as u64);
    assert_eq!(v["user_agent"], "probe/1.0 (\"x\")");
    assert_eq!(v["referer"], "https://ref.test/page");
    assert_eq!(v["upstream"], "up");
    assert!(
        v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    assert_eq!(v["fault"], serde_json::Value::Null);
    assert!(
        v["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{line}"
    );

    // A request without a query or a pool: the query is null, the fault named.
    let (status, _) = ringway.request_to("other.test", "/", "j-2").await;
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&ringway.out_line("j-2").await).unwrap();
    assert_eq!(v["query"], serde_json::Value::Null);
    assert_eq!(v["status"], 404);
    assert_eq!(v["upstream"], serde_json::Value::Null);
    assert!(v["fault"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_carry_only_the_listed_fields() {
    let section =
        "access_log:\n  fields: [client_ip, host, query, user_agent, status, request_id]\n";
    let ringway = Logged::start(section, "info").await;
    let (status, _) = ringway.request("/t?k=v", "t-1").await;
    assert_eq!(status, 200);
    let line = ringway.err_line("request_id=\"t-1\"").await;
    assert!(line.contains("ringway::access"), "{line}");
    for field in [
        "client_ip=127.0.0.1",
        "host=\"shop.test:8080\"",
        "query=\"k=v\"",
        "user_agent=\"probe/1.0 (\\\"x\\\")\"",
        "status=200",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    for absent in ["method=", "path=", "upstream=", "duration_ms=", "referer="] {
        assert!(
            !line.contains(absent),
            "{absent} not listed but written: {line}"
        );
    }
    assert!(
        ringway.out().is_empty(),
        "text goes to the process log: {:?}",
        ringway.out()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_text_line_names_client_host_query_and_agent() {
    let ringway = Logged::start("", "info").await;
    ringway.request("/d?z=1", "d-1").await;
    let line = ringway.err_line("request_id=\"d-1\"").await;
    for field in [
        "client_ip=127.0.0.1",
        "method=GET",
        "host=\"shop.test:8080\"",
        "path=\"/d\"",
        "query=\"z=1\"",
        "status=200",
        "upstream=\"up\"",
        "user_agent=",
        "duration_ms=",
        "bytes=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_turned_off_writes_nothing() {
    // Off in the file: neither stdout nor the process log get a line.
    let mut off = Logged::start(
        "access_log:\n  enabled: false\n  format: combined\n",
        "info",
    )
    .await;
    off.request("/x", "off-1").await;
    off.stop();
    assert!(off.out().is_empty(), "{:?}", off.out());
    assert!(
        off.err().iter().any(|l| l.contains("ringway listening")),
        "{:?}",
        off.err()
    );
    assert!(
        off.err().iter().all(|l| !l.contains("off-1")),
        "{:?}",
        off.err()
    );

    // Off through RUST_LOG, whatever the format.
    let mut filtered =
        Logged::start("access_log:\n  format: json\n", "info,ringway::access=off").await;
    filtered.request("/x", "off-2").await;
    filtered.stop();
    assert!(filtered.out().is_empty(), "{:?}", filtered.out());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_file_changes_the_format_at_once() {
    let ringway = Logged::start("", "info").await;
    ringway.request("/before", "r-1").await;
    ringway.err_line("request_id=\"r-1\"").await;
    assert!(ringway.out().is_empty(), "{:?}", ringway.out());
    let path = ringway.config.path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}access_log:\n  format: combined\n")).unwrap();
    ringway.err_line("config reloaded").await;
    ringway.request("/after", "r-2").await;
    let line = ringway.out_line("/after").await;
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        ringway.err().iter().all(|l| !l.contains("r-2")),
        "still written as text: {:?}",
        ringway.err()
    );
}
