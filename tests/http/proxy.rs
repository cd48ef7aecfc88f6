//! Data-plane integration tests: real upstream servers on 127.0.0.1 and the proxy in
//! front of them, driven over real sockets.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

async fn echo_upstreams(names: &[&str]) -> Vec<Upstream> {
    let mut ups = Vec::new();
    for n in names {
        ups.push(Upstream::echo(n).await);
    }
    ups
}

// ---------------------------------------------------------------------------------
// Stickiness and spread
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn same_path_always_reaches_the_upstream_the_ring_predicts() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").opt("hash_key: path").upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut seen_upstreams = HashSet::new();
    for i in 0..40 {
        let path = format!("/item/{i}");
        let want = predict(&proxy.config, "web", &path);
        seen_upstreams.insert(want.clone());
        // Several times on one keep-alive connection, with a query string that the
        // `path` key ignores ...
        for q in 0..4 {
            let r = client.get(&format!("{path}?n={q}")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.upstream(), want, "{path} (keep-alive request {q})");
            assert_eq!(r.text(), format!("{want} GET {path}?n={q}\n"));
        }
        // ... and over fresh connections (new client ports).
        for _ in 0..2 {
            assert_eq!(
                proxy.get(&path).await.upstream(),
                want,
                "{path} (new connection)"
            );
        }
    }
    assert_eq!(
        seen_upstreams.len(),
        3,
        "40 keys should land on all 3 upstreams"
    );
}

#[tokio::test]
async fn keys_spread_over_every_upstream_in_ring_shares() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .weighted(&ups[0], 1)
            .weighted(&ups[1], 1)
            .weighted(&ups[2], 2)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    const KEYS: usize = 1000;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..KEYS {
        let path = format!("/k/{i}");
        let r = client.get(&path).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.upstream(), predict(&proxy.config, "web", &path), "{path}");
        *counts.entry(r.upstream()).or_default() += 1;
    }
    // Expected shares: the fraction of ring points each upstream owns.
    let pool = &proxy.config.pools[0];
    let ring = ringway::proxy::snapshot::pool_ring(pool);
    let points = ring.points_per_member();
    for (u, n) in pool.upstreams.iter().zip(&points) {
        let expected = *n as f64 / ring.len() as f64 * KEYS as f64;
        let got = counts.get(&u.id).copied().unwrap_or(0) as f64;
        assert!(
            got >= 0.5 * expected && got <= 1.6 * expected,
            "upstream {} got {got} keys, expected about {expected:.0} ({counts:?})",
            u.id
        );
    }
    let light = (counts["a"] + counts["b"]) as f64 / 2.0;
    let ratio = counts["c"] as f64 / light;
    assert!(
        (1.4..=2.8).contains(&ratio),
        "weight 2 should get about twice the keys of weight 1: ratio {ratio:.2} ({counts:?})"
    );
}

// ---------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn keys_of_a_stopped_upstream_move_to_the_next_on_the_ring_and_others_stay() {
    let mut ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").opt("hash_key: path").upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let keys: Vec<String> = (0..150).map(|i| format!("/f/{i}")).collect();
    let mut client = Client::connect(proxy.addr).await;
    let mut before = HashMap::new();
    for k in &keys {
        before.insert(k.clone(), client.get(k).await.upstream());
    }
    // The proxy now holds pooled connections to "b": stopping it closes them too, so
    // this also covers stale pooled connections.
    ups[1].stop().await;
    let mut moved = 0;
    for k in &keys {
        let r = client.get(k).await;
        assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.text());
        let order = walk_ids(&proxy.config, "web", k, 3);
        assert_eq!(order[0], before[k], "the ring's owner served {k} before");
        if before[k] == "b" {
            assert_eq!(
                r.upstream(),
                order[1],
                "{k} fails over to the next upstream on the ring"
            );
            moved += 1;
        } else {
            assert_eq!(r.upstream(), before[k], "{k} must not move");
        }
    }
    assert!(moved > 10, "only {moved} of {} keys lived on b", keys.len());
}

#[tokio::test]
async fn failover_skips_two_down_upstreams_within_max_attempts() {
    let mut ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .opt("max_attempts: 2")
            // Without the local fast path, so every key walks the whole ring order.
            .opt("health: {passive: {local_suspicion_ms: 0}}")
            .upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    ups[0].stop().await;
    ups[1].stop().await;
    let mut served = 0;
    let mut refused = 0;
    for i in 0..60 {
        let k = format!("/two/{i}");
        let order = walk_ids(&proxy.config, "web", &k, 3);
        let r = proxy.get(&k).await;
        if order[0] == "c" || order[1] == "c" {
            assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.text());
            assert_eq!(r.upstream(), "c");
            served += 1;
        } else {
            // c is third in this key's walk: two attempts never reach it.
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{k}");
            assert!(r.text().contains("(2 tried;"), "{k}: {}", r.text());
            refused += 1;
        }
    }
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
}

