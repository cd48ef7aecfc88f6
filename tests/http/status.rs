//! The status page on the admin port, served by a whole instance in-process: the page,
//! its script and style sheet with their content types and security headers; the
//! ring endpoint against the ring the instance routes with (every arc, the shares, the
//! digest, `/api/route`), and its cap; the fields the page reads that the other views
//! gained (each member's lag, the instance's clock).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use ringway::admin::status::{CONTENT_SECURITY_POLICY, MAX_RING_ARCS, RING_SPAN};
use ringway::admin::Admin;
use ringway::control::{load_file, Instance};

use crate::common::{get, Resp};

fn dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringway-status-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running instance (a cluster of one) with its admin API; stops when dropped.
struct Running {
    admin: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a cluster of one, `n1`, with `pools` (YAML list items, two-space indented).
async fn start(dir: &Path, pools: &str) -> Running {
    let admin = free_addr();
    let raft = free_addr();
    let yaml = format!(
        "node: {{id: n1, data_dir: {data:?}}}\n\
         cluster:\n  address: \"{raft}\"\n  peers: {{n1: \"{raft}\"}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n\
         listeners: [{{address: \"127.0.0.1:0\"}}]\n\
         admin: {{address: \"{admin}\"}}\n\
         pools:\n{pools}",
        data = dir.join("data").display().to_string(),
    );
    let path = dir.join("ringway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (config, text) = load_file(&path).unwrap();
    let instance = Instance::start(&path, config, text).await.unwrap();
    Admin::start(&instance).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(instance.serve(async move {
        let _ = stopped.await;
    }));
    Running { admin, _stop: stop }
}

fn header<'a>(resp: &'a Resp, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let resp = get(addr, path).await;
    assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const WEB_POOL: &str = "  - name: web\n    hash_key: path\n    upstreams: [{id: a, address: \"127.0.0.1:1\"}, {id: b, address: \"127.0.0.1:2\", weight: 2}, {id: c, address: \"127.0.0.1:3\"}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let dir = dir("page");
    let running = start(&dir, WEB_POOL).await;
    let page = get(running.admin, "/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let html = page.text();
    // Every file the page names is served, with the same headers.
    for (path, kind) in [
        ("/", "text/html"),
        ("/status", "text/html"),
        ("/status.js", "text/javascript"),
        ("/status.css", "text/css"),
    ] {
        let resp = get(running.admin, path).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        assert!(header(&resp, "content-type").starts_with(kind), "{path}");
        assert_eq!(
            header(&resp, "content-security-policy"),
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&resp, "cache-control"), "no-cache", "{path}");
        assert!(!resp.body.is_empty(), "{path}");
    }
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
        "base-uri 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(html.contains(r#"<script src="/status.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/status.css">"#));
    // Nothing the policy would block: no inline script, style or handler.
    assert_eq!(html.matches("<script").count(), 1, "one script, by URL");
    assert!(!html.contains("<style"), "no inline style sheet");
    assert!(!html.contains(" style="), "no style attribute");
    let handler = html.split(" on").skip(1).find(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert_eq!(handler, None, "no inline event handler");
    // The script puts API text into the page as text only.
    let script = get(running.admin, "/status.js").await.text();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!script.contains(sink), "status.js uses {sink}");
    }
    // HEAD gets GET's head, and no body.
    let head = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(running.admin).await.unwrap();
        s.write_all(b"HEAD / HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(CONTENT_SECURITY_POLICY), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "a body after a HEAD: {head}");
    // Other paths are still unknown; the page is read-only.
    let other = get(running.admin, "/status.txt").await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_endpoint_matches_routing_and_the_digest() {
    let dir = dir("ring");
    let running = start(&dir, WEB_POOL).await;
    let pools = json(running.admin, "/api/pools").await;
    let pool = &pools["pools"][0];
    assert!(
        pools["now_ms"].as_u64().unwrap() > 1_700_000_000_000,
        "{pools}"
    );
    let ring = json(running.admin, "/api/pools/web/ring").await;
    assert_eq!(ring["pool"], "web");
    assert_eq!(
        ring["digest"], pool["ring_digest"],
        "the ring the pool routes with"
    );
    assert_eq!(ring["points"], pool["ring_points"]);
    assert_eq!(ring["span"], RING_SPAN);
    assert_eq!(ring["capped"], false);
    assert_eq!(ring["max_arcs"], MAX_RING_ARCS);
    let ids: Vec<&str> = ring["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let points: Vec<u64> = ring["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["points"].as_u64().unwrap())
        .collect();
    assert_eq!(points, [150, 300, 150], "weight multiplies points");
    let arcs: Vec<(u64, u64, usize)> = ring["arcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a: Vec<u64> = a
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect();
            (a[0], a[1], a[2] as usize)
        })
        .collect();
    assert_eq!(ring["arcs_total"], arcs.len());
    assert_eq!(arcs[0].0, 0);
    assert_eq!(arcs.last().unwrap().1, RING_SPAN);
    let mut owned = [0u64; 3];
    for w in arcs.windows(2) {
        assert_eq!(w[0].1, w[1].0, "contiguous");
        assert_ne!(w[0].2, w[1].2, "neighbours with one owner are merged");
    }
    for &(start, end, owner) in &arcs {
        owned[owner] += end - start;
    }
    let shares: Vec<f64> = ring["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["share"].as_f64().unwrap())
        .collect();
    for (share, owned) in shares.iter().zip(owned) {
        assert!((share - owned as f64 / RING_SPAN as f64).abs() < 1e-9);
    }
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // Where the route view sends a key is the owner of the arc its point falls in.
    for key in ["/", "/users/42", "x", "a much longer key with spaces"] {
        let query = format!("/api/route?pool=web&key={}", key.replace(' ', "+"));
        let route = json(running.admin, &query).await;
        let point = route["point"].as_u64().unwrap();
        assert_eq!(point, u64::from(ringway::ring::point(key.as_bytes())));
        let arc = arcs
            .iter()
            .find(|(s, e, _)| *s <= point && point < *e)
            .unwrap();
        assert_eq!(route["upstream"], ids[arc.2], "{key}");
    }
    let missing = get(running.admin, "/api/pools/nope/ring").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text().contains("nope"), "{}", missing.text());
    let bad = get(running.admin, "/api/pools/%ff/ring").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    // The cluster view gives each member's lag on the leader.
    let cluster = wait_for_leader(running.admin).await;
    let n1 = &cluster["members"][0];
    assert_eq!(n1["id"], "n1");
    let lag = n1["lag"].as_u64().unwrap();
    assert_eq!(
        lag,
        cluster["commit"].as_u64().unwrap() - n1["matched"].as_u64().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/api/cluster` once this instance leads (so it knows its members' progress).
async fn wait_for_leader(admin: SocketAddr) -> Value {
    for _ in 0..400 {
        let view = json(admin, "/api/cluster").await;
        if view["role"] == "leader" && !view["members"][0]["matched"].is_null() {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("n1 never led");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_past_the_cap_says_so_and_keeps_whole_shares() {
    let dir = dir("cap");
    // 200 upstreams of 150 points: about 30,000 arcs, past the cap.
    let ups: Vec<String> = (0..200)
        .map(|i| format!("{{id: u{i}, address: \"127.0.0.1:{}\"}}", 1000 + i))
        .collect();
    let pools = format!(
        "  - name: big\n    hash_key: path\n    upstreams: [{}]\n",
        ups.join(", ")
    );
    let running = start(&dir, &pools).await;
    let ring = json(running.admin, "/api/pools/big/ring").await;
    assert_eq!(ring["capped"], true);
    assert_eq!(ring["arcs"].as_array().unwrap().len(), MAX_RING_ARCS);
    assert!(ring["arcs_total"].as_u64().unwrap() > MAX_RING_ARCS as u64);
    assert_eq!(ring["points"], 30_000);
    assert_eq!(ring["arcs"][0][0], 0, "the first arcs, in ring order");
    let shares: f64 = ring["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "shares count the whole ring");
    let _ = std::fs::remove_dir_all(&dir);
}
