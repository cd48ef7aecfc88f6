//! The `ringway` binary's subcommands, run as a user would run them.

use crate::common;

use std::path::Path;
use std::process::Output;

use http::StatusCode;

use common::*;

fn example() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml")
}

fn run(args: &[&str]) -> Output {
    binary()
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ringway")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_example_and_summarises_its_ring() {
    let out = run(&["check", "--config", example()]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{}{}",
        out.status,
        stdout,
        text(&out.stderr)
    );
    assert!(stdout.contains("config.example.yaml: valid"), "{stdout}");
    assert!(
        stdout.contains("pool web: hosts [*], path_prefix /, hash_key path"),
        "{stdout}"
    );
    let config = ringway::config::Config::load(Path::new(example())).unwrap();
    let ring = ringway::proxy::snapshot::pool_ring(&config.pools[0]);
    let points = ring.points_per_member();
    let upstream_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("upstream "))
        .collect();
    assert_eq!(upstream_lines.len(), 3, "{stdout}");
    for ((id, weight), (line, n)) in [("127.0.0.1:9001", 1), ("127.0.0.1:9002", 2), ("cache-3", 1)]
        .iter()
        .zip(upstream_lines.iter().zip(&points))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], *id, "{line}");
        assert_eq!(words[5], weight.to_string(), "{line}");
        assert_eq!(&words[6..9], ["ring", "points", &n.to_string()], "{line}");
    }
    // Weight 2 owns about twice the points of weight 1.
    assert!(
        points[1] > points[0] * 3 / 2 && points[1] > points[2] * 3 / 2,
        "{points:?}"
    );
}