#[tokio::test]
async fn every_upstream_down_gives_502_naming_the_pool() {
    let mut ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(&[PoolSpec::new("shop").upstreams(&ups)], &[]);
    let proxy = TestProxy::start(&yaml).await;
    assert_eq!(proxy.get("/x").await.status, StatusCode::OK);
    for u in &mut ups {
        u.stop().await;
    }
    let r = proxy.get("/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let text = r.text();
    assert!(
        text.starts_with("ringway: no upstream of pool shop could be reached (3 tried;"),
        "{text}"
    );
    assert!(
        text.contains("connection refused") && text.ends_with('\n'),
        "{text}"
    );
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn max_attempts_one_with_the_owner_down_gives_502_without_trying_others() {
    let mut ups = echo_upstreams(&["a", "b"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .opt("max_attempts: 1")
            .upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let key = (0..)
        .map(|i| format!("/one/{i}"))
        .find(|k| predict(&proxy.config, "web", k) == "a")
        .unwrap();
    ups[0].stop().await;
    let b_before = ups[1].accepted();
    let r = proxy.get(&key).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().contains("pool web")
            && r.text().contains("(1 tried; last: a: connection refused)"),
        "{}",
        r.text()
    );
    assert_eq!(ups[1].accepted(), b_before, "b must not have been tried");
}

// ---------------------------------------------------------------------------------
// Routing and ringway's own answers
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn host_then_longest_path_prefix_picks_the_pool() {
    let names = ["exact", "wild", "deep-wild", "static", "api", "api-v2"];
    let ups = echo_upstreams(&names).await;
    let pools = [
        PoolSpec::new("exact")
            .hosts(&["api.example.com"])
            .upstream(&ups[0]),
        PoolSpec::new("wild")
            .hosts(&["*.example.com"])
            .upstream(&ups[1]),
        PoolSpec::new("deep-wild")
            .hosts(&["*.eu.example.com"])
            .upstream(&ups[2]),
        PoolSpec::new("static").prefix("/static/").upstream(&ups[3]),
        PoolSpec::new("api").prefix("/api").upstream(&ups[4]),
        PoolSpec::new("api-v2").prefix("/api/v2").upstream(&ups[5]),
    ];
    let proxy = TestProxy::start(&config_yaml(&pools, &[])).await;
    let cases = [
        ("api.example.com", "/x", Some("exact")),
        ("API.Example.COM:8080", "/api/v2/x", Some("exact")),
        ("www.example.com", "/x", Some("wild")),
        ("a.eu.example.com", "/", Some("deep-wild")),
        ("other.test", "/static/app.css", Some("static")),
        ("other.test", "/api", Some("api")),
        ("other.test", "/api/v1/users", Some("api")),
        ("other.test", "/api/v2", Some("api-v2")),
        ("other.test", "/api/v2/users", Some("api-v2")),
        ("other.test", "/apix", None),
        ("example.com", "/x", None),
        ("other.test", "/", None),
    ];
    let mut client = Client::connect(proxy.addr).await;
    for (host, path, want) in cases {
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(empty())
            .unwrap();
        let r = client.send(req).await;
        match want {
            Some(up) => {
                assert_eq!(r.status, StatusCode::OK, "{host} {path}: {}", r.text());
                assert_eq!(r.upstream(), up, "{host} {path}");
            }
            None => {
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{host} {path}");
                let bare = host.split(':').next().unwrap();
                assert_eq!(
                    r.text(),
                    format!("ringway: no pool serves host {bare} and path {path}\n")
                );
            }
        }
    }
}

#[tokio::test]
async fn empty_pool_gives_503() {
    let ups = echo_upstreams(&["a"]).await;
    let mut config = parse_config(&config_yaml(&[PoolSpec::new("web").upstreams(&ups)], &[]));
    config.pools[0].upstreams.clear();
    let proxy = TestProxy::start_with(config).await;
    let r = proxy.get("/x").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "ringway: pool web has no upstreams\n");
    assert_eq!(ups[0].accepted(), 0);
}

// ---------------------------------------------------------------------------------
// Header rules
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    let up = Upstream::start("h", head_handler("h")).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[])).await;
    // Absolute-form target, a chunked body, and every kind of hop-by-hop header.
    let request = "POST http://front.test:8443/echo/me?q=1 HTTP/1.1\r\n\
        Host: front.test:8443\r\n\
        Connection: close, X-Secret, x-other-secret\r\n\
        Keep-Alive: timeout=5\r\n\
        X-Secret: s1\r\n\
        X-Other-Secret: s2\r\n\
        TE: trailers\r\n\
        Trailer: x-t\r\n\
        Upgrade: h2c\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        Proxy-Connection: keep-alive\r\n\
        X-Forwarded-For: 203.0.113.7, 198.51.100.1\r\n\
        Via: 1.0 edge\r\n\
        X-Kept: yes\r\n\
        Transfer-Encoding: chunked\r\n\
        \r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let resp = RawResponse::parse(&raw(proxy.addr, request.as_bytes()).await);
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = SeenHead::parse(&String::from_utf8(resp.body.clone()).unwrap());

    assert_eq!(
        seen.request_line, "POST /echo/me?q=1 HTTP/1.1",
        "origin-form target, HTTP/1.1"
    );
    for gone in [
        "connection",
        "keep-alive",
        "x-secret",
        "x-other-secret",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(
            seen.all(gone),
            Vec::<&str>::new(),
            "{gone} must not reach the upstream"
        );
    }
    // TE is hop-by-hop, but its `trailers` member is ringway's to pass on: it relays
    // trailers (gRPC servers insist on `te: trailers`).
    assert_eq!(seen.all("te"), ["trailers"]);
    assert_eq!(seen.one("host"), Some("front.test:8443"), "Host preserved");
    assert_eq!(seen.one("x-forwarded-host"), Some("front.test:8443"));
    assert_eq!(seen.one("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.one("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.1, 127.0.0.1")
    );
    assert_eq!(seen.all("via"), ["1.0 edge", "1.1 ringway"]);
    assert_eq!(seen.one("x-kept"), Some("yes"));
    // The client's chunked framing is not forwarded as a header; the body is re-framed.
    assert_eq!(seen.body, "hello world");
    let te = seen.all("transfer-encoding");
    let cl = seen.all("content-length");
    assert!(
        te == ["chunked"] || cl == ["11"],
        "body framing upstream: te {te:?} cl {cl:?}"
    );

    // The response: the upstream's hop-by-hop headers are gone, Via is appended.
    for (name, _) in HOP_RESPONSE_HEADERS {
        if *name == "connection" {
            // The client asked to close: hyper's own `connection: close` is expected.
            assert_eq!(resp.all("connection"), ["close"]);
            continue;
        }
        assert_eq!(
            resp.all(name),
            Vec::<&str>::new(),
            "{name} must not reach the client"
        );
    }
    assert_eq!(resp.one("x-resp-kept"), Some("yes"));
    assert_eq!(resp.all("via"), ["1.1 origin", "1.1 ringway"]);
    assert_eq!(resp.one("x-upstream"), Some("h"));
}

