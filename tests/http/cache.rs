//! The response cache (`pools[].cache`) over real sockets: one table row per
//! RFC 9111 directive, coalesced misses, revalidation, stale copies while the
//! upstream is down, HEAD from GET entries, objects past the size bound, memory under
//! a load of distinct keys (a real process's RSS), and purges agreed by three
//! `ringway run` instances.

use crate::common;
use crate::procs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;

use common::*;

/// What the scripted upstream answers on one path.
#[derive(Clone, Default)]
struct Script {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Answer 304 (head only) to a request whose `If-None-Match` is this.
    etag_304: Option<String>,
    /// Wait this long before answering (so that concurrent misses overlap).
    delay_ms: u64,
}

/// An upstream answering each path as scripted (`{n}` in a header or body becomes
/// the path's request count), counting the requests it got per path and keeping
/// the last request head of each.
#[derive(Clone, Default)]
struct Scripted {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    seen: Arc<Mutex<HashMap<String, http::HeaderMap>>>,
}

impl Scripted {
    fn set(&self, path: &str, script: Script) {
        self.scripts.lock().unwrap().insert(path.to_owned(), script);
    }

    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn last_seen(&self, path: &str) -> http::HeaderMap {
        self.seen
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    fn handler(&self) -> Handler {
        let me = self.clone();
        handler(move |req: Request<hyper::body::Incoming>| {
            let me = me.clone();
            async move {
                let path = req.uri().path_and_query().unwrap().as_str().to_owned();
                let n = {
                    let mut counts = me.counts.lock().unwrap();
                    let c = counts.entry(path.clone()).or_default();
                    *c += 1;
                    *c
                };
                me.seen
                    .lock()
                    .unwrap()
                    .insert(path.clone(), req.headers().clone());
                let script = me
                    .scripts
                    .lock()
                    .unwrap()
                    .get(&path)
                    .cloned()
                    .unwrap_or_default();
                if script.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(script.delay_ms)).await;
                }
                let fill = |s: &str| s.replace("{n}", &n.to_string());
                let inm = req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .map(|v| v.to_str().unwrap().to_owned());
                let not_modified = script.etag_304.is_some() && inm == script.etag_304;
                let mut resp = match not_modified {
                    true => Response::new(empty()),
                    false => Response::new(full(fill(&script.body))),
                };
                *resp.status_mut() = match not_modified {
                    true => StatusCode::NOT_MODIFIED,
                    false => StatusCode::from_u16(script.status.max(200)).unwrap(),
                };
                for (k, v) in &script.headers {
                    resp.headers_mut().append(
                        header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        fill(v).parse().unwrap(),
                    );
                }
                resp
            }
        })
    }
}

fn script(headers: &[(&str, &str)], body: &str) -> Script {
    Script {
        status: 200,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_owned(),
        ..Script::default()
    }
}