#[test]
fn check_lists_every_error_with_its_path() {
    let bad = r#"
node:
  id: n1
  data_dir: ./d
listeners:
  - address: 127.0.0.1:8080
pools:
  - name: web
    colour: blue
    upstreams:
      - id: x
        address: 127.0.0.1:9001
      - id: x
        address: 127.0.0.1:9002
      - address: 127.0.0.1:9003
        weight: 0
      - address: not-an-address
  - name: api
    path_prefix: /api
    vnodes: 0
    hash_key: pathx
    upstreams:
      - address: 127.0.0.1:9004
  - name: empty
    path_prefix: /empty
    upstreams: []
  - name: web
    path_prefix: /again
    upstreams:
      - address: 10.0.0.1:80
"#;
    let file = TempFile::new("bad.yaml", bad);
    let out = run(&["check", "--config", file.path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a bad config must fail");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let expected = [
        "pools[0].colour: unknown field",
        "pools[0].upstreams[1].id: upstream id \"x\" is already used by upstreams[0] of this pool",
        "pools[0].upstreams[2].weight: must be at least 1, got 0",
        "pools[0].upstreams[3].address: must be host:port, got \"not-an-address\"",
        "pools[1].vnodes: must be at least 1, got 0",
        "pools[1].hash_key: unknown key part \"pathx\"",
        "pools[2].upstreams: must list at least one upstream",
        "pools[3].name: pool name \"web\" is already used by pools[0]",
    ];
    for e in expected {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains(&format!("{} errors:", expected.len())),
        "exactly the expected errors:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // `run` refuses the same file at start, with the same list.
    let out = run(&["run", "--config", file.path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "run: missing {e:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains(&format!("{} errors:", expected.len())),
        "{stderr}"
    );
}

#[test]
fn broken_yaml_gives_a_clear_error_with_a_line_number() {
    let broken = "node:\n  id: n1\n  data_dir: ./d\nlisteners:\n  - address: 127.0.0.1:8080\npools:\n  - name: web\n    hosts: [\"*\"\n    upstreams:\n";
    let file = TempFile::new("broken.yaml", broken);
    let out = run(&["check", "--config", file.path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a valid config file"), "{stderr}");
    assert!(stderr.contains("line "), "no line number in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_file_is_reported_without_a_panic() {
    let out = run(&["check", "--config", "/nonexistent/ringway.yaml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/ringway.yaml: cannot read"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn route_prints_key_tab_id_lines_matching_the_ring() {
    let keys: Vec<String> = (0..50).map(|i| format!("/users/{i}")).collect();
    let mut args = vec!["route", "--config", example()];
    args.extend(keys.iter().map(String::as_str));
    let out = run(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = ringway::config::Config::load(Path::new(example())).unwrap();
    let pool = &config.pools[0];
    let ring = ringway::proxy::snapshot::pool_ring(pool);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), keys.len());
    let mut ids = std::collections::HashSet::new();
    for (line, key) in lines.iter().zip(&keys) {
        let owner = ring.lookup(ringway::ring::point(key.as_bytes())).unwrap();
        let want = format!("{key}\t{}", pool.upstreams[owner].id);
        assert_eq!(*line, want);
        ids.insert(pool.upstreams[owner].id.clone());
    }
    assert_eq!(ids.len(), 3, "50 keys reach all 3 upstreams");
}

#[test]
fn route_with_an_unknown_pool_fails() {
    let out = run(&["route", "--config", example(), "--pool", "nope", "/k"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no pool named \"nope\"; pools: web"),
        "{stderr}"
    );
}

#[tokio::test]
async fn run_and_echo_serve_requests_and_exit_cleanly_on_sigterm() {
    let echo = Child::spawn(
        &["echo", "--listen", "127.0.0.1:0", "--name", "e1"],
        "echo upstream listening",
        None,
    );
    let yaml = config_yaml(&[PoolSpec::new("web").address("e1", echo.addr, 1)], &[]);
    let mut proxy = Child::run(&yaml);
    let r = get(proxy.addr, "/hello?x=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream(), "e1");
    assert_eq!(r.text(), "e1 GET /hello?x=1\n");
    let status = proxy.terminate();
    assert!(
        status.success(),
        "ringway run exited with {status:?}\n{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("all connections drained"),
        "{}",
        proxy.log()
    );
    drop(echo);
}

// ---------------------------------------------------------------------------------
// Global options, the admin API client (names, TLS), status, dump, completions, logs
// ---------------------------------------------------------------------------------

/// A port free right now, below the ephemeral range, for an admin or cluster address
/// that must be known before the instance starts.
fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn ok_text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs the binary until `f` accepts its output, at most 100 times (an instance may
/// still be electing itself).
fn until(args: &[&str], f: impl Fn(&Output) -> bool) -> Output {
    let mut last = None;
    for _ in 0..100 {
        let out = run(args);
        if f(&out) {
            return out;
        }
        last = Some(out);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = last.unwrap();
    panic!(
        "ringway {args:?} never gave the expected answer\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `ringway run` on `yaml`, written to `dir/ringway.yaml`; returns the child and the
/// config path.
fn start(dir: &crate::tlsutil::Dir, yaml: &str) -> (Child, String) {
    let file = dir.write("ringway.yaml", yaml);
    let path = file.to_str().unwrap().to_owned();
    let child = Child::spawn(&["run", "--config", &path], "ringway listening", None);
    (child, path)
}

#[test]
fn global_options_work_before_and_after_the_subcommand() {
    for args in [
        vec!["check", "--config", example()],
        vec!["--config", example(), "check"],
        vec!["-c", example(), "config", "check"],
        vec!["config", "check", "-c", example(), "--log-level", "warn"],
    ] {
        let stdout = ok_text(&run(&args));
        assert!(
            stdout.contains("config.example.yaml: valid"),
            "{args:?}: {stdout}"
        );
    }
    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("check needs --config FILE"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["check", "-c", example(), "--log-level", "warning"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"warning\" is not a level"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cluster_status_prints_a_table_or_json_reached_by_name_or_file() {
    let dir = crate::tlsutil::Dir::new();
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = free_port();
    let yaml = format!(
        "node: {{id: solo, data_dir: {data}}}\n\
         listeners: [{{address: 127.0.0.1:0}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\"}}\n\
         pools:\n  - name: web\n    upstreams: [{{address: \"{up}\"}}]\n",
        data = crate::tlsutil::yaml_path(&dir.path.join("data")),
        up = up.local_addr().unwrap(),
    );
    let (_child, config) = start(&dir, &yaml);
    let by_name = format!("localhost:{admin}");
    // The subcommand's options after it, and before it; a host name for --admin.
    let json = until(&["cluster", "status", "--json", "--admin", &by_name], |o| {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|v| v["role"] == "leader")
    });
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["id"], "solo");
    let table = ok_text(&run(&["cluster", "status", "-c", &config]));
    assert!(
        table.starts_with("node      solo\nrole      leader\nleader    solo\n"),
        "{table}"
    );
    let header = table
        .lines()
        .find(|l| l.starts_with("MEMBER"))
        .expect(&table);
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["MEMBER", "ROLE", "LEADER", "MATCHED", "LAG"]
    );
    let row = table.lines().find(|l| l.starts_with("solo")).expect(&table);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["solo", "voter", "*"], "{table}");
    assert_eq!(
        ok_text(&run(&["-c", &config, "cluster", "status"]))
            .lines()
            .next(),
        Some("node      solo")
    );
    // Nothing listens on a port free a moment ago: a clear error naming the address.
    let closed = format!("localhost:{}", free_port());
    let out = run(&["cluster", "status", "--admin", &closed]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to http://{closed}")),
        "{err}"
    );
    // HTTPS to a plain admin API says what is probably wrong.
    let ca = dir.ca("ca", &crate::tlsutil::Ca::new("unused CA"));
    let https = format!("https://localhost:{admin}");
    let out = run(&[
        "cluster",
        "status",
        "--admin",
        &https,
        "--cacert",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("(is the admin API plain HTTP? give --admin http://...)"),
        "{err}"
    );
}

/// An instance of a one-member cluster with mutual TLS between members and its admin
/// API over TLS, both with a certificate for `a.test` and 127.0.0.1 from `ca`.
struct TlsInstance {
    _child: Child,
    dir: crate::tlsutil::Dir,
    config: String,
    admin: u16,
}

fn tls_instance() -> TlsInstance {
    use crate::tlsutil::{yaml_path, Ca, Dir};
    let ca = Ca::new("cluster CA");
    let dir = Dir::new();
    let ca_file = dir.ca("ca", &ca);
    let other = Ca::new("someone else's CA");
    dir.ca("other-ca", &other);
    let (cert, key) = dir.leaf("n1", &ca.issue(&["a.test", "127.0.0.1"]));
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let token = dir.write("admin.token", "token-of-n1\n");
    dir.write("wrong.token", "not-the-token\n");
    let (admin, raft) = (free_port(), free_port());
    let yaml = format!(
        "node: {{id: n1, data_dir: {data}}}\n\
         cluster:\n  address: \"127.0.0.1:{raft}\"\n  peers: {{n1: \"127.0.0.1:{raft}\"}}\n  tls: {{ca_file: {ca}, cert: {c}, key: {k}}}\n\
         listeners: [{{address: 127.0.0.1:0}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {t}, tls: {{cert: {c}, key: {k}}}}}\n\
         pools:\n  - name: web\n    upstreams: [{{id: u1, address: \"{up}\"}}, {{id: u2, address: \"127.0.0.1:9\"}}]\n",
        data = yaml_path(&dir.path.join("data")),
        ca = yaml_path(&ca_file),
        c = yaml_path(&cert),
        k = yaml_path(&key),
        t = yaml_path(&token),
        up = up.local_addr().unwrap(),
    );
    let (child, config) = start(&dir, &yaml);
    TlsInstance {
        _child: child,
        dir,
        config,
        admin,
    }
}

#[test]
fn cluster_status_and_route_live_speak_tls_to_a_tls_admin_api() {
    let t = tls_instance();
    let ca = t.dir.path.join("ca.crt").display().to_string();
    let other_ca = t.dir.path.join("other-ca.crt").display().to_string();
    let https = |host: &str| format!("https://{host}:{}", t.admin);
    // From the file alone: https (admin.tls), trusting the cluster CA, name 127.0.0.1.
    let out = until(&["cluster", "status", "--json", "-c", &t.config], |o| {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|v| v["role"] == "leader")
    });
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "n1", "{v}");
    // --cacert on its own, with the address given as a URL.
    let ok = run(&[
        "cluster",
        "status",
        "--admin",
        &https("127.0.0.1"),
        "--cacert",
        &ca,
    ]);
    assert!(ok_text(&ok).starts_with("node      n1\n"));
    // --cacert with no scheme means https.
    let plain_addr = format!("127.0.0.1:{}", t.admin);
    ok_text(&run(&[
        "cluster",
        "status",
        "--admin",
        &plain_addr,
        "--cacert",
        &ca,
    ]));

    let refused = |args: &[&str], why: &str| {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} must fail: {err}");
        assert!(err.contains(why), "{args:?}: expected {why:?} in: {err}");
    };
    // --cacert replaces the file's CA: a CA that did not sign the certificate fails.
    refused(
        &["cluster", "status", "-c", &t.config, "--cacert", &other_ca],
        "UnknownIssuer",
    );
    // No file and no --cacert: the system's store, which does not know the test CA.
    refused(
        &["cluster", "status", "--admin", &https("127.0.0.1")],
        "UnknownIssuer",
    );
    // The name is verified: the certificate is for a.test and 127.0.0.1, not localhost.
    refused(
        &[
            "cluster",
            "status",
            "-c",
            &t.config,
            "--admin",
            &https("localhost"),
        ],
        "certificate not valid for name \"localhost\"",
    );
    // Plain HTTP to a TLS port gets no HTTP answer.
    let http = format!("http://127.0.0.1:{}", t.admin);
    refused(
        &["cluster", "status", "-c", &t.config, "--admin", &http],
        "(does the admin API have admin.tls? give --admin https://... or --cacert)",
    );
    refused(
        &["cluster", "status", "--admin", &http, "--cacert", &ca],
        "--cacert is for https",
    );
    let missing = t.dir.path.join("missing.crt").display().to_string();
    refused(
        &[
            "cluster",
            "status",
            "--admin",
            &https("127.0.0.1"),
            "--cacert",
            &missing,
        ],
        "missing.crt",
    );

    // A change carries the file's token over TLS: the instance weighs the request
    // (no such member) rather than refusing the token; another token is refused.
    let out = run(&["cluster", "remove-node", "-c", &t.config, "ghost"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} answered 4", https("127.0.0.1"))),
        "{err}"
    );
    assert!(!err.contains("answered 401"), "{err}");
    let wrong = t.dir.path.join("wrong.token").display().to_string();
    refused(
        &[
            "cluster",
            "remove-node",
            "-c",
            &t.config,
            "--token-file",
            &wrong,
            "ghost",
        ],
        "answered 401",
    );

    // route --live over TLS agrees with the file's ring.
    let keys: Vec<String> = (0..20).map(|i| format!("/k/{i}")).collect();
    let mut live = vec!["route", "--live", "-c", &t.config];
    live.extend(keys.iter().map(String::as_str));
    let mut file = vec!["route", "-c", &t.config];
    file.extend(keys.iter().map(String::as_str));
    let from_file = ok_text(&run(&file));
    assert_eq!(ok_text(&run(&live)), from_file);
    assert!(
        from_file.contains("u1") && from_file.contains("u2"),
        "{from_file}"
    );
}

#[test]
fn config_dump_fills_in_every_default_and_check_accepts_it_again() {
    use crate::tlsutil::{yaml_path, Ca, Dir};
    let dir = Dir::new();
    let ca = Ca::new("dump CA");
    let ca_file = yaml_path(&dir.ca("ca", &ca));
    let (cert, key) = dir.leaf("srv", &ca.issue(&["a.test"]));
    let (c, k) = (yaml_path(&cert), yaml_path(&key));
    let token = yaml_path(&dir.write("token", "secret\n"));
    // Every section, with values away from their defaults where the file allows.
    let rich = format!(
        "node: {{id: n1, data_dir: /var/lib/ringway-test}}\n\
         cluster:\n  address: 127.0.0.1:7001\n  peers: {{n1: 127.0.0.1:7001, n2: \"[::1]:7002\"}}\n  \
           heartbeat_ms: 50\n  election_timeout_ms: 400\n  join: true\n  compact_threshold: 77\n  \
           tls: {{ca_file: {ca_file}, cert: {c}, key: {k}}}\n\
         listeners:\n  - address: 127.0.0.1:8443\n    tls: {{certificates: [{{cert: {c}, key: {k}}}], handshake_timeout_ms: 1234}}\n    \
           headers: {{via: false, traceparent: false}}\n  - address: \"[::1]:8080\"\n\
         admin: {{address: 127.0.0.1:9480, token_file: {token}, tls: {{cert: {c}, key: {k}}}}}\n\
         limits: {{max_connections: 99, max_header_bytes: 16384, header_read_timeout_ms: 1500, \
           keep_alive_timeout_ms: 2500, request_body_timeout_ms: 3500, shutdown_grace_ms: 4500}}\n\
         pools:\n  - name: api\n    hosts: [\"api.test\", \"*.api.test\"]\n    path_prefix: /v1\n    \
           hash_key: \"{{header:x-tenant}}/{{path}}\"\n    on_missing_key: reject\n    vnodes: 40\n    max_attempts: 2\n    \
           connect_timeout_ms: 700\n    response_header_timeout_ms: 800\n    idle_timeout_ms: 900\n    \
           max_idle_per_upstream: 3\n    hash_balance_factor: 125\n    \
           tls: {{ca_file: {ca_file}, server_name: up.test, client_cert: {c}, client_key: {k}}}\n    \
           health:\n      passive: {{consecutive_failures: 0, failure_rate_percent: 20, window_ms: 5000, \
             min_requests: 7, count: [connect, 5xx], local_suspicion_ms: 0, count_grpc: [INTERNAL, 14]}}\n      \
             active: {{path: /healthz, interval_ms: 1000, timeout_ms: 300, expected_statuses: [200, \"2xx\", \"301-302\"], rise: 4, fall: 5}}\n      \
             breaker: {{base_ejection_ms: 1000, max_ejection_ms: 9000, jitter_percent: 0, half_open_successes: 2, \
               probe_interval_ms: 250, min_reporters: 2, report_window_ms: 6000, max_ejection_percent: 30, panic_threshold_percent: 20}}\n    \
           upstreams:\n      - {{id: a, address: \"10.0.0.1:80\", weight: 3}}\n      - {{address: \"backend.test:8080\"}}\n      - {{address: \"[::1]:81\"}}\n  \
           - name: web\n    upstreams: [{{address: 127.0.0.1:9001}}]\n"
    );
    let rich_file = dir.write("rich.yaml", &rich);
    let example_dump = ok_text(&run(&["config", "dump", "-c", example()]));
    for (source, path) in [
        (rich.clone(), rich_file.clone()),
        (
            std::fs::read_to_string(example()).unwrap(),
            std::path::PathBuf::from(example()),
        ),
    ] {
        // As `run` and `check` load it: relative paths resolved from the file's dir.
        let original = ringway::config::Config::from_file_text(&path, &source).unwrap();
        let dumped = ok_text(&run(&["config", "dump", "-c", path.to_str().unwrap()]));
        assert!(
            dumped.starts_with("# The configuration in force from "),
            "{dumped}"
        );
        let again = ringway::config::Config::parse(&dumped)
            .unwrap_or_else(|e| panic!("the dump does not load: {e}\n{dumped}"));
        assert_eq!(
            again, original,
            "the dump loads to another config:\n{dumped}"
        );
        let dump_file = dir.write("dumped.yaml", &dumped);
        ok_text(&run(&["check", "-c", dump_file.to_str().unwrap()]));
        let twice = ok_text(&run(&["config", "dump", "-c", dump_file.to_str().unwrap()]));
        assert_eq!(
            twice.lines().skip(1).collect::<Vec<_>>(),
            dumped.lines().skip(1).collect::<Vec<_>>(),
            "a dump of the dump is the dump"
        );
    }
    // Defaults the example leaves out are written.
    for default in [
        "max_attempts: 3",
        "connect_timeout_ms: 2000",
        "max_connections: 10000",
        "consecutive_failures: 5",
        "forwarded: true",
        "base_ejection_ms: 30000",
    ] {
        assert!(
            example_dump.contains(default),
            "no {default:?} in:\n{example_dump}"
        );
    }
    let out = run(&["config", "dump", "-c", "/nonexistent/ringway.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/ringway.yaml: cannot read"));
}

#[test]
fn completions_and_man_pages_are_generated() {
    let dir = crate::tlsutil::Dir::new();
    for (shell, marker) in [
        ("bash", "complete -F _ringway"),
        ("zsh", "#compdef ringway"),
        ("fish", "complete -c ringway"),
    ] {
        let script = ok_text(&run(&["completions", shell]));
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["cluster", "add-node", "log-level", "cacert"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // Bash loads the script and registers it.
    let script = dir.write("ringway.bash", &ok_text(&run(&["completions", "bash"])));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p ringway",
            script.display()
        ))
        .output()
        .expect("run bash");
    assert!(ok_text(&out).contains("ringway"));
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is refused");

    let page = ok_text(&run(&["man"]));
    assert!(page.contains(".TH ringway 1"), "{page}");
    for word in ["cluster", "completions", "log\\-level"] {
        assert!(page.contains(word), "the page lacks {word}:\n{page}");
    }
    let pages = dir.path.join("man");
    ok_text(&run(&["man", "--out-dir", pages.to_str().unwrap()]));
    for name in [
        "ringway.1",
        "ringway-run.1",
        "ringway-cluster-status.1",
        "ringway-config-dump.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}: {text}");
    }
}

/// Waits (bounded) until `path` holds `marker`; returns its bytes.
fn file_with(path: &std::path::Path, marker: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let bytes = std::fs::read(path).unwrap_or_default();
        if String::from_utf8_lossy(&bytes).contains(marker) {
            return bytes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{marker:?} never appeared in {}: {}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `ringway echo` with its log written to a file and `env` set; the log once it says
/// it listens.
fn echo_log(args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let dir = crate::tlsutil::Dir::new();
    let log = dir.path.join("log");
    let mut cmd = binary();
    cmd.args(["echo", "--listen", "127.0.0.1:0", "--name", "e"])
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ringway echo");
    let bytes = file_with(&log, "echo upstream listening");
    let _ = child.kill();
    let _ = child.wait();
    bytes
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let log = echo_log(&[], &[]);
    assert!(!log.contains(&0x1b), "{}", String::from_utf8_lossy(&log));
    assert!(String::from_utf8_lossy(&log).contains(" INFO "));
    // --log-level beats RUST_LOG: the info line shows though RUST_LOG asks for errors.
    let log = echo_log(&["--log-level", "info"], &[("RUST_LOG", "error")]);
    assert!(!log.contains(&0x1b));
    // JSON lines.
    let log = echo_log(&["--log-format", "json"], &[]);
    let line = String::from_utf8_lossy(&log);
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(first["level"], "INFO", "{line}");
}

/// The output of `ringway echo` run on a terminal (`script` gives it one), up to
/// the line saying it listens.
fn echo_on_a_terminal(no_color: Option<&str>) -> String {
    use std::io::Read;
    let command = format!(
        "exec {} echo --listen 127.0.0.1:0 --name e",
        env!("CARGO_BIN_EXE_ringway")
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-f", "-e", "-c", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd
        .spawn()
        .expect("run script (util-linux: apt-get install bsdutils)");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("echo upstream listening") {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(WAIT);
    // Closing the terminal hangs the echo server up.
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let seen = String::from_utf8_lossy(&seen.expect("echo never said it listens")).into_owned();
    assert!(seen.contains("echo upstream listening"), "{seen}");
    seen
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    assert!(echo_on_a_terminal(None).contains("\x1b["));
    assert!(!echo_on_a_terminal(Some("1")).contains('\x1b'));
    // An empty NO_COLOR does not count, as no-color.org says.
    assert!(echo_on_a_terminal(Some("")).contains("\x1b["));
}