#[tokio::test]
async fn keep_alive_response_carries_no_upstream_connection_header() {
    let up = Upstream::start("h", head_handler("h")).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[])).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..2 {
        let r = client.get("/a").await;
        assert_eq!(r.status, StatusCode::OK);
        for (name, _) in HOP_RESPONSE_HEADERS {
            assert!(r.all(name).is_empty(), "{name}: {:?}", r.all(name));
        }
        let seen = SeenHead::parse(&r.text());
        assert_eq!(
            seen.one("x-forwarded-for"),
            Some("127.0.0.1"),
            "set when absent"
        );
        assert_eq!(seen.one("host"), Some("ringway.test"));
        assert_eq!(seen.one("x-forwarded-host"), Some("ringway.test"));
        assert_eq!(seen.all("via"), ["1.1 ringway"]);
    }
}

/// An upstream that answers in HTTP/1.0 (and closes) does not close the client's
/// keep-alive connection: the client is answered in HTTP/1.1, twice on one connection.
#[tokio::test]
async fn an_http10_upstream_answer_keeps_the_client_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let yaml = config_yaml(&[PoolSpec::new("web").address("old", up, 1)], &[]);
    let proxy = TestProxy::start(&yaml).await;
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    for i in 0..2 {
        c.write_all(b"GET /a HTTP/1.1\r\nHost: ringway.test\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = within("a response", c.read(&mut buf)).await.unwrap();
            assert!(n > 0, "request {i}: the connection closed after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "request {i}: {text}"
        );
    }
}

#[tokio::test]
async fn http10_client_is_forwarded_as_http11_with_via_1_0() {
    let up = Upstream::start("h", head_handler("h")).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[])).await;
    let resp =
        RawResponse::parse(&raw(proxy.addr, b"GET /old HTTP/1.0\r\nHost: old.test\r\n\r\n").await);
    assert_eq!(resp.status, 200);
    assert!(
        resp.status_line.starts_with("HTTP/1."),
        "{}",
        resp.status_line
    );
    let seen = SeenHead::parse(&String::from_utf8(resp.body).unwrap());
    assert_eq!(seen.request_line, "GET /old HTTP/1.1");
    assert_eq!(seen.all("via"), ["1.0 ringway"]);
    assert_eq!(seen.one("host"), Some("old.test"));
}

// ---------------------------------------------------------------------------------
// Hash keys
// ---------------------------------------------------------------------------------

async fn hash_key_proxy(ups: &[Upstream]) -> TestProxy {
    let pools = [
        PoolSpec::new("by-header")
            .prefix("/h")
            .opt("hash_key: header:x-tenant")
            .opt("on_missing_key: reject")
            .upstreams(ups),
        PoolSpec::new("by-cookie")
            .prefix("/c")
            .opt("hash_key: cookie:sid")
            .opt("on_missing_key: random")
            .upstreams(ups),
        PoolSpec::new("by-query")
            .prefix("/q")
            .opt("hash_key: query:user")
            .upstreams(ups),
        PoolSpec::new("by-template")
            .prefix("/t")
            .opt(r#"hash_key: "{header:x-tenant}/{path}""#)
            .opt("on_missing_key: reject")
            .upstreams(ups),
        PoolSpec::new("by-ip")
            .prefix("/ip")
            .opt("hash_key: client_ip")
            .upstreams(ups),
    ];
    TestProxy::start(&config_yaml(&pools, &[])).await
}

#[tokio::test]
async fn header_cookie_query_and_template_keys_pick_the_predicted_upstream() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let proxy = hash_key_proxy(&ups).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut distinct = HashSet::new();
    for i in 0..30 {
        let tenant = format!("tenant-{i}");
        let cases = [
            (
                "by-header",
                "/h/x",
                vec![("x-tenant", tenant.clone())],
                tenant.clone(),
            ),
            (
                "by-cookie",
                "/c/x",
                vec![("cookie", format!("theme=dark; sid={tenant} ; z=1"))],
                tenant.clone(),
            ),
            (
                "by-query",
                &*format!("/q/x?a=1&user={tenant}&b=2"),
                vec![],
                tenant.clone(),
            ),
            (
                "by-template",
                "/t/deep/path",
                vec![("x-tenant", tenant.clone())],
                format!("{tenant}//t/deep/path"),
            ),
        ];
        for (pool, path, headers, key) in cases {
            let want = predict(&proxy.config, pool, &key);
            distinct.insert((pool, want.clone()));
            for _ in 0..2 {
                let mut req = Request::get(path).header(header::HOST, "k.test");
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                let r = client.send(req.body(empty()).unwrap()).await;
                assert_eq!(r.status, StatusCode::OK, "{pool} {path}: {}", r.text());
                assert_eq!(r.upstream(), want, "{pool} key {key:?}");
            }
        }
    }
    assert_eq!(
        distinct.len(),
        4 * 3,
        "each key kind reaches every upstream: {distinct:?}"
    );
}

