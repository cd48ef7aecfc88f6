//! Retries (`pools[].retry`) over real sockets: which failures go on to the next
//! upstream on the ring, for which methods and bodies, never after the response has
//! started, and within the retry budget.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::*;

/// How a hand-written upstream answers each connection once it has read a request head
/// (and `Content-Length` bytes of body).
#[derive(Clone, Copy)]
enum Misbehave {
    /// Resets the connection (RST) without answering.
    Reset,
    /// Sends a response head and half its body, then resets.
    CutMidBody,
}

/// An upstream that misbehaves on every request; counts the requests it read.
async fn bad_upstream(how: Misbehave) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                if let Misbehave::CutMidBody = how {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                        .await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    (addr, seen)
}

/// A pool of `first` (the key's upstream) and an echo upstream `b` after it on the ring.
async fn pool_with(first: SocketAddr, retry: &[&str]) -> (TestProxy, Upstream, String) {
    let good = Upstream::echo("b").await;
    let mut pool = PoolSpec::new("web")
        .opt("hash_key: path")
        .address("a", first, 1)
        .address("b", good.addr, 1);
    for line in retry {
        pool = pool.opt(line);
    }
    let yaml = config_yaml(&[pool], &[]);
    let config = parse_config(&yaml);
    // A path whose first upstream is `a`.
    let path = (0..1000)
        .map(|i| format!("/k{i}"))
        .find(|p| walk_ids(&config, "web", p, 2) == ["a", "b"])
        .expect("a key of a");
    (TestProxy::start(&yaml).await, good, path)
}

fn metric(proxy: &TestProxy, line_start: &str) -> u64 {
    let text = proxy.proxy.metrics().encode();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn send_req(proxy: &TestProxy, req: Request<Body>) -> Resp {
    send(proxy.addr, req).await
}

fn req(method: &str, path: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "svc.test")
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn a_get_reset_after_it_was_read_is_served_by_the_next_upstream() {
    let (bad, seen) = bad_upstream(Misbehave::Reset).await;
    let (proxy, _good, path) = pool_with(bad, &[]).await;
    let r = proxy.get(&path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream(), "b");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the first upstream read it");
    let reset = r#"ringway_retries_total{pool="web",reason="reset"}"#;
    assert_eq!(metric(&proxy, reset), 1);
    // A PUT with a small body is idempotent and kept: retried too, body intact.
    let r = send_req(&proxy, req("PUT", &path, "the body")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "the body"));
}

#[tokio::test]
async fn a_post_is_not_retried_unless_the_policy_names_it() {
    let (bad, seen) = bad_upstream(Misbehave::Reset).await;
    let (proxy, _good, path) = pool_with(bad, &[]).await;
    let r = send_req(&proxy, req("POST", &path, "order")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let (bad, _) = bad_upstream(Misbehave::Reset).await;
    let (proxy, _good, path) = pool_with(bad, &["retry:", "  methods: [GET, POST]"]).await;
    let r = send_req(&proxy, req("POST", &path, "order")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "order"));
}

#[tokio::test]
async fn a_body_over_the_bound_is_not_retried() {
    let (bad, seen) = bad_upstream(Misbehave::Reset).await;
    let (proxy, _good, path) = pool_with(bad, &["retry:", "  max_body_bytes: 4"]).await;
    let r = send_req(&proxy, req("PUT", &path, "longer than four")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let r = send_req(&proxy, req("PUT", &path, "tiny")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "tiny"));
}

#[tokio::test]
async fn a_response_that_has_started_is_never_retried() {
    let (bad, seen) = bad_upstream(Misbehave::CutMidBody).await;
    let (proxy, good, path) = pool_with(bad, &[]).await;
    let mut client = Client::connect(proxy.addr).await;
    let head = client.send_head(get_req(&path)).await;
    assert_eq!(head.status(), StatusCode::OK);
    let body = within("body", http_body_util::BodyExt::collect(head.into_body())).await;
    assert!(body.is_err(), "the cut body reaches the client as an error");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(good.accepted(), 0, "nothing was sent to the next upstream");
}

