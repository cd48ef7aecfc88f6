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
