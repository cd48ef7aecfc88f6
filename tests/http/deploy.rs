//! The files under `deploy/` against the real thing: `promtool` checks the Prometheus
//! rules and runs their unit tests; every ringway metric the rules and the Grafana
//! dashboard name appears on the `/metrics` of a real three-instance cluster; and a
//! real Prometheus server scraping that cluster evaluates every rule without error
//! and accepts every dashboard query.

use crate::metrics::tool;
use crate::procs;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn rules_file() -> PathBuf {
    deploy("prometheus/rules.yml")
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let dir = deploy("prometheus");
    let (ok, out) = promtool(&["check", "rules", "rules.yml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "rules.test.yml"], &dir);
    assert!(ok, "promtool test rules:\n{out}");
    // The unit tests cover at least the leader-lost and error-ratio alerts.
    let tests = std::fs::read_to_string(dir.join("rules.test.yml")).unwrap();
    for alert in ["RingwayLeaderLost", "RingwayHighErrorRatio"] {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no unit test of {alert}"
        );
    }
}

/// Every rule of the rules file: (name: the alert or the recorded series, expr).
fn rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(rules_file()).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules.yml is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            out.push((name.expect("alert or record").to_owned(), expr.to_owned()));
        }
    }
    out
}

/// Every query of the dashboard (panel targets and annotations), checking on the way
/// that each panel has at least one and that panel ids are unique.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/ringway.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(doc["uid"], "ringway-overview");
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for panel in doc["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("a title").to_owned();
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id twice"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    for a in doc["annotations"]["list"].as_array().expect("annotations") {
        let name = a["name"].as_str().unwrap_or("annotation").to_owned();
        out.push((name, a["expr"].as_str().expect("expr").to_owned()));
    }
    assert!(out.len() >= 20, "only {} queries", out.len());
    out
}

/// The metric names a PromQL expression reads: identifiers starting `ringway_` or
/// `process_`, and recorded series (`level:metric:operation`, with colons).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        let w = std::mem::take(&mut word);
        if w.starts_with("ringway_") || w.starts_with("process_") || w.contains(':') {
            out.insert(w);
        }
    }
    out
}

#[test]
fn names_in_finds_metrics_not_labels_or_strings() {
    let names = names_in(
        r#"sum by (pool) (rate(ringway_requests_total{job=~"ringway_x",class="5xx"}[$__rate_interval])) / on (job) group_right () pool:ringway_requests:rate5m"#,
    );
    let want: BTreeSet<String> = ["ringway_requests_total", "pool:ringway_requests:rate5m"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
}

/// The names of the series in a `/metrics` text.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Grafana's variables with values that select everything, so a query runs as is.
fn as_prometheus_query(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$pool", ".*")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` over HTTP/1.0 (no chunked answer); the JSON body whatever the status.
fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(procs::PATIENCE)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

/// A Prometheus server on 127.0.0.1 loading the rules file and scraping `targets`
/// every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[SocketAddr]) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: ringway\n    static_configs:\n      - targets: [{targets}]\n",
                rules = rules_file().display().to_string(),
                targets = targets.join(", "),
            ),
        )
        .unwrap();
        let addr = procs::local(procs::free_port());
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, dir }
    }

    /// The answer to an instant query: `Ok(result)`, or `Err(the server's error)`.
    fn query(&self, q: &str) -> Option<Result<Vec<Value>, String>> {
        let v = get_json(
            self.addr,
            &format!("/api/v1/query?query={}", percent_encode(q)),
        )?;
        Some(match v["status"].as_str() {
            Some("success") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
            _ => Err(format!("{}: {}", v["errorType"], v["error"])),
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn dashboard_and_rules_read_what_a_real_cluster_exports() {
    // Fails at once, before starting the cluster, when the server is missing.
    tool("prometheus");
    let dir = procs::test_dir("deploy");
    let (_rt, upstreams) = procs::echo_upstreams(2);
    let mut instances = procs::cluster(&dir, &upstreams, "");
    let all: Vec<&procs::Instance> = instances.iter().collect();
    procs::eventually("a leader every instance names", || {
        procs::agreed_leader(&all)
    });
    // Traffic through every instance, so the request families have samples.
    for i in &instances {
        procs::eventually("the proxy to answer", || i.served_by("/k/1"));
        for k in 0..5 {
            let _ = procs::http_get(i.listener, &format!("/k/{k}"));
        }
    }
    // Every family a cluster exports, from all three instances once they are
    // connected to their peers and have counted requests.
    let mut names = BTreeSet::new();
    for i in &instances {
        let text = procs::eventually("peers and requests in /metrics", || {
            let text = procs::http_get(i.admin, "/metrics")?;
            let names = exported(&text);
            (names.contains("ringway_raft_peer_connected")
                && names.contains("ringway_requests_total"))
            .then_some(text)
        });
        names.extend(exported(&text));
    }
    let rules = rules();
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|(name, _)| name.contains(':'))
        .map(|(name, _)| name.clone())
        .collect();
    let queries = dashboard_queries();
    let mut missing = Vec::new();
    for (what, expr) in rules.iter().chain(&queries) {
        for name in names_in(expr) {
            let known = match name.contains(':') {
                true => recorded.contains(&name),
                false => names.contains(&name),
            };
            if !known {
                missing.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "names no instance exports (nor the rules record):\n{}\n--- exported:\n{names:#?}",
        missing.join("\n")
    );

    // A real Prometheus scraping the cluster: every rule evaluates without error, and
    // every dashboard query is accepted.
    let admins: Vec<SocketAddr> = instances.iter().map(|i| i.admin).collect();
    let server = Prometheus::start(&dir, &admins);
    procs::eventually("prometheus to scrape all three instances", || {
        let up = server.query("up == 1")?.ok()?;
        (up.len() == admins.len()).then_some(())
    });
    let groups = procs::eventually("every rule to be evaluated", || {
        let v = get_json(server.addr, "/api/v1/rules")?;
        let groups = v["data"]["groups"].as_array()?.clone();
        let evaluated = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        (evaluated && !groups.is_empty()).then_some(groups)
    });
    let rules_seen: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules_seen.len(), rules.len());
    for r in rules_seen {
        assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
    }
    for (title, expr) in &queries {
        let q = as_prometheus_query(expr);
        let answer = procs::eventually("an answer from prometheus", || server.query(&q));
        if let Err(e) = answer {
            panic!("dashboard panel {title:?}: query refused: {e}\n{q}");
        }
    }
    // The recorded leader count of a healthy cluster is 1.
    procs::eventually("job:ringway_raft_leaders:sum to be 1", || {
        let leaders = server.query("job:ringway_raft_leaders:sum")?.ok()?;
        (leaders.len() == 1 && leaders[0]["value"][1] == "1").then_some(())
    });
    for i in &mut instances {
        i.assert_running();
    }
    drop(server);
    drop(instances);
    let _ = std::fs::remove_dir_all(&dir);
}
