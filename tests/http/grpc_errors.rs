//! gRPC calls through the proxy over real sockets: every failure ringway answers
//! itself is a trailers-only gRPC answer (HTTP 200, `grpc-status`, `grpc-message`)
//! for a call, and stays a text error for plain HTTP; `grpc-timeout` bounds the wait
//! and a malformed one is refused; upstream statuses, in the head or in HTTP/1
//! chunked trailers, are counted in `ringway_grpc_requests_total` and by passive
//! detection, which holds `UNAVAILABLE` against the upstream and never an
//! application's own error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A gRPC call's answer: head, body and trailers.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        match self.headers.get(name) {
            Some(v) => v.to_str().unwrap(),
            None => panic!("no {name} header in {:?}", self.headers),
        }
    }

    /// The call's status: from the trailers, else from the head.
    fn grpc_status(&self) -> String {
        let from = self.trailers.as_ref().unwrap_or(&self.headers);
        from.get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no grpc-status: {:?} {:?}", self.headers, self.trailers))
    }
}

/// A unary call over HTTP/2 prior knowledge (the request body is one empty gRPC
/// message), with `extra` headers.
async fn call(
    sender: &mut hyper::client::conn::http2::SendRequest<Body>,
    path: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let mut req = Request::post(format!("http://ringway.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(full(&b"\0\0\0\0\0"[..])).unwrap();
    let resp = within("grpc call", sender.send_request(req))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = within("grpc body", body.collect()).await.expect("body");
    let trailers = collected.trailers().cloned();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Asserts a trailers-only answer with `code` and a message containing `message`.
fn assert_ringway_error(a: &Answer, code: u8, message: &str) {
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.headers);
    assert_eq!(a.header("content-type"), "application/grpc");
    assert_eq!(a.header("grpc-status"), code.to_string(), "{:?}", a.headers);
    let got = a.header("grpc-message");
    assert!(
        got.contains(message),
        "grpc-message {got:?} lacks {message:?}"
    );
    assert!(a.body.is_empty(), "body {:?}", a.body);
    assert!(a.trailers.is_none(), "trailers {:?}", a.trailers);
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> std::net::SocketAddr {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

async fn metric_line(proxy: &TestProxy, line: &str) {
    // Counted when the response body is dropped, which may follow the client's read.
    within(line, async {
        while !proxy.proxy.metrics().encode().contains(line) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn every_ringway_made_failure_is_a_grpc_answer_and_plain_http_keeps_text() {
    let slow = Upstream::start(
        "slow",
        handler(|_req| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Response::new(empty())
        }),
    )
    .await;
    let ok = Upstream::echo("ok").await;
    let down = closed_port().await;
    let pools = [
        PoolSpec::new("empty").prefix("/empty.Svc").upstream(&ok),
        PoolSpec::new("down")
            .prefix("/down.Svc")
            .address("gone", down, 1),
        PoolSpec::new("slow")
            .prefix("/slow.Svc")
            .opt("response_header_timeout_ms: 300")
            .upstream(&slow),
        PoolSpec::new("keyed")
            .prefix("/keyed.Svc")
            .opt("hash_key: \"header:x-user\"")
            .opt("on_missing_key: reject")
            .upstream(&ok),
    ];
    let mut config = parse_config(&config_yaml(&pools, &[]));
    config.pools[0].upstreams.clear();
    let proxy = TestProxy::start_with(config).await;
    let mut h2 = h2_client(proxy.addr).await;

    let a = call(&mut h2, "/other.Svc/Get", &[]).await;
    assert_ringway_error(
        &a,
        12,
        "no pool serves host ringway.test and path /other.Svc/Get",
    );
    let a = call(&mut h2, "/empty.Svc/Get", &[]).await;
    assert_ringway_error(&a, 14, "pool empty has no upstreams");
    let a = call(&mut h2, "/down.Svc/Get", &[]).await;
    assert_ringway_error(&a, 14, "no upstream of pool down could be reached");
    let a = call(&mut h2, "/slow.Svc/Get", &[]).await;
    assert_ringway_error(&a, 4, "upstream slow did not answer in time");
    let a = call(&mut h2, "/keyed.Svc/Get", &[]).await;
    assert_ringway_error(&a, 3, "pool keyed hashes on header:x-user");
    // The call's own deadline, shorter than the pool's: DEADLINE_EXCEEDED naming it.
    let a = call(&mut h2, "/slow.Svc/Get", &[("grpc-timeout", "50m")]).await;
    assert_ringway_error(&a, 4, "grpc-timeout (50ms)");
    // A malformed deadline is refused before anything is sent.
    let before = slow.accepted();
    let a = call(&mut h2, "/slow.Svc/Get", &[("grpc-timeout", "10x")]).await;
    assert_ringway_error(&a, 3, "malformed grpc-timeout: unit 'x'");
    assert_eq!(slow.accepted(), before);
    // A `%` in the message is percent-encoded.
    let a = call(&mut h2, "/other.Svc/100%25", &[]).await;
    assert_ringway_error(&a, 12, "path /other.Svc/100%2525");

    // The same failures for plain HTTP stay text answers.
    let r = proxy.get("/other.Svc/Get").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    assert!(r.headers.get("grpc-status").is_none());
    let r = proxy.get("/empty.Svc/Get").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "ringway: pool empty has no upstreams\n");

    // Counted by the status they ended with, under their pool; plain HTTP is not.
    for line in [
        "ringway_grpc_requests_total{code=\"UNIMPLEMENTED\",pool=\"\"} 2",
        "ringway_grpc_requests_total{code=\"UNAVAILABLE\",pool=\"empty\"} 1",
        "ringway_grpc_requests_total{code=\"UNAVAILABLE\",pool=\"down\"} 1",
        "ringway_grpc_requests_total{code=\"DEADLINE_EXCEEDED\",pool=\"slow\"} 2",
        "ringway_grpc_requests_total{code=\"INVALID_ARGUMENT\",pool=\"keyed\"} 1",
        // Refused before routing: no pool.
        "ringway_grpc_requests_total{code=\"INVALID_ARGUMENT\",pool=\"\"} 1",
    ] {
        metric_line(&proxy, line).await;
    }
}

/// How the fake upstream ends a call to a path.
fn answer_for(path: &str) -> Vec<u8> {
    let chunked = |status: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\
             trailer: grpc-status, grpc-message\r\n\r\n5\r\n\0\0\0\0\0\r\n\
             0\r\ngrpc-status: {status}\r\ngrpc-message: from upstream\r\n\r\n"
        )
    };
    let text = match path {
        // Trailers-only, in the head.
        "/svc.S/HeadUnavailable" => "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\
             grpc-status: 14\r\ncontent-length: 0\r\n\r\n"
            .to_owned(),
        "/svc.S/Unavailable" => chunked("14"),
        "/svc.S/NotFound" => chunked("5"),
        "/svc.S/Ok" => chunked("0"),
        // The head and one message, then nothing (see `serve_raw`).
        "/svc.S/Hold" => "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\
             transfer-encoding: chunked\r\n\r\n5\r\n\0\0\0\0\0\r\n"
            .to_owned(),
        // A 200 that ends without any status.
        _ => "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ncontent-length: 5\r\n\r\n\
             \0\0\0\0\0"
            .to_owned(),
    };
    text.into_bytes()
}

/// An HTTP/1.1 upstream written by hand, so its answers can carry chunked trailers:
/// reads each request (head, and a Content-Length or chunked body) and answers by
/// path, keeping the connection.
struct TrailerUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TrailerUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn trailer_upstream() -> TrailerUpstream {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_raw(stream));
        }
    });
    TrailerUpstream {
        addr,
        accepted,
        task,
    }
}