#[tokio::test]
async fn missing_key_reject_gives_400_naming_the_key() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let proxy = hash_key_proxy(&ups).await;
    let r = proxy.get("/h/x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.text(),
        "ringway: pool by-header hashes on header:x-tenant, which this request lacks\n"
    );
    let r = proxy.get("/t/x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("{header:x-tenant}/{path}"),
        "{}",
        r.text()
    );
    assert_eq!(
        ups.iter().map(Upstream::accepted).sum::<usize>(),
        0,
        "nothing forwarded"
    );
}

#[tokio::test]
async fn missing_key_random_still_answers() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let proxy = hash_key_proxy(&ups).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let r = client.get("/c/no-cookie").await;
        assert_eq!(r.status, StatusCode::OK);
        seen.insert(r.upstream());
    }
    // 60 random ring positions all on one upstream has probability below 1e-20.
    assert!(seen.len() >= 2, "random placement used only {seen:?}");
}

#[tokio::test]
async fn client_ip_key_and_missing_key_fallback_are_sticky_per_client() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let proxy = hash_key_proxy(&ups).await;
    let want = predict(&proxy.config, "by-ip", "127.0.0.1");
    for i in 0..10 {
        // Fresh connections: a new source port each time, same client address.
        let r = proxy.get(&format!("/ip/{i}")).await;
        assert_eq!(r.upstream(), want);
        // by-query without `user`: the default policy hashes the client address.
        let r = proxy.get(&format!("/q/{i}?other=1")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.upstream(), want);
    }
}

// ---------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn request_bodies_are_streamed_both_ways() {
    let ups = echo_upstreams(&["a"]).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstreams(&ups)], &[])).await;
    let mut client = Client::connect(proxy.addr).await;
    // Known length.
    let data: Bytes = (0..200_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let req = Request::post("/up")
        .header(header::HOST, "x")
        .body(full(data.clone()))
        .unwrap();
    let r = client.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, data);
    // Unknown length (chunked), sent in pieces.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Error>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx)).boxed();
    let req = Request::post("/up")
        .header(header::HOST, "x")
        .body(body)
        .unwrap();
    let send = tokio::spawn(async move { client.send(req).await });
    for i in 0..10u8 {
        tx.send(Ok(http_body::Frame::data(Bytes::from(vec![i; 1000]))))
            .await
            .unwrap();
    }
    drop(tx);
    let r = within("chunked echo", send).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let want: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 1000]).collect();
    assert_eq!(r.body, want);
}

/// A `Stream` over an mpsc receiver (no tokio-stream dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn head_request_gets_headers_only() {
    let ups = echo_upstreams(&["a"]).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstreams(&ups)], &[])).await;
    let mut client = Client::connect(proxy.addr).await;
    let req = Request::head("/h")
        .header(header::HOST, "x")
        .body(empty())
        .unwrap();
    let r = client.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.upstream(), "a");
    // The connection is still usable after a body-less response.
    assert_eq!(client.get("/after").await.text(), "a GET /after\n");
}

// ---------------------------------------------------------------------------------
// Upgrades and HTTP/2
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_messages_pass_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let listener = TcpListener::bind(loopback()).await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("upstream handshake");
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) => ws.send(Message::text(format!("echo: {t}"))).await.unwrap(),
                Message::Binary(b) => {
                    let mut v = b.to_vec();
                    v.reverse();
                    ws.send(Message::binary(v)).await.unwrap()
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let yaml = config_yaml(&[PoolSpec::new("ws").address("ws-up", ws_addr, 1)], &[]);
    let proxy = TestProxy::start(&yaml).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://{}/chat", proxy.addr);
    let (mut ws, resp) = within("ws handshake", tokio_tungstenite::client_async(url, stream))
        .await
        .expect("client handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["via"], "1.1 ringway");
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = within("ws text", ws.next()).await.unwrap().unwrap();
        assert_eq!(got, Message::text(format!("echo: hello {i}")));
        ws.send(Message::binary(vec![1u8, 2, 3, i])).await.unwrap();
        let got = within("ws binary", ws.next()).await.unwrap().unwrap();
        assert_eq!(got, Message::binary(vec![i, 3u8, 2, 1]));
    }
    // A large message crosses the tunnel in many TCP segments.
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let got = within("ws big", ws.next()).await.unwrap().unwrap();
    assert_eq!(got.into_data().len(), big.len());
    ws.close(None).await.unwrap();
    within("upstream ends", upstream).await.unwrap();
}