/// A proxy with one cached pool over one scripted upstream.
async fn cached_proxy(cache_lines: &[&str]) -> (TestProxy, Scripted, Upstream) {
    let scripted = Scripted::default();
    let up = Upstream::start("s", scripted.handler()).await;
    let mut pool = PoolSpec::new("web").upstream(&up);
    pool = match cache_lines.is_empty() {
        true => pool.opt("cache: {}"),
        false => pool.opt("cache:"),
    };
    for l in cache_lines {
        pool = pool.opt(&format!("  {l}"));
    }
    let proxy = TestProxy::start(&config_yaml(&[pool], &[])).await;
    (proxy, scripted, up)
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = get_req(path);
    for (k, v) in headers {
        req.headers_mut().append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

fn head_req(path: &str) -> Request<Body> {
    let mut req = get_req(path);
    *req.method_mut() = http::Method::HEAD;
    req
}

type Fields<'a> = Vec<(&'a str, &'a str)>;
/// Response fields, request fields, body, and whether the response is stored.
type Row<'a> = (Fields<'a>, Fields<'a>, &'a str, bool);

#[tokio::test]
async fn each_directive_stores_or_not_as_rfc_9111_says() {
    let (proxy, up, _u) = cached_proxy(&["max_bytes: 1048576", "max_object_bytes: 1000"]).await;
    let now = std::time::SystemTime::now();
    let date = httpdate(now);
    let future = httpdate(now + Duration::from_secs(600));
    let past = httpdate(now - Duration::from_secs(600));
    let big = "x".repeat(2000);
    // (response headers, request headers, body, stored)
    let rows: Vec<Row> = vec![
        (vec![("cache-control", "max-age=60")], vec![], "a", true),
        (vec![("cache-control", "s-maxage=60")], vec![], "a", true),
        (
            vec![("cache-control", "max-age=60, must-revalidate")],
            vec![],
            "a",
            true,
        ),
        (
            vec![("cache-control", "no-store, max-age=60")],
            vec![],
            "a",
            false,
        ),
        (
            vec![("cache-control", "no-cache, max-age=60")],
            vec![],
            "a",
            false,
        ),
        (
            vec![("cache-control", "private, max-age=60")],
            vec![],
            "a",
            false,
        ),
        (
            vec![("date", &date), ("expires", &future)],
            vec![],
            "a",
            true,
        ),
        (
            vec![("date", &date), ("expires", &past)],
            vec![],
            "a",
            false,
        ),
        (vec![("expires", "0")], vec![], "a", false),
        (vec![], vec![], "a", false),
        (
            vec![("cache-control", "max-age=60"), ("set-cookie", "id={n}")],
            vec![],
            "a",
            false,
        ),
        (
            vec![("cache-control", "max-age=60"), ("vary", "*")],
            vec![],
            "a",
            false,
        ),
        (
            vec![("cache-control", "max-age=60")],
            vec![("authorization", "Bearer x")],
            "a",
            false,
        ),
        (
            vec![("cache-control", "public, max-age=60")],
            vec![("authorization", "Bearer x")],
            "a",
            true,
        ),
        (
            vec![("cache-control", "max-age=60")],
            vec![("cookie", "c=1")],
            "a",
            false,
        ),
        (
            vec![("cache-control", "s-maxage=60")],
            vec![("cookie", "c=1")],
            "a",
            true,
        ),
        (
            vec![("cache-control", "max-age=60")],
            vec![("cache-control", "no-store")],
            "a",
            false,
        ),
        (
            vec![("cache-control", "max-age=60")],
            vec![("range", "bytes=0-0")],
            "a",
            false,
        ),
        (vec![("cache-control", "max-age=60")], vec![], &big, false),
    ];
    for (i, (resp_h, req_h, body, stored)) in rows.iter().enumerate() {
        let path = format!("/row/{i}");
        up.set(&path, script(resp_h, body));
        let first = send(proxy.addr, get_with(&path, req_h)).await;
        let second = send(proxy.addr, get_with(&path, req_h)).await;
        let want = if *stored { 1 } else { 2 };
        assert_eq!(
            up.count(&path),
            want,
            "row {i}: {resp_h:?} for a request with {req_h:?}"
        );
        assert_eq!(second.body, first.body, "row {i}");
        if *stored {
            let age: u64 = second.headers[header::AGE]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(age < 60, "row {i}: Age {age}");
        } else {
            assert!(
                second.headers.get(header::AGE).is_none(),
                "row {i}: {:?}",
                second.headers
            );
        }
    }
}

fn httpdate(t: std::time::SystemTime) -> String {
    ringway::proxy::cache::policy::fmt_http_date(t)
}

#[tokio::test]
async fn an_age_from_upstream_counts_against_max_age() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    // Already 60 s old when it arrives: stale at once.
    up.set(
        "/aged",
        script(&[("cache-control", "max-age=60"), ("age", "60")], "a"),
    );
    get(proxy.addr, "/aged").await;
    get(proxy.addr, "/aged").await;
    assert_eq!(up.count("/aged"), 2);
    up.set(
        "/young",
        script(&[("cache-control", "max-age=60"), ("age", "10")], "a"),
    );
    get(proxy.addr, "/young").await;
    let hit = get(proxy.addr, "/young").await;
    assert_eq!(up.count("/young"), 1);
    let age: u64 = hit.headers[header::AGE].to_str().unwrap().parse().unwrap();
    assert!((10..60).contains(&age), "Age {age}");
}