#[tokio::test]
async fn status_retries_only_when_configured_and_retry_after_is_respected() {
    let answers = |status: u16, retry_after: Option<&'static str>| {
        handler(move |_req| async move {
            let mut b = Response::builder().status(status);
            if let Some(v) = retry_after {
                b = b.header("retry-after", v);
            }
            b.body(full("busy")).unwrap()
        })
    };
    let busy = Upstream::start("a", answers(503, None)).await;
    let (proxy, _good, path) = pool_with(busy.addr, &[]).await;
    assert_eq!(
        proxy.get(&path).await.status,
        503,
        "5xx not retried by default"
    );

    let busy = Upstream::start("a", answers(503, Some("0"))).await;
    let (proxy, _good, path) = pool_with(busy.addr, &["retry:", "  on: [connect, 503]"]).await;
    let r = proxy.get(&path).await;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, "b".to_owned()));
    let r503 = r#"ringway_retries_total{pool="web",reason="503"}"#;
    assert_eq!(metric(&proxy, r503), 1);

    let busy = Upstream::start("a", answers(503, Some("120"))).await;
    let (proxy, good, path) = pool_with(busy.addr, &["retry:", "  on: [503]"]).await;
    let r = proxy.get(&path).await;
    assert_eq!(
        r.status, 503,
        "a Retry-After past the bound goes to the client"
    );
    assert_eq!(good.accepted(), 0);
}

#[tokio::test]
async fn with_every_upstream_failing_retries_stay_within_the_budget() {
    let (a, seen_a) = bad_upstream(Misbehave::Reset).await;
    let (b, seen_b) = bad_upstream(Misbehave::Reset).await;
    let (c, seen_c) = bad_upstream(Misbehave::Reset).await;
    let pool = PoolSpec::new("web")
        .opt("hash_key: path")
        .opt("retry:")
        .opt("  budget_percent: 0")
        .opt("  budget_floor_per_s: 2")
        .opt("  backoff_ms: 0")
        .opt("  max_backoff_ms: 0")
        .address("a", a, 1)
        .address("b", b, 1)
        .address("c", c, 1);
    let proxy = TestProxy::start(&config_yaml(&[pool], &[])).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            get(addr, &format!("/x{i}")).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 502);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let sent = [&seen_a, &seen_b, &seen_c]
        .iter()
        .map(|s| s.load(Ordering::SeqCst) as u64)
        .sum::<u64>();
    let retries = metric(
        &proxy,
        r#"ringway_retries_total{pool="web",reason="reset"}"#,
    );
    let refused = metric(
        &proxy,
        r#"ringway_retry_budget_exhausted_total{pool="web"}"#,
    );
    assert_eq!(
        sent,
        40 + retries,
        "every attempt is a request or a counted retry"
    );
    // The floor allows 2 a second (the run may straddle second boundaries).
    assert!(
        retries <= 2 * (seconds + 1),
        "{retries} retries in {seconds} s"
    );
    assert!(
        refused >= 40 - retries,
        "refused {refused}, retried {retries}"
    );
}

#[tokio::test]
async fn retry_settings_are_checked_by_name() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = [
        (
            vec!["retry:", "  on: [connect, 500]"],
            "pools[0].retry.on[1]",
        ),
        (vec!["retry:", "  on: [reset, reset]"], "listed twice"),
        (
            vec!["retry:", "  methods: [get]"],
            "pools[0].retry.methods[0]",
        ),
        (vec!["retry:", "  methods: [CONNECT]"], "never retried"),
        (
            vec!["retry:", "  budget_percent: 101"],
            "pools[0].retry.budget_percent",
        ),
        (
            vec!["retry:", "  backoff_ms: 100", "  max_backoff_ms: 10"],
            "pools[0].retry.max_backoff_ms",
        ),
        (
            vec!["retry:", "  max_body_bytes: 99999999"],
            "pools[0].retry.max_body_bytes",
        ),
        (vec!["retry:", "  tries: 3"], "pools[0].retry.tries"),
        (
            vec!["upstream_limits: {at_limit: queue}"],
            "needs max_inflight, cluster_max_inflight or max_connections",
        ),
        (
            vec!["upstream_limits: {max_connections: 0}"],
            "pools[0].upstream_limits.max_connections",
        ),
        (
            vec!["upstream_limits: {cluster_max_inflight: -1}"],
            "pools[0].upstream_limits.cluster_max_inflight",
        ),
    ];
    refused_pool_settings(addr, &bad);
}

