//! HTTP/2 towards upstreams (`protocol: h2c`): requests multiplexed over a bounded
//! number of connections, bodies streamed both ways, trailers both ways, `te: trailers`
//! kept, and the connection cap holding under many concurrent requests.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// What an HTTP/2 upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    streams_now: AtomicUsize,
    streams_max: AtomicUsize,
    versions: Mutex<Vec<Version>>,
    te: Mutex<Vec<Option<HeaderValue>>>,
    request_trailers: Mutex<Vec<HeaderMap>>,
}

/// An h2c upstream: answers `NAME METHOD PATH` plus the request body echoed, with
/// trailers `x-upstream-trailer: NAME`; `/slow` waits 200 ms first.
async fn h2c_upstream(name: &'static str) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(answer(name, &s, req).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(name: &str, seen: &Seen, req: Request<Incoming>) -> Response<Body> {
    let now = seen.streams_now.fetch_add(1, Ordering::SeqCst) + 1;
    seen.streams_max.fetch_max(now, Ordering::SeqCst);
    seen.versions.lock().unwrap().push(req.version());
    seen.te
        .lock()
        .unwrap()
        .push(req.headers().get("te").cloned());
    let line = format!("{name} {} {}\n", req.method(), req.uri().path());
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let collected = req.into_body().collect().await.unwrap();
    if let Some(t) = collected.trailers() {
        seen.request_trailers.lock().unwrap().push(t.clone());
    }
    let mut body = line.into_bytes();
    body.extend_from_slice(&collected.to_bytes());
    seen.streams_now.fetch_sub(1, Ordering::SeqCst);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-upstream-trailer", HeaderValue::from_static("yes"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from(body))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Response::new(body.map_err(|e| match e {}).boxed())
}

fn h2c_pool(ups: &[(&str, SocketAddr)], extra: &[&str]) -> String {
    let mut pool = PoolSpec::new("grpc")
        .opt("hash_key: path")
        .opt("protocol: h2c");
    for line in extra {
        pool = pool.opt(line);
    }
    for (id, addr) in ups {
        pool = pool.address(id, *addr, 1);
    }
    config_yaml(&[pool], &[])
}

/// An h2c client connection to the proxy.
async fn h2c_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn requests_reach_an_h2c_upstream_over_http2_on_one_connection() {
    let (addr, seen) = h2c_upstream("a").await;
    let proxy = TestProxy::start(&h2c_pool(&[("a", addr)], &[])).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..10 {
        let r = client.get(&format!("/k{i}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("a GET /k{i}\n"));
    }
    let r = client
        .send(
            Request::post("/upload")
                .header("host", "svc.test")
                .body(full("hello body"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.text(), "a POST /upload\nhello body");
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "streams share one connection"
    );
    assert!(seen
        .versions
        .lock()
        .unwrap()
        .iter()
        .all(|v| *v == Version::HTTP_2));
}

#[tokio::test]
async fn trailers_pass_both_ways_and_te_trailers_is_kept() {
    let (addr, seen) = h2c_upstream("a").await;
    let proxy = TestProxy::start(&h2c_pool(&[("a", addr)], &[])).await;
    let mut client = h2c_client(proxy.addr).await;
    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-client-trailer", HeaderValue::from_static("sent"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part one, "))),
        Ok(Frame::data(Bytes::from_static(b"part two"))),
        Ok(Frame::trailers(req_trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames))
        .map_err(|e| match e {})
        .boxed();
    let req = Request::post("http://svc.test/pkg.Svc/Call")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap();
    let resp = within("response", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = within("body", resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(trailers["x-upstream-trailer"], "yes");
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(b"a POST /pkg.Svc/Call\npart one, part two")
    );
    let got = seen.request_trailers.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["x-client-trailer"], "sent");
    assert_eq!(seen.te.lock().unwrap()[0].as_ref().unwrap(), "trailers");
}

#[tokio::test]
async fn concurrent_requests_stay_within_the_connection_and_stream_caps() {
    let (addr, seen) = h2c_upstream("a").await;
    let extra = [
        "http2:",
        "  max_connections_per_upstream: 2",
        "  max_streams_per_connection: 5",
    ];
    let proxy = TestProxy::start(&h2c_pool(&[("a", addr)], &extra)).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let r = get(addr, &format!("/slow?{i}")).await;
            (r.status, r.text())
        }));
    }
    for t in tasks {
        let (status, text) = t.await.unwrap();
        assert_eq!(status, 200, "{text}");
        assert_eq!(text, "a GET /slow\n");
    }
    assert!(seen.connections.load(Ordering::SeqCst) <= 2);
    assert!(seen.streams_max.load(Ordering::SeqCst) <= 10);
    // The caps were reached, so waiting for a slot was exercised.
    assert_eq!(seen.streams_max.load(Ordering::SeqCst), 10);
    let up = &proxy.proxy.snapshot().pools[0].upstreams[0];
    let (conns, streams) = up.h2_usage();
    assert!((1..=2).contains(&conns), "{conns} connections");
    assert_eq!(streams, 0, "every stream slot was given back");
    let text = proxy.proxy.metrics().encode();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{pool=\"grpc\",upstream=\"a\"}}")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(line("ringway_upstream_h2_connections"), conns.to_string());
    assert_eq!(line("ringway_upstream_h2_streams"), "0");
}

#[tokio::test]
async fn h2_settings_are_checked_by_name() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = [
        (vec!["protocol: h3"], "pools[0].protocol"),
        (vec!["protocol: h2"], "needs the pool's tls section"),
        (
            vec![
                "protocol: http1",
                "http2:",
                "  max_streams_per_connection: 5",
            ],
            "pools[0].http2",
        ),
        (
            vec!["protocol: h2c", "http2:", "  max_streams_per_connection: 0"],
            "pools[0].http2.max_streams_per_connection",
        ),
        (
            vec![
                "protocol: h2c",
                "http2:",
                "  max_connections_per_upstream: 99999",
            ],
            "pools[0].http2.max_connections_per_upstream",
        ),
        (
            vec!["protocol: h2c", "http2:", "  pings: 3"],
            "pools[0].http2.pings",
        ),
    ];
    refused_pool_settings(addr, &bad);
}