#[tokio::test]
async fn generic_upgrade_is_tunnelled_to_the_echo_upstream() {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(ringway::echo::serve(listener, "raw".into()));
    let proxy = TestProxy::start(&config_yaml(
        &[PoolSpec::new("web").address("raw", addr, 1)],
        &[],
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /tunnel HTTP/1.1\r\nHost: t.test\r\nConnection: Upgrade\r\nUpgrade: my-proto/1\r\n\r\n")
        .await
        .unwrap();
    // Read the 101 head byte by byte so no tunnel byte is consumed with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = within("101 head", s.read(&mut b)).await.unwrap();
        assert_eq!(
            n,
            1,
            "closed during the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: my-proto/1\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(head.contains("x-upstream: raw\r\n"), "{head}");
    for msg in [
        &b"ping"[..],
        &[0u8, 255, 10, 13, 10][..],
        &vec![42u8; 100_000][..],
    ] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        within("tunnel echo", s.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, msg);
    }
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_streams_are_routed_and_authority_becomes_host() {
    let ups = [
        Upstream::start("a", head_handler("a")).await,
        Upstream::start("b", head_handler("b")).await,
        Upstream::start("c", head_handler("c")).await,
    ];
    let yaml = config_yaml(
        &[PoolSpec::new("web").opt("hash_key: path").upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let sender = h2_client(proxy.addr).await;
    let mut streams = Vec::new();
    for i in 0..24 {
        let mut sender = sender.clone();
        let path = format!("/h2/{i}");
        let want = predict(&proxy.config, "web", &path);
        streams.push(tokio::spawn(async move {
            let req = Request::get(format!("http://h2.example:8080{path}?x=1"))
                .version(Version::HTTP_2)
                .header("x-stream", i.to_string())
                .body(empty())
                .unwrap();
            let resp = within("h2 response", sender.send_request(req))
                .await
                .expect("h2 request");
            (path, want, collect(resp).await)
        }));
    }
    let mut upstreams_seen = HashSet::new();
    for (i, s) in streams.into_iter().enumerate() {
        let (path, want, r) = within("h2 stream", s).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.version, Version::HTTP_2);
        assert_eq!(r.upstream(), want, "{path}");
        upstreams_seen.insert(want);
        let seen = SeenHead::parse(&r.text());
        assert_eq!(seen.request_line, format!("GET {path}?x=1 HTTP/1.1"));
        assert_eq!(
            seen.one("host"),
            Some("h2.example:8080"),
            ":authority becomes Host"
        );
        assert_eq!(seen.one("x-forwarded-host"), Some("h2.example:8080"));
        assert_eq!(seen.one("x-stream"), Some(&*i.to_string()));
        assert_eq!(seen.all("via"), ["2.0 ringway"]);
        // Connection-specific headers from the upstream must not reach an h2 client.
        for (name, _) in HOP_RESPONSE_HEADERS {
            assert!(r.all(name).is_empty(), "{name}");
        }
    }
    assert_eq!(upstreams_seen.len(), 3);
}

// ---------------------------------------------------------------------------------
// Timeouts and failing upstreams
// ---------------------------------------------------------------------------------

/// An upstream that reads each request and never answers it.
fn silent_handler() -> Handler {
    handler(|req: Request<Incoming>| async move {
        let _ = req.into_body().collect().await;
        std::future::pending::<Response<Body>>().await
    })
}

#[tokio::test]
async fn upstream_that_never_answers_gives_504_naming_it_when_timeouts_are_not_retried() {
    let silent = Upstream::start("silent", silent_handler()).await;
    let other = Upstream::echo("other").await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .opt("response_header_timeout_ms: 300")
            .opt("retry: {on: [connect, reset]}")
            .upstream(&silent)
            .upstream(&other)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let key = (0..)
        .map(|i| format!("/slow/{i}"))
        .find(|k| predict(&proxy.config, "web", k) == "silent")
        .unwrap();
    let r = proxy.get(&key).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        r.text(),
        "ringway: upstream silent did not answer in time\n"
    );
    assert_eq!(
        other.accepted(),
        0,
        "a request that was sent is not retried elsewhere unless the policy says so"
    );
    // By default a GET whose response head timed out goes on to the next upstream
    // (as nginx's `proxy_next_upstream error timeout`).
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .opt("response_header_timeout_ms: 300")
            .upstream(&silent)
            .upstream(&other)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let r = proxy.get(&key).await;
    assert_eq!(
        (r.status, r.upstream()),
        (StatusCode::OK, "other".to_owned())
    );
}

/// An upstream that reads the request head and then closes the connection.
async fn hang_up_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn upstream_failing_after_the_request_was_sent_gives_502_without_retry() {
    let (addr, task) = hang_up_upstream().await;
    let other = Upstream::echo("other").await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .address("hangup", addr, 1)
            .upstream(&other)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let key = (0..)
        .map(|i| format!("/h/{i}"))
        .find(|k| predict(&proxy.config, "web", k) == "hangup")
        .unwrap();
    let req = Request::post(&*key)
        .header(header::HOST, "x")
        .body(full("payload"))
        .unwrap();
    let r = send(proxy.addr, req).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().starts_with("ringway: upstream hangup failed: "),
        "{}",
        r.text()
    );
    assert_eq!(
        other.accepted(),
        0,
        "a request that was sent is never retried elsewhere"
    );
    task.abort();
}

/// A listener whose accept queue is full, so that new SYNs are dropped and connects
/// hang: a socket2 listener with backlog 0 that never accepts, filled until a probe
/// connect does not complete.
async fn black_hole() -> (SocketAddr, Vec<TcpStream>, socket2::Socket) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&loopback().into()).unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    loop {
        assert!(fillers.len() < 64, "the accept queue never filled");
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filler connect failed: {e}"),
            Err(_) => return (addr, fillers, sock),
        }
    }
}

#[tokio::test]
async fn connect_timeout_on_every_attempt_gives_504() {
    let (a, _fa, _la) = black_hole().await;
    let (b, _fb, _lb) = black_hole().await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("connect_timeout_ms: 200")
            .address("hole-a", a, 1)
            .address("hole-b", b, 1)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let r = proxy.get("/x").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(
        r.text(),
        "ringway: connecting to pool web timed out (2 upstreams tried)\n"
    );
}

#[tokio::test]
async fn connect_timeout_then_a_live_upstream_serves_the_request() {
    let (hole, _f, _l) = black_hole().await;
    let live = Upstream::echo("live").await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .opt("connect_timeout_ms: 200")
            .address("hole", hole, 1)
            .upstream(&live)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let key = (0..)
        .map(|i| format!("/t/{i}"))
        .find(|k| predict(&proxy.config, "web", k) == "hole")
        .unwrap();
    let r = proxy.get(&key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream(), "live");
}