#[tokio::test]
async fn set_cookie_and_private_are_never_served_to_another_client() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    up.set(
        "/me",
        script(
            &[
                ("cache-control", "max-age=60"),
                ("set-cookie", "session={n}"),
            ],
            "you are {n}",
        ),
    );
    up.set(
        "/mine",
        script(&[("cache-control", "private, max-age=60")], "private {n}"),
    );
    for path in ["/me", "/mine"] {
        let alice = get(proxy.addr, path).await;
        let bob = get(proxy.addr, path).await;
        assert_ne!(alice.body, bob.body, "{path}");
        assert_eq!(up.count(path), 2, "{path}");
    }
    let bob = get(proxy.addr, "/me").await;
    assert_eq!(bob.all("set-cookie"), vec!["session=3"]);
}

#[tokio::test]
async fn credentialed_requests_get_only_shareable_copies() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    up.set(
        "/page",
        script(&[("cache-control", "max-age=60")], "anon {n}"),
    );
    get(proxy.addr, "/page").await;
    // Stored from an anonymous request; not handed to a request with credentials.
    let alice = send(
        proxy.addr,
        get_with("/page", &[("authorization", "Bearer a")]),
    )
    .await;
    assert_eq!(alice.text(), "anon 2");
    assert_eq!(get(proxy.addr, "/page").await.text(), "anon 1");
}

#[tokio::test]
async fn head_is_answered_from_a_get_entry() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    up.set(
        "/h",
        script(&[("cache-control", "max-age=60")], "twelve bytes"),
    );
    // A HEAD miss goes upstream and stores nothing (it has no body).
    let mut c = Client::connect(proxy.addr).await;
    let r = c.send(head_req("/h")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.get("/h").await;
    assert_eq!(r.text(), "twelve bytes");
    assert_eq!(up.count("/h"), 2);
    let r = c.send(head_req("/h")).await;
    assert_eq!(up.count("/h"), 2, "HEAD after GET is a hit");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.headers[header::CONTENT_LENGTH], "12");
    assert!(r.headers.contains_key(header::AGE));
    // The connection still works: no body bytes were left on it.
    assert_eq!(c.get("/h").await.text(), "twelve bytes");
}

#[tokio::test]
async fn a_client_whose_copy_matches_a_hit_gets_304() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    up.set(
        "/c",
        script(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("last-modified", LM),
                ("content-type", "text/plain"),
            ],
            "the body",
        ),
    );
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/c").await.text(), "the body");
    // (request fields, method HEAD?, status expected)
    type Row<'a> = (&'a [(&'a str, &'a str)], bool, u16);
    let rows: &[Row] = &[
        (&[("if-none-match", "\"v1\"")], false, 304),
        (&[("if-none-match", "W/\"v1\"")], false, 304),
        (&[("if-none-match", "\"v0\", \"v1\"")], true, 304),
        (&[("if-none-match", "\"v0\"")], false, 200),
        (&[("if-modified-since", LM)], false, 304),
        (
            &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
            false,
            200,
        ),
        (
            &[("if-none-match", "\"v0\""), ("if-modified-since", LM)],
            false,
            200,
        ),
    ];
    for (i, (fields, head, want)) in rows.iter().enumerate() {
        let mut req = get_with("/c", fields);
        if *head {
            *req.method_mut() = http::Method::HEAD;
        }
        let r = c.send(req).await;
        assert_eq!(r.status.as_u16(), *want, "row {i}: {fields:?}");
        match *want {
            304 => {
                assert!(r.body.is_empty(), "row {i}");
                assert_eq!(r.headers[header::ETAG], "\"v1\"", "row {i}");
                assert_eq!(r.headers[header::CACHE_CONTROL], "max-age=60", "row {i}");
                assert!(r.headers.contains_key(header::AGE), "row {i}");
                assert!(!r.headers.contains_key(header::CONTENT_TYPE), "row {i}");
            }
            _ => assert_eq!(r.text(), "the body", "row {i}"),
        }
    }
    assert_eq!(up.count("/c"), 1, "every row was answered from the cache");
    // The connection is still in step: no body bytes were left on it.
    assert_eq!(c.get("/c").await.text(), "the body");
}