/// An upstream whose answers wait until the test opens its gate; counts arrivals.
async fn gated(name: &'static str) -> (Upstream, Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, g) = (arrived.clone(), gate.clone());
    let up = Upstream::start(
        name,
        handler(move |_req| {
            let (a, g) = (a.clone(), g.clone());
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                let _ = g.acquire().await.map(|p| p.forget());
                Response::builder()
                    .header("x-upstream", name)
                    .body(full(name))
                    .unwrap()
            }
        }),
    )
    .await;
    (up, arrived, gate)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn limits_pool(a: &Upstream, b: &Upstream, lines: &[&str]) -> (String, String) {
    let mut pool = PoolSpec::new("web")
        .opt("hash_key: path")
        .upstream(a)
        .upstream(b);
    for l in lines {
        pool = pool.opt(l);
    }
    let yaml = config_yaml(&[pool], &[]);
    let config = parse_config(&yaml);
    let path = (0..1000)
        .map(|i| format!("/hot{i}"))
        .find(|p| walk_ids(&config, "web", p, 2) == ["a", "b"])
        .expect("a key of a");
    (yaml, path)
}

#[tokio::test]
async fn a_hot_key_over_max_inflight_spills_to_the_next_upstream() {
    let (a, arrived, gate) = gated("a").await;
    let b = Upstream::echo("b").await;
    let (yaml, path) = limits_pool(&a, &b, &["upstream_limits: {max_inflight: 2}"]);
    let proxy = TestProxy::start(&yaml).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (addr, path) = (proxy.addr, path.clone());
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect();
    until("two requests at a", || arrived.load(Ordering::SeqCst) == 2).await;
    for _ in 0..3 {
        let r = proxy.get(&path).await;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "b".to_owned()));
    }
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().upstream(), "a");
    }
    let spilled = r#"ringway_upstream_limited_total{action="spilled",pool="web",upstream="a"}"#;
    assert_eq!(metric(&proxy, spilled), 3);
    assert_eq!(arrived.load(Ordering::SeqCst), 2, "a never had more than 2");
}

#[tokio::test]
async fn at_max_inflight_a_queued_request_waits_then_gets_in_or_a_503() {
    let (a, arrived, gate) = gated("a").await;
    let b = Upstream::echo("b").await;
    let (yaml, path) = limits_pool(
        &a,
        &b,
        &["upstream_limits: {max_inflight: 1, at_limit: queue, queue_timeout_ms: 300}"],
    );
    let proxy = TestProxy::start(&yaml).await;
    let (addr, p) = (proxy.addr, path.clone());
    let first = tokio::spawn(async move { get(addr, &p).await });
    until("one request at a", || arrived.load(Ordering::SeqCst) == 1).await;
    // The queue times out: 503 naming the cap; b is never asked.
    let r = proxy.get(&path).await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
    assert!(r.text().contains("max_inflight"), "{}", r.text());
    // A queued request gets in when the one in flight ends.
    let (addr, p) = (proxy.addr, path.clone());
    let second = tokio::spawn(async move { get(addr, &p).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().upstream(), "a");
    assert_eq!(second.await.unwrap().upstream(), "a");
    assert_eq!(b.accepted(), 0);
    let m = |action: &str| {
        metric(
            &proxy,
            &format!(
                r#"ringway_upstream_limited_total{{action="{action}",pool="web",upstream="a"}}"#
            ),
        )
    };
    assert_eq!((m("queued"), m("rejected"), m("spilled")), (2, 1, 0));
}

/// `ringway_upstream_limited_total` of upstream `a` for one action, from `/metrics`.
fn limited(proxy: &TestProxy, action: &str) -> u64 {
    metric(
        proxy,
        &format!(r#"ringway_upstream_limited_total{{action="{action}",pool="web",upstream="a"}}"#),
    )
}

/// Starts `n` GETs of `path` through the proxy at once.
fn spawn_gets(proxy: &TestProxy, path: &str, n: usize) -> Vec<tokio::task::JoinHandle<Resp>> {
    (0..n)
        .map(|_| {
            let (addr, path) = (proxy.addr, path.to_owned());
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect()
}

#[tokio::test]
async fn at_max_connections_a_hot_key_spills_and_the_idle_connection_counts() {
    let (a, arrived, gate) = gated("a").await;
    let b = Upstream::echo("b").await;
    let (yaml, path) = limits_pool(&a, &b, &["upstream_limits: {max_connections: 1}"]);
    let proxy = TestProxy::start(&yaml).await;
    let held = spawn_gets(&proxy, &path, 1);
    until("one request at a", || arrived.load(Ordering::SeqCst) == 1).await;
    for _ in 0..3 {
        let r = proxy.get(&path).await;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "b".to_owned()));
    }
    gate.add_permits(10);
    for h in held {
        assert_eq!(h.await.unwrap().upstream(), "a");
    }
    // The one connection, idle now, serves the key again.
    for _ in 0..3 {
        assert_eq!(proxy.get(&path).await.upstream(), "a");
    }
    assert_eq!(a.accepted(), 1, "a never had more than its one connection");
    assert_eq!(limited(&proxy, "spilled"), 3);
}

#[tokio::test]
async fn at_max_connections_queued_requests_share_the_open_connections() {
    let (a, arrived, gate) = gated("a").await;
    let b = Upstream::echo("b").await;
    let (yaml, path) = limits_pool(
        &a,
        &b,
        &["upstream_limits: {max_connections: 2, at_limit: queue, queue_timeout_ms: 10000}"],
    );
    let proxy = TestProxy::start(&yaml).await;
    let held = spawn_gets(&proxy, &path, 5);
    until("two requests at a", || arrived.load(Ordering::SeqCst) == 2).await;
    until("three requests queued", || limited(&proxy, "queued") == 3).await;
    assert_eq!(arrived.load(Ordering::SeqCst), 2, "the queued ones wait");
    gate.add_permits(5);
    for h in held {
        let r = h.await.unwrap();
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "a".to_owned()));
    }
    assert_eq!(a.accepted(), 2, "five requests over two connections");
    assert_eq!(b.accepted(), 0);
    assert_eq!(
        (limited(&proxy, "rejected"), limited(&proxy, "spilled")),
        (0, 0)
    );
}