#[tokio::test]
async fn slow_upload_is_not_cut_by_the_response_header_timeout() {
    // The upstream answers only once it has the whole body; the client takes well
    // over the 300 ms response-header timeout to send it, but never idles for long.
    let counter = handler(|req: Request<Incoming>| async move {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Response::new(full(format!("{}", body.len())))
    });
    let up = Upstream::start("counter", counter).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("response_header_timeout_ms: 300")
            .upstream(&up)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Error>>(1);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx)).boxed();
    let req = Request::post("/upload")
        .header(header::HOST, "x")
        .body(body)
        .unwrap();
    let addr = proxy.addr;
    let sending = tokio::spawn(async move { send(addr, req).await });
    for _ in 0..8 {
        let chunk = Ok(http_body::Frame::data(Bytes::from_static(&[1u8; 100])));
        if tx.send(chunk).await.is_err() {
            break; // The proxy dropped the body: the answer below says why.
        }
        // Pacing, not synchronisation: the upload must outlast the timeout.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let r = within("upload answer", sending).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "800");
}

#[tokio::test]
async fn upload_to_an_upstream_that_stops_reading_ends_after_the_idle_timeout() {
    // The upstream never reads the body nor answers: once socket buffers fill, the
    // upload cannot move. Only the idle timeout can end it (the response-header
    // timeout starts once the body is written, which never happens here).
    let up = Upstream::start(
        "deaf",
        handler(|_req: Request<Incoming>| std::future::pending()),
    )
    .await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("idle_timeout_ms: 300")
            .opt("response_header_timeout_ms: 3600000")
            .upstream(&up)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let frames = futures_util::stream::iter(
        (0..1024).map(move |_| Ok::<_, Error>(http_body::Frame::data(chunk.clone()))),
    );
    let req = Request::post("/up")
        .header(header::HOST, "x")
        .body(http_body_util::StreamBody::new(frames).boxed())
        .unwrap();
    let mut client = Client::connect(proxy.addr).await;
    let r = client.send(req).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(r.text(), "ringway: upstream deaf did not answer in time\n");
}

// ---------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn request_head_over_max_header_bytes_is_refused_with_431() {
    let ups = echo_upstreams(&["a"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").upstreams(&ups)],
        &["max_header_bytes: 8192"],
    );
    let proxy = TestProxy::start(&yaml).await;
    // Within the limit: served.
    let ok = format!(
        "GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(4000)
    );
    assert_eq!(
        RawResponse::parse(&raw(proxy.addr, ok.as_bytes()).await).status,
        200
    );
    // Over it: hyper answers 431 and closes; nothing reaches the upstream.
    let before = ups[0].accepted();
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(20_000)
    );
    let resp = RawResponse::parse(&raw(proxy.addr, big.as_bytes()).await);
    assert_eq!(resp.status, 431, "{}", resp.status_line);
    assert_eq!(ups[0].accepted(), before);
}

#[tokio::test]
async fn max_connections_makes_further_clients_wait_until_one_closes() {
    let ups = echo_upstreams(&["a"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").upstreams(&ups)],
        &["max_connections: 2"],
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut first = Client::connect(proxy.addr).await;
    let mut second = Client::connect(proxy.addr).await;
    assert_eq!(first.get("/1").await.status, StatusCode::OK);
    assert_eq!(second.get("/2").await.status, StatusCode::OK);
    // The third connects (the kernel completes the handshake) but is not served.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third
        .write_all(b"GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two were open"
    );
    // Both served connections still work.
    assert_eq!(first.get("/1b").await.status, StatusCode::OK);
    drop(first);
    let resp = RawResponse::parse(&read_to_close(&mut third).await);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"a GET /3\n");
    assert_eq!(second.get("/2b").await.status, StatusCode::OK);
}

#[tokio::test]
async fn client_stalling_in_its_request_head_is_disconnected() {
    let ups = echo_upstreams(&["a"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").upstreams(&ups)],
        &["header_read_timeout_ms: 300"],
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\nX-Half")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    // hyper closes the connection; a 408 head before closing is also acceptable.
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(ups[0].accepted(), 0);
}

// ---------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn in_flight_request_completes_after_shutdown_begins_then_new_connections_are_refused() {
    let (arrived_tx, arrived_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let arrived_rx = Arc::new(tokio::sync::Mutex::new(arrived_rx));
    let slow = handler(move |_req: Request<Incoming>| {
        let arrived = arrived_tx.clone();
        async move {
            let _ = arrived.send(());
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::new(full("slow done"))
        }
    });
    let up = Upstream::start("slow", slow).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").upstream(&up)],
        &["shutdown_grace_ms: 15000"],
    );
    let mut proxy = TestProxy::start(&yaml).await;
    // An idle keep-alive connection must not hold the drain up.
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    within(
        "request reaches the upstream",
        arrived_rx.lock().await.recv(),
    )
    .await
    .unwrap();
    proxy.begin_shutdown();
    let r = within("in-flight response", in_flight).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "slow done");
    proxy.finished().await;
    assert!(
        read_to_close(&mut idle).await.is_empty(),
        "idle connection closed"
    );
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener still accepting after shutdown");
}

// ---------------------------------------------------------------------------------
// Upstream connection pooling
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn sequential_requests_reuse_pooled_upstream_connections() {
    let ups = echo_upstreams(&["a"]).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstreams(&ups)], &[])).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..60 {
        assert_eq!(client.get(&format!("/p/{i}")).await.status, StatusCode::OK);
    }
    // Fresh client connections share the same upstream pool.
    for i in 0..20 {
        assert_eq!(proxy.get(&format!("/q/{i}")).await.status, StatusCode::OK);
    }
    let opened = ups[0].accepted();
    assert!(
        opened <= 8,
        "80 sequential requests opened {opened} upstream connections"
    );
}