#[tokio::test]
async fn a_key_template_names_what_an_entry_is() {
    let cacheable = |body: &str| script(&[("cache-control", "max-age=60")], body);
    // The query string left out of the key: one entry answers every query.
    let (proxy, up, _u) = cached_proxy(&["key: \"{host}{path}\""]).await;
    up.set("/k?a=1", cacheable("copy {n}"));
    up.set("/k?a=2", cacheable("other {n}"));
    assert_eq!(send(proxy.addr, get_req("/k?a=1")).await.text(), "copy 1");
    assert_eq!(send(proxy.addr, get_req("/k?a=2")).await.text(), "copy 1");
    assert_eq!(up.count("/k?a=2"), 0);
    // A tenant header in the key: one entry per tenant, and a request without the
    // header is neither served from the cache nor stored.
    let (proxy, up, _u) = cached_proxy(&["key: \"{uri} {header:x-tenant}\""]).await;
    up.set("/t", cacheable("copy {n}"));
    let (a, b) = ([("x-tenant", "a")], [("x-tenant", "b")]);
    assert_eq!(send(proxy.addr, get_with("/t", &a)).await.text(), "copy 1");
    assert_eq!(send(proxy.addr, get_with("/t", &b)).await.text(), "copy 2");
    assert_eq!(send(proxy.addr, get_with("/t", &a)).await.text(), "copy 1");
    assert_eq!(send(proxy.addr, get_req("/t")).await.text(), "copy 3");
    assert_eq!(send(proxy.addr, get_req("/t")).await.text(), "copy 4");
    assert_eq!(send(proxy.addr, get_with("/t", &b)).await.text(), "copy 2");
    assert_eq!(up.count("/t"), 4);
}

#[tokio::test]
async fn vary_stores_one_copy_per_varying_request_header() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    up.set(
        "/v",
        script(
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            "copy {n}",
        ),
    );
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(send(proxy.addr, get_with("/v", &en)).await.text(), "copy 1");
    assert_eq!(send(proxy.addr, get_with("/v", &fr)).await.text(), "copy 2");
    assert_eq!(send(proxy.addr, get_with("/v", &en)).await.text(), "copy 1");
    assert_eq!(send(proxy.addr, get_with("/v", &fr)).await.text(), "copy 2");
    assert_eq!(up.count("/v"), 2);
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let (proxy, up, _u) = cached_proxy(&["coalesce_timeout_ms: 20000"]).await;
    let mut s = script(&[("cache-control", "max-age=60")], "hot {n}");
    s.delay_ms = 300;
    up.set("/hot", s);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move { get(addr, "/hot").await }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "hot 1");
    }
    assert_eq!(up.count("/hot"), 1);
    let metrics = proxy.proxy.metrics().encode();
    // The waiters that coalesced were answered from the entry: hits too.
    let hits = metric(&metrics, "ringway_cache_hits_total{pool=\"web\"}");
    assert_eq!(
        metric(&metrics, "ringway_cache_misses_total{pool=\"web\"}"),
        1.0
    );
    assert_eq!(hits, 99.0);
}

/// A HEAD miss stores nothing, so it must not lead the fill: GETs arriving while it is
/// upstream coalesce behind a GET of their own instead of waiting for the HEAD and then
/// each going upstream.
#[tokio::test]
async fn a_head_miss_does_not_hold_gets_back() {
    let (proxy, up, _u) = cached_proxy(&["coalesce_timeout_ms: 20000"]).await;
    let mut s = script(&[("cache-control", "max-age=60")], "body");
    s.delay_ms = 400;
    up.set("/slow", s);
    let addr = proxy.addr;
    let head =
        tokio::spawn(async move { Client::connect(addr).await.send(head_req("/slow")).await });
    while up.count("/slow") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(tokio::spawn(async move { get(addr, "/slow").await }));
    }
    assert_eq!(head.await.unwrap().status, StatusCode::OK);
    for t in tasks {
        assert_eq!(t.await.unwrap().text(), "body");
    }
    assert_eq!(up.count("/slow"), 2, "the HEAD and one GET for the twenty");
    let r = Client::connect(addr).await.send(head_req("/slow")).await;
    assert!(r.body.is_empty());
    assert_eq!(up.count("/slow"), 2, "then a HEAD is a hit");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn waiters_go_upstream_themselves_when_the_first_answer_is_not_cacheable() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    let mut s = script(&[("cache-control", "no-store")], "n{n}");
    s.delay_ms = 200;
    up.set("/nostore", s);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move { get(addr, "/nostore").await }));
    }
    let mut bodies: Vec<String> = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap().text());
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 5, "each went upstream: {bodies:?}");
    assert_eq!(up.count("/nostore"), 5);
}

