//! gRPC calls through ringway: every call pattern to h2c backends and to h2 backends
//! over TLS (ALPN `h2` only), trailers and `te: trailers` intact, stickiness by a
//! metadata header, failover past a refusing upstream, and a long bidirectional
//! stream that outlives a reload adding an upstream.

use tonic::Code;

use crate::common::*;
use crate::grpc::backend::{refused_addr, Backend};
use crate::grpc::check;
use crate::grpc::echo::EchoClient;
use crate::tlsutil::{yaml_path, Ca, Dir};

/// The pool every test here routes to.
pub const POOL: &str = "grpc";

/// A pool `grpc` of `backends` (id: the backend's name), with `options` lines.
pub fn pool(backends: &[&Backend], options: &[&str]) -> PoolSpec {
    let pool = backends
        .iter()
        .fold(PoolSpec::new(POOL), |p, b| p.address(&b.name, b.addr, 1));
    options.iter().fold(pool, |p, o| p.opt(o))
}

pub async fn proxy(pool: PoolSpec) -> TestProxy {
    TestProxy::start(&config_yaml(&[pool], &[])).await
}

const H2C: &str = "protocol: h2c";
const BY_USER: &str = "hash_key: header:x-user";

/// Every pattern through `proxy`; each call must be served by one of `names`.
async fn every_pattern(proxy: &TestProxy, names: &[&str]) {
    let mut client = EchoClient::connect(proxy.addr).await;
    let served = [
        check::unary(&mut client, "ann").await,
        check::server_streaming(&mut client, 50).await,
        check::trailer_status(&mut client, Code::FailedPrecondition).await,
        check::client_streaming(&mut client, 100).await,
        check::bidi(&mut client, 20).await,
    ];
    for b in served {
        assert!(
            names.contains(&b.as_str()),
            "served by {b}, not one of {names:?}"
        );
    }
    check::unary_error(&mut client, Code::NotFound).await;
    check::unary_error(&mut client, Code::ResourceExhausted).await;
}

#[tokio::test]
async fn every_call_pattern_to_h2c_backends() {
    let (b1, b2) = (Backend::h2c("b1").await, Backend::h2c("b2").await);
    let proxy = proxy(pool(&[&b1, &b2], &[H2C, BY_USER])).await;
    every_pattern(&proxy, &["b1", "b2"]).await;
    let owner = predict(&proxy.config, POOL, "ann");
    let mut client = EchoClient::connect(proxy.addr).await;
    assert_eq!(check::unary(&mut client, "ann").await, owner);
    // Many calls, few connections: HTTP/2 multiplexes them.
    let accepted = b1.conns.accepted() + b2.conns.accepted();
    assert!((1..=2).contains(&accepted), "{accepted} connections");
}