#[tokio::test]
async fn at_max_connections_a_queue_that_times_out_gets_a_503_naming_the_cap() {
    let (a, arrived, gate) = gated("a").await;
    let b = Upstream::echo("b").await;
    let (yaml, path) = limits_pool(
        &a,
        &b,
        &["upstream_limits: {max_connections: 1, at_limit: queue, queue_timeout_ms: 200}"],
    );
    let proxy = TestProxy::start(&yaml).await;
    let held = spawn_gets(&proxy, &path, 1);
    until("one request at a", || arrived.load(Ordering::SeqCst) == 1).await;
    let r = proxy.get(&path).await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
    assert!(
        r.text().contains("upstream_limits.max_connections"),
        "{}",
        r.text()
    );
    gate.add_permits(1);
    assert_eq!(
        held.into_iter().next().unwrap().await.unwrap().upstream(),
        "a"
    );
    assert_eq!(
        (limited(&proxy, "queued"), limited(&proxy, "rejected")),
        (1, 1)
    );
    assert_eq!(b.accepted(), 0);
}

#[tokio::test]
async fn a_cluster_wide_cap_on_one_instance_is_the_whole_figure() {
    let (a, arrived, gate) = gated("a").await;
    let b = Upstream::echo("b").await;
    let (yaml, path) = limits_pool(&a, &b, &["upstream_limits: {cluster_max_inflight: 2}"]);
    let proxy = TestProxy::start(&yaml).await;
    let held = spawn_gets(&proxy, &path, 2);
    until("two requests at a", || arrived.load(Ordering::SeqCst) == 2).await;
    assert_eq!(proxy.get(&path).await.upstream(), "b");
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().upstream(), "a");
    }
    assert_eq!(limited(&proxy, "spilled"), 1);
}

#[test]
fn a_cluster_wide_cap_is_shared_by_the_members() {
    use ringway::proxy::snapshot::Memberships;
    struct Members(usize);
    impl Memberships for Members {
        fn members(&self, _: &str) -> Option<Vec<ringway::config::Upstream>> {
            None
        }
        fn breakers(&self, _: &str) -> Option<&ringway::health::breaker::PoolBreakers> {
            None
        }
        fn instances(&self) -> usize {
            self.0
        }
    }
    let cap = |limits: &str, members: usize| {
        let pool = PoolSpec::new("web")
            .address("a", "127.0.0.1:9".parse().unwrap(), 1)
            .opt(limits);
        let config = parse_config(&config_yaml(&[pool], &[]));
        let snapshot = ringway::proxy::Snapshot::build_with(&config, Some(&Members(members)), None);
        snapshot.pool("web").unwrap().inflight_cap
    };
    let shared = "upstream_limits: {cluster_max_inflight: 10}";
    assert_eq!(cap(shared, 1), Some(10));
    assert_eq!(cap(shared, 3), Some(4), "rounded up: 3 x 4 >= 10");
    assert_eq!(cap(shared, 5), Some(2));
    assert_eq!(cap(shared, 20), Some(1), "never below one");
    let both = "upstream_limits: {cluster_max_inflight: 10, max_inflight: 3}";
    assert_eq!(cap(both, 2), Some(3), "the smaller of the two");
    assert_eq!(cap(both, 5), Some(2));
    assert_eq!(cap("upstream_limits: {max_connections: 4}", 3), None);
}
