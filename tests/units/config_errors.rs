//! Config validation: the example is accepted as written; a bad file gets every error
//! at once, each naming its place and the rule; nothing panics on odd input.

use std::time::Duration;

use proptest::prelude::*;
use ringway::config::{Config, ParseError, DEFAULT_VNODES};

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.field_errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn example_is_accepted_as_written() {
    let text = include_str!("../../config.example.yaml");
    let c = Config::parse(text).expect("example is valid");
    assert_eq!(c.node.id, "n1");
    assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:8080");
    assert_eq!(
        c.admin.as_ref().unwrap().address.to_string(),
        "127.0.0.1:9480"
    );
    let pool = &c.pools[0];
    assert_eq!(pool.name, "web");
    assert_eq!(pool.vnodes, 150);
    assert_eq!(pool.hash_key.to_string(), "path");
    let ids: Vec<&str> = pool.upstreams.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["127.0.0.1:9001", "127.0.0.1:9002", "cache-3"]);
    let weights: Vec<u32> = pool.upstreams.iter().map(|u| u.weight).collect();
    assert_eq!(weights, [1, 2, 1]);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let c = Config::parse(
        "node: {id: a, data_dir: /tmp/a}\nlisteners: [{address: '127.0.0.1:1'}]\npools:\n  - name: p\n    upstreams: [{address: 'backend.internal:80'}]\n",
    )
    .unwrap();
    let p = &c.pools[0];
    assert_eq!(p.vnodes, DEFAULT_VNODES);
    assert_eq!(p.hash_key.to_string(), "uri");
    assert_eq!(p.path_prefix, "/");
    assert_eq!(p.upstreams[0].id, "backend.internal:80");
    assert_eq!(p.timeouts.connect, Duration::from_secs(2));
    assert!(c.admin.is_none());
}

#[test]
fn every_error_is_reported_at_once_with_its_place() {
    let text = r#"
node:
  id: n1
  data_dir: ./d
  colour: blue
listeners:
  - address: "localhost:80"
pools:
  - name: web
    hash_key: "header:"
    vnodes: 0
    on_missing_key: shrug
    upstreams:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
      - address: 127.0.0.1:9003
        weight: 0
      - id: 127.0.0.1:9001
        address: "127.0.0.1:99999"
      - address: "no port"
        wieght: 2
  - name: web
    hosts: ["a*b"]
    path_prefix: api
    upstreams: []
  - name: other
    max_attempts: 17
    connect_timeout_ms: -5
    upstreams: [{address: "10.0.0.1:80", weight: "heavy"}, {address: "10.0.0.2:0"}]
"#;
    let got = errors(text);
    let want = [
        "node.colour: unknown field",
        "listeners[0].address: must be an IP address and port such as 127.0.0.1:8080, got \"localhost:80\"",
        "pools[0].hash_key: header: needs a name, as in header:x-tenant",
        "pools[0].vnodes: must be at least 1, got 0",
        "pools[0].on_missing_key: must be one of client_ip, random, reject, got \"shrug\"",
        "pools[0].upstreams[2].weight: must be at least 1, got 0",
        "pools[0].upstreams[3].address: port must be a number from 1 to 65535, got \"127.0.0.1:99999\"",
        "pools[0].upstreams[4].wieght: unknown field",
        "pools[0].upstreams[4].address: must be host:port, got \"no port\"",
        "pools[1].hosts[0]: must be a name, *.suffix or *, got \"a*b\"",
        "pools[1].path_prefix: must start with '/', got \"api\"",
        "pools[1].upstreams: must list at least one upstream",
        "pools[2].max_attempts: must be at most 16, got 17",
        "pools[2].connect_timeout_ms: must be at least 1, got -5",
        "pools[2].upstreams[0].weight: must be a whole number, got \"heavy\"",
        "pools[2].upstreams[1].address: port must be a number from 1 to 65535, got \"10.0.0.2:0\"",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g == w),
            "missing error {w:?}\ngot:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "exactly these errors:\n{}",
        got.join("\n")
    );
}

#[test]
fn duplicates_are_errors() {
    let got = errors(
        r#"
node: {id: n1, data_dir: d}
listeners: [{address: "127.0.0.1:1"}, {address: "127.0.0.1:1"}]
pools:
  - name: a
    upstreams:
      - address: 127.0.0.1:9001
      - {id: x, address: 127.0.0.1:9002}
      - {id: x, address: 127.0.0.1:9003}
      - address: 127.0.0.1:9001
  - name: a
    hosts: ["*"]
    path_prefix: /
    upstreams: [{address: 127.0.0.1:9001}]
"#,
    );
    let want = [
        "listeners[1].address: 127.0.0.1:1 is listed twice",
        "pools[0].upstreams[2].id: upstream id \"x\" is already used by upstreams[1] of this pool",
        "pools[0].upstreams[3].id: upstream id \"127.0.0.1:9001\" is already used by upstreams[0] of this pool",
        "pools[1].name: pool name \"a\" is already used by pools[0]",
        "pools[1]: same hosts and path_prefix as pools[0]: requests could never reach one of them",
    ];
    assert_eq!(got, want);
}