#[tokio::test]
async fn every_call_pattern_to_h2_backends_over_tls_with_alpn() {
    let ca = Ca::new("backend CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let dir = Dir::new();
    let ca_file = dir.ca("ca", &ca);
    let (b1, b2) = (
        Backend::tls("t1", &leaf).await,
        Backend::tls("t2", &leaf).await,
    );
    let tls = format!("tls: {{ca_file: {}}}", yaml_path(&ca_file));
    let proxy = proxy(pool(&[&b1, &b2], &["protocol: h2", &tls, BY_USER])).await;
    every_pattern(&proxy, &["t1", "t2"]).await;
    assert!(b1.conns.accepted() + b2.conns.accepted() >= 1);
}

/// `protocol: auto` over TLS to backends that offer `h2` in ALPN: HTTP/2, every call
/// pattern, calls multiplexed on one connection per backend (gRPC needs HTTP/2, so
/// every pattern passing shows ALPN picked it), with `max_connections` set.
#[tokio::test]
async fn auto_over_tls_speaks_http2_where_alpn_offers_it() {
    let ca = Ca::new("backend CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let dir = Dir::new();
    let ca_file = dir.ca("ca", &ca);
    let (b1, b2) = (
        Backend::tls("t1", &leaf).await,
        Backend::tls("t2", &leaf).await,
    );
    let tls = format!("tls: {{ca_file: {}}}", yaml_path(&ca_file));
    let limits = "upstream_limits: {max_connections: 2}";
    let proxy = proxy(pool(
        &[&b1, &b2],
        &["protocol: auto", &tls, limits, BY_USER],
    ))
    .await;
    every_pattern(&proxy, &["t1", "t2"]).await;
    for b in [&b1, &b2] {
        assert_eq!(
            b.conns.accepted(),
            1,
            "{}: one multiplexed connection",
            b.name
        );
    }
}

#[tokio::test]
async fn the_same_metadata_key_sticks_to_one_backend_and_keys_spread() {
    let bs = [
        Backend::h2c("b1").await,
        Backend::h2c("b2").await,
        Backend::h2c("b3").await,
    ];
    let refs: Vec<&Backend> = bs.iter().collect();
    let proxy = proxy(pool(&refs, &[H2C, BY_USER])).await;
    let mut client = EchoClient::connect(proxy.addr).await;
    let mut used = std::collections::BTreeSet::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        let owner = predict(&proxy.config, POOL, &user);
        for _ in 0..3 {
            assert_eq!(check::unary(&mut client, &user).await, owner, "{user}");
        }
        let chat = check::Chat::open(&mut client, &user).await;
        assert_eq!(
            chat.backend, owner,
            "a stream with {user} goes where its calls go"
        );
        chat.finish().await;
        used.insert(owner);
    }
    assert_eq!(
        used.len(),
        3,
        "30 keys spread over all three backends: {used:?}"
    );
}

#[tokio::test]
async fn a_refusing_upstream_is_skipped_for_the_next_on_the_ring() {
    let (b1, b2) = (Backend::h2c("b1").await, Backend::h2c("b2").await);
    let dead = refused_addr().await;
    let spec = pool(&[&b1, &b2], &[H2C, BY_USER]).address("dead", dead, 1);
    let proxy = proxy(spec).await;
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| predict(&proxy.config, POOL, u) == "dead")
        .expect("some key belongs to the dead upstream");
    let next = walk_ids(&proxy.config, POOL, &user, 2)[1].clone();
    let mut client = EchoClient::connect(proxy.addr).await;
    assert_eq!(check::unary(&mut client, &user).await, next);
    let mut chat = check::Chat::open(&mut client, &user).await;
    assert_eq!(chat.backend, next);
    chat.round().await;
    chat.finish().await;
}

#[tokio::test]
async fn a_long_stream_outlives_a_reload_that_adds_an_upstream() {
    let (b1, b2, b3) = (
        Backend::h2c("b1").await,
        Backend::h2c("b2").await,
        Backend::h2c("b3").await,
    );
    let proxy = proxy(pool(&[&b1, &b2], &[H2C, BY_USER])).await;
    let mut client = EchoClient::connect(proxy.addr).await;
    let mut chat = check::Chat::open(&mut client, "long").await;
    for _ in 0..5 {
        chat.round().await;
    }
    let grown = parse_config(&config_yaml(
        &[pool(&[&b1, &b2, &b3], &[H2C, BY_USER])],
        &[],
    ));
    let previous = proxy.proxy.snapshot();
    proxy
        .proxy
        .swap(ringway::proxy::Snapshot::build(&grown, Some(&previous)));
    // The open stream carries on with its backend, in lockstep both ways.
    for _ in 0..5 {
        chat.round().await;
    }
    // New calls see the new upstream.
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| predict(&grown, POOL, u) == "b3")
        .expect("some key belongs to b3");
    assert_eq!(check::unary(&mut client, &user).await, "b3");
    chat.round().await;
    assert_eq!(chat.finish().await, 12);
}