#[tokio::test]
async fn pooling_off_opens_a_connection_per_request() {
    let ups = echo_upstreams(&["a"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("max_idle_per_upstream: 0")
            .upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..10 {
        assert_eq!(client.get(&format!("/p/{i}")).await.status, StatusCode::OK);
    }
    assert_eq!(ups[0].accepted(), 10);
}

#[tokio::test]
async fn request_bodies_are_sent_exactly_once_when_upstreams_close_connections() {
    // Every third answer closes its connection, so pooled connections go stale.
    let bodies = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let (b, s) = (bodies.clone(), served.clone());
    let closer = handler(move |req: Request<Incoming>| {
        let (bodies, served) = (b.clone(), s.clone());
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            bodies
                .lock()
                .unwrap()
                .push(String::from_utf8(body.to_vec()).unwrap());
            let n = served.fetch_add(1, Ordering::SeqCst);
            let mut resp = Response::new(full("ok"));
            if n % 3 == 2 {
                resp.headers_mut()
                    .insert(header::CONNECTION, "close".parse().unwrap());
            }
            resp
        }
    });
    let up = Upstream::start("closer", closer).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[])).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..30 {
        let req = Request::post("/b")
            .header(header::HOST, "x")
            .body(full(format!("body-{i}")))
            .unwrap();
        let r = client.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
    }
    let got = bodies.lock().unwrap().clone();
    let want: Vec<String> = (0..30).map(|i| format!("body-{i}")).collect();
    assert_eq!(got, want, "each body received exactly once, in order");
    assert!(up.accepted() >= 10, "connections were closed and reopened");
}

// ---------------------------------------------------------------------------------
// Large streaming bodies through the `ringway run` binary
// ---------------------------------------------------------------------------------

const MIB: u64 = 1024 * 1024;
/// Peak resident memory the proxy process may reach while streaming a body far
/// larger than it: the "bounded memory" proof.
const PEAK_RSS_BOUND_KIB: u64 = 200 * 1024;