#[test]
fn missing_sections_are_named() {
    assert_eq!(
        errors(""),
        [
            "node: is required (node.id and node.data_dir)",
            "listeners: must list at least one listener",
            "pools: must list at least one pool"
        ]
    );
}

#[test]
fn broken_yaml_names_the_line() {
    let err = Config::parse("node:\n  id: [unclosed\npools: 3\n").unwrap_err();
    let ParseError::Syntax(msg) = &err else {
        panic!("expected a syntax error, got {err}");
    };
    assert!(msg.contains("line"), "{msg}");
    let err = Config::parse("pools: 3\n").unwrap_err();
    assert!(err.to_string().contains("pools"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Arbitrary text never panics the parser; it is accepted or rejected with a reason.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Mutations of a valid file never panic either.
    #[test]
    fn mutated_example_never_panics(cut in 0usize..600, insert in "[ :\\-\\[\\]{}a-z0-9\\n]{0,12}") {
        let base = include_str!("../../config.example.yaml");
        let at = base.char_indices().map(|(i, _)| i).nth(cut % base.chars().count()).unwrap_or(0);
        let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
        let _ = Config::parse(&text);
    }
}

#[test]
fn cluster_section_is_accepted_as_written() {
    let text = r#"
node:
  id: n2
  data_dir: ./data/n2
cluster:
  address: 127.0.0.1:7002          # where this node listens for its peers
  peers:                           # every voter, this node included
    n1: 127.0.0.1:7001
    n2: 127.0.0.1:7002
    n3: 127.0.0.1:7003
  heartbeat_ms: 100
  election_timeout_ms: 1000
  secret_file: ./cluster.secret    # authenticates peers (or cluster.tls)
listeners: [{address: "127.0.0.1:8082"}]
admin: {address: "127.0.0.1:9092", token_file: ./token}
pools: [{name: web, upstreams: [{address: "127.0.0.1:9001"}]}]
"#;
    let c = Config::parse(text).unwrap();
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.address.to_string(), "127.0.0.1:7002");
    assert_eq!(cluster.peers.len(), 3);
    assert_eq!(cluster.peers["n3"].to_string(), "127.0.0.1:7003");
    assert_eq!(
        cluster.secret_file.as_deref(),
        Some(std::path::Path::new("./cluster.secret"))
    );
    assert_eq!(cluster.heartbeat, Duration::from_millis(100));
    assert_eq!(cluster.election_timeout, Duration::from_secs(1));
    assert_eq!(
        c.admin.unwrap().token_file.unwrap().to_str(),
        Some("./token")
    );
}

#[test]
fn cluster_errors_are_named() {
    let got = errors(
        r#"
node: {id: n9, data_dir: d}
cluster:
  peers: {n1: "127.0.0.1:7001", "bad id": "127.0.0.1:7002", n3: "127.0.0.1:7001"}
  heartbeat_ms: 500
  election_timeout_ms: 1000
  gossip: yes
  join: maybe
  compact_threshold: 5
listeners: [{address: "127.0.0.1:1"}]
pools: [{name: p, upstreams: [{address: "127.0.0.1:9"}]}]
"#,
    );
    let want = [
        "cluster.gossip: unknown field",
        "cluster.address: is required",
        "cluster.peers.bad id: node id must be 1 to 64 letters, digits, '-', '_' or '.', got \"bad id\"",
        "cluster.peers.n3: 127.0.0.1:7001 is already the address of another peer",
        "cluster.peers: must include this node (n9)",
        "cluster.join: must be true or false, got \"maybe\"",
        "cluster.compact_threshold: must be at least 10, got 5",
        "cluster.election_timeout_ms: must be at least 3 x heartbeat_ms (1500 ms), got 1000 ms",
    ];
    assert_eq!(got, want);
}

#[test]
fn a_section_of_the_wrong_shape_is_named_in_plain_words() {
    let err = Config::parse("node: [oops]\n").unwrap_err().to_string();
    assert!(err.contains("expected a mapping"), "{err}");
    assert!(!err.contains("Raw"), "no internal type names: {err}");
}

#[test]
fn listener_header_work_is_on_by_default_and_each_switch_is_checked() {
    let head = "node: {id: a, data_dir: /tmp/a}\npools:\n  - name: p\n    upstreams: [{address: '127.0.0.1:9'}]\n";
    let c = Config::parse(&format!("{head}listeners: [{{address: '127.0.0.1:1'}}]\n")).unwrap();
    let on = c.listeners[0].headers;
    assert!(on.forwarded && on.via && on.request_id && on.traceparent);
    let c = Config::parse(&format!(
        "{head}listeners: [{{address: '127.0.0.1:1', headers: {{via: false, traceparent: false}}}}]\n"
    ))
    .unwrap();
    let h = c.listeners[0].headers;
    assert!(h.forwarded && !h.via && h.request_id && !h.traceparent);
    let errs = errors(&format!(
        "{head}listeners: [{{address: '127.0.0.1:1', headers: {{via: 1, request_ids: false}}}}]\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("listeners[0].headers.via:")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("listeners[0].headers.request_ids:")),
        "{errs:?}"
    );
}