#[tokio::test]
async fn a_stale_copy_is_revalidated_and_a_304_refreshes_it() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    let mut s = script(
        &[("cache-control", "no-cache"), ("etag", "\"e1\"")],
        "body {n}",
    );
    s.etag_304 = Some("\"e1\"".into());
    up.set("/etag", s);
    assert_eq!(get(proxy.addr, "/etag").await.text(), "body 1");
    let again = get(proxy.addr, "/etag").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.text(), "body 1", "the 304 refreshed the stored copy");
    assert_eq!(up.count("/etag"), 2);
    assert_eq!(up.last_seen("/etag")[header::IF_NONE_MATCH], "\"e1\"");
}

#[tokio::test]
async fn objects_past_max_object_bytes_pass_through_uncached() {
    let (proxy, up, _u) = cached_proxy(&["max_bytes: 1048576", "max_object_bytes: 1000"]).await;
    up.set(
        "/big",
        script(&[("cache-control", "max-age=60")], &"y".repeat(5000)),
    );
    // Streamed without a length: found too big only mid-stream.
    let stream_up = Upstream::start(
        "stream",
        handler(|_req| async {
            let chunks = (0..10)
                .map(|_| Ok::<_, Error>(http_body::Frame::data(Bytes::from(vec![b'z'; 500]))));
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            let mut resp = Response::new(BodyExt::boxed(body));
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
            resp
        }),
    )
    .await;
    let pool = PoolSpec::new("s")
        .upstream(&stream_up)
        .opt("cache:")
        .opt("  max_bytes: 1048576")
        .opt("  max_object_bytes: 1000");
    let streamed = TestProxy::start(&config_yaml(&[pool], &[])).await;
    for _ in 0..2 {
        let r = get(streamed.addr, "/s").await;
        assert_eq!(r.body.len(), 5000);
        assert!(r.headers.get(header::AGE).is_none());
    }
    let m = streamed.proxy.metrics().encode();
    assert_eq!(metric(&m, "ringway_cache_hits_total{pool=\"s\"}"), 0.0);
    assert_eq!(metric(&m, "ringway_cache_bytes{pool=\"s\"}"), 0.0);
    for _ in 0..2 {
        assert_eq!(get(proxy.addr, "/big").await.body.len(), 5000);
    }
    assert_eq!(up.count("/big"), 2);
}