/// Counts and discards a request body, answering with the count; `GET /download/N`
/// streams N MiB back instead.
fn sink_and_source_handler() -> Handler {
    handler(|req: Request<Incoming>| async move {
        if let Some(mib) = req.uri().path().strip_prefix("/download/") {
            let mib: u64 = mib.parse().unwrap();
            let chunk = Bytes::from(vec![0x5au8; MIB as usize]);
            let frames = futures_util::stream::iter(
                (0..mib).map(move |_| Ok::<_, Error>(http_body::Frame::data(chunk.clone()))),
            );
            return Response::new(http_body_util::StreamBody::new(frames).boxed());
        }
        let mut body = req.into_body();
        let mut count: u64 = 0;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.expect("upload frame").data_ref() {
                count += data.len() as u64;
            }
        }
        Response::new(full(count.to_string()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_and_256_mib_download_stream_through_the_binary_in_bounded_memory() {
    let up = Upstream::start("sink", sink_and_source_handler()).await;
    let proxy = Child::run(&config_yaml(&[PoolSpec::new("bulk").upstream(&up)], &[]));
    let started = std::time::Instant::now();

    // Upload 1 GiB, streamed from one shared 64 KiB chunk: the client holds no copy.
    const UPLOAD: u64 = 1024 * MIB;
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![0xa5u8; CHUNK as usize]);
    let frames = futures_util::stream::iter(
        (0..UPLOAD / CHUNK).map(move |_| Ok::<_, Error>(http_body::Frame::data(chunk.clone()))),
    );
    let req = Request::post("/upload")
        .header(header::HOST, "bulk.test")
        .header(header::CONTENT_LENGTH, UPLOAD)
        .body(http_body_util::StreamBody::new(frames).boxed())
        .unwrap();
    let mut client = Client::connect(proxy.addr).await;
    let r = tokio::time::timeout(Duration::from_secs(120), client.send(req))
        .await
        .expect("1 GiB upload finished in time");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.text(),
        UPLOAD.to_string(),
        "the upstream received every byte"
    );
    let upload_time = started.elapsed();

    // Download 256 MiB (chunked from the upstream), counted frame by frame.
    const DOWNLOAD_MIB: u64 = 256;
    let resp = client
        .send_head(get_req(&format!("/download/{DOWNLOAD_MIB}")))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got: u64 = 0;
    let counting = async {
        while let Some(frame) = body.frame().await {
            if let Some(d) = frame.expect("download frame").data_ref() {
                assert!(d.iter().all(|&b| b == 0x5a));
                got += d.len() as u64;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), counting)
        .await
        .expect("256 MiB download finished in time");
    assert_eq!(got, DOWNLOAD_MIB * MIB);

    let peak = proxy.status_kib("VmHWM");
    eprintln!(
        "1 GiB upload {:.1}s, 256 MiB download {:.1}s, proxy peak RSS {} MiB",
        upload_time.as_secs_f64(),
        (started.elapsed() - upload_time).as_secs_f64(),
        peak / 1024
    );
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "proxy peak RSS {peak} KiB exceeds {PEAK_RSS_BOUND_KIB} KiB: bodies are being buffered"
    );
}

#[tokio::test]
async fn request_body_survives_failover_to_the_next_upstream() {
    let mut ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web").opt("hash_key: path").upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let key = (0..)
        .map(|i| format!("/post/{i}"))
        .find(|k| predict(&proxy.config, "web", k) == "a")
        .unwrap();
    ups[0].stop().await;
    let next = walk_ids(&proxy.config, "web", &key, 2)[1].clone();
    let data: Bytes = (0..100_000u32)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let req = Request::post(&*key)
        .header(header::HOST, "x")
        .body(full(data.clone()))
        .unwrap();
    let r = send(proxy.addr, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream(), next);
    assert_eq!(r.body, data, "the body reached the next upstream whole");
}

/// `/big` streams 16 MiB in 64 KiB frames; anything else answers `small PATH`.
fn big_or_small_handler() -> Handler {
    handler(|req: Request<Incoming>| async move {
        if req.uri().path() == "/big" {
            let chunk = Bytes::from(vec![b'B'; 64 * 1024]);
            let frames = futures_util::stream::iter(
                (0..256).map(move |_| Ok::<_, Error>(http_body::Frame::data(chunk.clone()))),
            );
            return Response::new(http_body_util::StreamBody::new(frames).boxed());
        }
        Response::new(full(format!("small {}", req.uri().path())))
    })
}

#[tokio::test]
async fn connection_of_a_response_cut_short_by_the_client_is_not_reused() {
    let up = Upstream::start("u", big_or_small_handler()).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[])).await;
    for round in 0..3 {
        // Read the head and one frame of a large body, then hang up.
        let mut quitter = Client::connect(proxy.addr).await;
        let resp = quitter.send_head(get_req("/big")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = within("first frame", body.frame()).await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| d[0] == b'B'));
        drop(body);
        drop(quitter);
        // Later requests must never see the rest of that body.
        let mut client = Client::connect(proxy.addr).await;
        for i in 0..5 {
            let r = client.get(&format!("/s{round}-{i}")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.text(), format!("small /s{round}-{i}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_their_own_answer() {
    let ups = echo_upstreams(&["a", "b", "c"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("hash_key: path")
            .opt("max_idle_per_upstream: 4")
            .upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut tasks = Vec::new();
    for c in 0..32 {
        let addr = proxy.addr;
        let config = proxy.config.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for i in 0..20 {
                let path = format!("/c{c}/r{i}");
                let want = predict(&config, "web", &path);
                if i % 2 == 0 {
                    let r = client.get(&path).await;
                    assert_eq!(r.text(), format!("{want} GET {path}\n"));
                } else {
                    let body = format!("body of {path}");
                    let req = Request::put(&*path)
                        .header(header::HOST, "x")
                        .body(full(body.clone()))
                        .unwrap();
                    let r = client.send(req).await;
                    assert_eq!((r.upstream(), r.text()), (want, body));
                }
            }
        }));
    }
    for t in tasks {
        within("client task", t).await.unwrap();
    }
    for u in &proxy.proxy.snapshot().pools[0].upstreams {
        assert!(
            u.idle_count() <= 4,
            "{} keeps {} idle connections",
            u.id,
            u.idle_count()
        );
    }
}

#[tokio::test]
async fn pooled_connections_idle_longer_than_the_idle_timeout_are_not_reused() {
    let ups = echo_upstreams(&["a"]).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt("idle_timeout_ms: 200")
            .upstreams(&ups)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.get("/1").await.status, StatusCode::OK);
    assert_eq!(ups[0].accepted(), 1);
    // Let the pooled connection age past the idle timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.get("/2").await.status, StatusCode::OK);
    assert_eq!(
        ups[0].accepted(),
        2,
        "an expired pooled connection was reused"
    );
}

#[tokio::test]
async fn expect_100_continue_is_honoured_through_the_proxy() {
    let ups = echo_upstreams(&["a"]).await;
    let proxy = TestProxy::start(&config_yaml(&[PoolSpec::new("web").upstreams(&ups)], &[])).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(within("100 Continue", s.read(&mut b)).await.unwrap(), 1);
        interim.push(b[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    s.write_all(b"hello").await.unwrap();
    let resp = RawResponse::parse(&read_to_close(&mut s).await);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"hello");
}

/// Opens a raw `Upgrade` tunnel through the proxy to an echo upstream; returns the
/// client socket once the 101 head has been read.
async fn open_tunnel(proxy: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /t HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(within("101 head", s.read(&mut b)).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    within("tunnel echo", s.read_exact(&mut pong))
        .await
        .unwrap();
    assert_eq!(&pong, b"ping");
    s
}

#[tokio::test]
async fn an_open_tunnel_counts_against_max_connections() {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(ringway::echo::serve(listener, "raw".into()));
    let yaml = config_yaml(
        &[PoolSpec::new("web").address("raw", addr, 1)],
        &["max_connections: 1"],
    );
    let proxy = TestProxy::start(&yaml).await;
    let tunnel = open_tunnel(proxy.addr).await;
    let mut other = TcpStream::connect(proxy.addr).await.unwrap();
    other
        .write_all(b"GET /o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), other.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a second connection was served while a tunnel held the only slot"
    );
    drop(tunnel);
    let resp = RawResponse::parse(&read_to_close(&mut other).await);
    assert_eq!(resp.status, 200);
    echo.abort();
}

#[tokio::test]
async fn shutdown_drain_waits_for_open_tunnels() {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(ringway::echo::serve(listener, "raw".into()));
    let yaml = config_yaml(
        &[PoolSpec::new("web").address("raw", addr, 1)],
        &["shutdown_grace_ms: 15000"],
    );
    let mut proxy = TestProxy::start(&yaml).await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    proxy.begin_shutdown();
    // The tunnel keeps working during the drain, and the drain does not end under it.
    for _ in 0..3 {
        tunnel.write_all(b"more").await.unwrap();
        let mut got = [0u8; 4];
        within("tunnel echo during drain", tunnel.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(&got, b"more");
    }
    assert!(
        !proxy.is_finished(),
        "the drain ended while a tunnel was open"
    );
    drop(tunnel);
    proxy.finished().await;
    echo.abort();
}