async fn serve_raw(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(head_end) = find(&buf, b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let original = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = original.split(' ').nth(1).unwrap_or("").to_owned();
        let head = original.to_lowercase();
        let body_end = if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(end) = find(&buf[head_end..], b"0\r\n\r\n") {
                    break head_end + end + 5;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + 4 + len {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            head_end + 4 + len
        };
        buf.drain(..body_end);
        if stream.write_all(&answer_for(&path)).await.is_err() {
            return;
        }
        if path == "/svc.S/Hold" {
            // Until the proxy closes the connection (or the test's bound passes).
            let _ = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await;
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Detection that trips on the third failure in a row, rate and local suspicion off.
const DETECTION: &str =
    "health: {passive: {consecutive_failures: 3, failure_rate_percent: 0, local_suspicion_ms: 0}}";

async fn grpc_proxy(extra: &[&str]) -> (TestProxy, TrailerUpstream) {
    let upstream = trailer_upstream().await;
    let mut pool = PoolSpec::new("rpc").address("u", upstream.addr, 1);
    for o in extra {
        pool = pool.opt(o);
    }
    let proxy = TestProxy::start(&config_yaml(&[pool], &[])).await;
    (proxy, upstream)
}

fn failures(proxy: &TestProxy) -> u32 {
    proxy.proxy.snapshot().pools[0].health.slots[0].consecutive_failures()
}

#[tokio::test]
async fn unavailable_from_the_upstream_trips_detection_and_application_errors_never_do() {
    let (proxy, upstream) = grpc_proxy(&[DETECTION]).await;
    let mut trips = proxy.proxy.snapshot().health.take_trips().unwrap();
    let mut h2 = h2_client(proxy.addr).await;

    // Application errors and successes, however many, are successes for detection.
    for _ in 0..4 {
        let a = call(&mut h2, "/svc.S/NotFound", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.grpc_status(), "5", "trailers passed through");
        let a = call(&mut h2, "/svc.S/Ok", &[]).await;
        assert_eq!(a.grpc_status(), "0");
    }
    assert_eq!(failures(&proxy), 0);
    assert!(trips.try_recv().is_err(), "no trip for application errors");
    // Trailers end a response: its connection went back to the pool each time.
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);

    // UNAVAILABLE in the trailers, then trailers-only in the head: three in a row trip.
    call(&mut h2, "/svc.S/Unavailable", &[]).await;
    call(&mut h2, "/svc.S/Unavailable", &[]).await;
    assert_eq!(failures(&proxy), 2);
    // A success in between restarts the run.
    call(&mut h2, "/svc.S/NotFound", &[]).await;
    assert_eq!(failures(&proxy), 0);
    for _ in 0..2 {
        call(&mut h2, "/svc.S/Unavailable", &[]).await;
    }
    let a = call(&mut h2, "/svc.S/HeadUnavailable", &[]).await;
    assert_eq!(a.header("grpc-status"), "14");
    let trip = within("a trip", trips.recv()).await.expect("trip");
    assert_eq!((&*trip.pool, &*trip.upstream), ("rpc", "u"));
    assert_eq!(trip.evidence.failures, 3);

    // A call that ends without a status counts as UNKNOWN, not a failure by default.
    let a = call(&mut h2, "/svc.S/NoStatus", &[]).await;
    assert!(a.trailers.is_none());
    assert_eq!(failures(&proxy), 0);

    for line in [
        "ringway_grpc_requests_total{code=\"NOT_FOUND\",pool=\"rpc\"} 5",
        "ringway_grpc_requests_total{code=\"OK\",pool=\"rpc\"} 4",
        "ringway_grpc_requests_total{code=\"UNAVAILABLE\",pool=\"rpc\"} 5",
        "ringway_grpc_requests_total{code=\"UNKNOWN\",pool=\"rpc\"} 1",
    ] {
        metric_line(&proxy, line).await;
    }
}

#[tokio::test]
async fn the_counted_grpc_statuses_are_configurable() {
    let counted = "health: {passive: {consecutive_failures: 2, failure_rate_percent: 0, \
                   local_suspicion_ms: 0, count_grpc: [NOT_FOUND]}}";
    let (proxy, _upstream) = grpc_proxy(&[counted]).await;
    let mut h2 = h2_client(proxy.addr).await;
    call(&mut h2, "/svc.S/Unavailable", &[]).await;
    call(&mut h2, "/svc.S/HeadUnavailable", &[]).await;
    assert_eq!(failures(&proxy), 0, "UNAVAILABLE is not listed");
    call(&mut h2, "/svc.S/NotFound", &[]).await;
    assert_eq!(failures(&proxy), 1);
}

#[tokio::test]
async fn plain_http_to_the_same_upstream_is_judged_by_http_status_only() {
    let (proxy, _upstream) = grpc_proxy(&[DETECTION]).await;
    // Not a gRPC call (no gRPC content-type): trailers are passed on, not read, and
    // a 200 is a success whatever they say.
    for _ in 0..4 {
        let r = proxy.get("/svc.S/Unavailable").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(failures(&proxy), 0);
    assert!(!proxy
        .proxy
        .metrics()
        .encode()
        .contains("ringway_grpc_requests_total{code=\"UNAVAILABLE\",pool=\"rpc\"} 1"));
}

#[tokio::test]
async fn a_call_the_client_leaves_counts_as_cancelled_and_not_against_the_upstream() {
    let (proxy, _upstream) = grpc_proxy(&[DETECTION]).await;
    let mut h2 = h2_client(proxy.addr).await;
    let req = Request::post("http://ringway.test/svc.S/Hold")
        .header("content-type", "application/grpc")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap();
    let resp = within("head", h2.send_request(req)).await.expect("head");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = within("first message", body.frame()).await;
    assert!(first.is_some_and(|f| f.is_ok()));
    drop(body);
    metric_line(
        &proxy,
        "ringway_grpc_requests_total{code=\"CANCELLED\",pool=\"rpc\"} 1",
    )
    .await;
    let snapshot = proxy.proxy.snapshot();
    let slot = &snapshot.pools[0].health.slots[0];
    let now = ringway::health::detector::now_ms();
    assert_eq!(
        slot.window(now),
        (0, 0),
        "nothing recorded: (requests, failures)"
    );
}