#[tokio::test]
async fn a_stale_copy_is_served_while_the_upstream_is_down_and_refreshed_after() {
    let scripted = Scripted::default();
    let mut up = Upstream::start("s", scripted.handler()).await;
    let addr = up.addr;
    let pool = PoolSpec::new("web").upstream(&up).opt("cache: {}");
    let proxy = TestProxy::start(&config_yaml(&[pool], &[])).await;
    scripted.set(
        "/s",
        script(
            &[("cache-control", "max-age=1, stale-if-error=600")],
            "v{n}",
        ),
    );
    assert_eq!(get(proxy.addr, "/s").await.text(), "v1");
    up.stop().await;
    // Past max-age=1 (ages are whole seconds).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = get(proxy.addr, "/s").await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.text(), "v1");
    assert!(
        stale.all("warning")[0].starts_with("111 "),
        "{:?}",
        stale.headers
    );
    let age: u64 = stale.headers[header::AGE]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(age >= 2, "Age {age}");
    // The upstream comes back on the same address: the next request refreshes.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind upstream");
    let _up = Upstream::serve("s", listener, scripted.handler());
    let fresh = within("refreshed copy", async {
        loop {
            let r = get(proxy.addr, "/s").await;
            if r.text() != "v1" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(fresh.text(), "v2");
    assert!(fresh.headers.get("warning").is_none());
    assert_eq!(get(proxy.addr, "/s").await.text(), "v2", "stored again");
    let m = proxy.proxy.metrics().encode();
    assert!(metric(&m, "ringway_cache_stale_served_total{pool=\"web\"}") >= 1.0);
}

#[tokio::test]
async fn stale_while_revalidate_serves_the_copy_and_refreshes_it_behind() {
    let (proxy, up, _u) = cached_proxy(&[]).await;
    up.set(
        "/swr",
        script(
            &[("cache-control", "max-age=1, stale-while-revalidate=600")],
            "v{n}",
        ),
    );
    assert_eq!(get(proxy.addr, "/swr").await.text(), "v1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = get(proxy.addr, "/swr").await;
    assert_eq!(stale.text(), "v1");
    assert!(
        stale.all("warning")[0].starts_with("110 "),
        "{:?}",
        stale.headers
    );
    let fresh = within("background refresh", async {
        loop {
            let r = get(proxy.addr, "/swr").await;
            if r.text() == "v2" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(fresh.headers.get("warning").is_none());
    assert_eq!(up.count("/swr"), 2);
}

#[tokio::test]
async fn must_revalidate_forbids_stale_copies_on_error() {
    let scripted = Scripted::default();
    let mut up = Upstream::start("s", scripted.handler()).await;
    let pool = PoolSpec::new("web").upstream(&up).opt("cache: {}");
    let proxy = TestProxy::start(&config_yaml(&[pool], &[])).await;
    scripted.set(
        "/m",
        script(
            &[(
                "cache-control",
                "max-age=1, must-revalidate, stale-if-error=600",
            )],
            "v{n}",
        ),
    );
    assert_eq!(get(proxy.addr, "/m").await.text(), "v1");
    up.stop().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(proxy.addr, "/m").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
}

#[test]
fn bad_cache_settings_are_refused_naming_the_field() {
    let addr = loopback();
    refused_pool_settings(
        addr,
        &[
            (
                vec!["cache:", "  max_bytes: 10"],
                "pools[0].cache.max_bytes: must be at least 65536",
            ),
            (
                vec![
                    "cache:",
                    "  max_bytes: 1048576",
                    "  max_object_bytes: 1048576",
                ],
                "pools[0].cache.max_object_bytes: must be at most a quarter of max_bytes (262144)",
            ),
            (
                vec!["cache:", "  coalesce_timeout_ms: 0"],
                "pools[0].cache.coalesce_timeout_ms",
            ),
            (
                vec!["cache:", "  size: 1"],
                "pools[0].cache.size: unknown field",
            ),
            (vec!["cache:", "  key: \"{nope}\""], "pools[0].cache.key"),
        ],
    );
}

/// RSS of a process in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 8 MiB of cache under 40 MiB of distinct 4 KiB objects: the weighed bytes stay
/// within `max_bytes` and the process grows by at most `max_bytes` plus a margin.
/// The margin (16 MiB) covers what is not the cache's: allocator arenas per worker
/// thread, connection buffers of the 8 clients, and hash-table slack; an unbounded
/// cache would grow by the whole 40 MiB.
#[test]
fn memory_stays_within_max_bytes_under_distinct_keys() {
    const MAX_BYTES: u64 = 8 << 20;
    const MARGIN: u64 = 16 << 20;
    let rt = procs::runtime();
    let body = "o".repeat(4096);
    let up = rt.block_on(Upstream::start(
        "big",
        handler(move |_req| {
            let body = body.clone();
            async move {
                let mut r = Response::new(full(body));
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, "max-age=600".parse().unwrap());
                r
            }
        }),
    ));
    let dir = procs::test_dir("cache-rss");
    let (listen, admin) = (procs::free_port(), procs::free_port());
    let yaml = format!(
        "node: {{id: n1, data_dir: {data:?}}}\nlisteners: [{{address: \"127.0.0.1:{listen}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\"}}\n\
         pools:\n  - name: web\n    upstreams: [{{address: \"{up}\"}}]\n    cache: {{max_bytes: {MAX_BYTES}, max_object_bytes: 65536}}\n",
        data = dir.join("data").display().to_string(),
        up = up.addr,
    );
    let config = dir.join("n1.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut i = procs::Instance {
        name: "n1".into(),
        config,
        admin: procs::local(admin),
        listener: procs::local(listen),
        raft: procs::local(0),
        child: None,
    };
    i.start();
    procs::eventually("instance serving", || {
        procs::http_get(i.listener, "/warm/0")
    });
    let pid = i.child.as_ref().unwrap().id();
    // Warm up the process (threads, connection buffers) before the baseline.
    for n in 0..200 {
        procs::http_get(i.listener, &format!("/warm/{n}")).unwrap();
    }
    let base = rss_bytes(pid);
    let listener = i.listener;
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for n in 0..1280 {
                    let body = procs::http_get(listener, &format!("/k/{t}/{n}")).unwrap();
                    assert_eq!(body.len(), 4096);
                }
            });
        }
    });
    i.assert_running();
    let grown = rss_bytes(pid).saturating_sub(base);
    let metrics = procs::http_get(i.admin, "/metrics").unwrap();
    let held = metric(&metrics, "ringway_cache_bytes{pool=\"web\"}") as u64;
    let evicted = metric(&metrics, "ringway_cache_evictions_total{pool=\"web\"}");
    assert!(held <= MAX_BYTES, "held {held}");
    assert!(evicted > 0.0, "40 MiB through an 8 MiB cache evicts");
    assert!(
        grown <= MAX_BYTES + MARGIN,
        "RSS grew by {grown} bytes (base {base})"
    );
}

/// A purge proposed on one of three instances removes the entry on all three.
#[test]
fn a_purge_on_one_instance_removes_the_entry_on_all_three() {
    let rt = procs::runtime();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let up = rt.block_on(Upstream::start(
        "v",
        handler(move |req| {
            let v = count.fetch_add(1, Ordering::SeqCst) + 1;
            let path = req.uri().path().to_owned();
            async move {
                let mut r = Response::new(full(format!("{path} v{v}")));
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, "max-age=600".parse().unwrap());
                r
            }
        }),
    ));
    let dir = procs::test_dir("cache-purge");
    let nodes = procs::cluster_with(&dir, &[up.addr], "", "    cache: {}\n");
    let refs: Vec<&procs::Instance> = nodes.iter().collect();
    procs::eventually("a leader", || procs::agreed_leader(&refs));
    // Each instance stores its own copy of each path.
    let copies = |path: &str| -> Vec<String> {
        nodes
            .iter()
            .map(|i| procs::http_get(i.listener, path).unwrap())
            .collect()
    };
    let before = copies("/a/1");
    let other = copies("/b/1");
    assert_eq!(copies("/a/1"), before, "served from each cache");
    let (status, body) = nodes[1]
        .change("DELETE", "/api/cache?pool=web&key=GET+test/a/1", "")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for (i, node) in nodes.iter().enumerate() {
        procs::eventually(&format!("purge applied on n{}", i + 1), || {
            let now = procs::http_get(node.listener, "/a/1")?;
            (now != before[i]).then_some(())
        });
    }
    assert_eq!(copies("/b/1"), other, "other keys stay");
    // A prefix purge, and a refused one without the token.
    let (status, _) = procs::http_call(
        nodes[0].admin,
        "DELETE",
        "/api/cache?pool=web&prefix=GET+test/b/",
        &[],
        "",
    )
    .unwrap();
    assert_eq!(status, 401);
    let (status, body) = nodes[2]
        .change("DELETE", "/api/cache?pool=web&prefix=GET+test/b/", "")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for (i, node) in nodes.iter().enumerate() {
        procs::eventually("prefix purge applied", || {
            let now = procs::http_get(node.listener, "/b/1")?;
            (now != other[i]).then_some(())
        });
    }
    let (status, body) = nodes[0]
        .change("DELETE", "/api/cache?pool=web", "")
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = nodes[0]
        .change("DELETE", "/api/cache?pool=nope&key=x", "")
        .unwrap();
    assert_eq!(status, 404);
}
