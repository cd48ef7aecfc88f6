//! Active checks by the gRPC health protocol: the probe against `tonic-health`
//! servers over h2c and over TLS with ALPN `h2` (SERVING passes; NOT_SERVING, an
//! unknown service, an HTTP/1.1 server or a wrong ALPN fail), and the active checker
//! in front of a running proxy ejecting a backend that turns NOT_SERVING and
//! readmitting it once it serves again.

use std::time::Duration;

use tokio::sync::watch;

use ringway::config::health::Active;
use ringway::config::{Config, UpstreamAddr};
use ringway::health::probe::{probe, ProbeTls};
use ringway::tls::UpstreamTls;

use crate::common::*;
use crate::grpc::backend::Backend;
use crate::grpc::calls::{pool, proxy, POOL};
use crate::grpc::check;
use crate::grpc::echo::{EchoClient, SERVICE};
use crate::tlsutil::{yaml_path, Ca, Dir};

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pool's first upstream address, active check and TLS, as configured.
fn target(config: &Config) -> (UpstreamAddr, Active, Option<std::sync::Arc<UpstreamTls>>) {
    let p = &config.pools[0];
    let tls = p.tls.as_ref().map(|t| UpstreamTls::new(t, p.protocol));
    let active = p.health.active.clone().expect("an active check");
    (p.upstreams[0].address.clone(), active, tls)
}

fn grpc_check(service: &str) -> String {
    format!("health: {{active: {{grpc: {{service: {service:?}}}}}}}")
}

async fn passes(config: &Config) -> bool {
    let (addr, active, tls) = target(config);
    let tls = tls.as_deref().map(|t| t as &dyn ProbeTls);
    probe(&addr, Some(&active), tls, PROBE_TIMEOUT).await
}

fn config_for(b: &Backend, options: &[&str]) -> Config {
    parse_config(&config_yaml(&[pool(&[b], options)], &[]))
}

#[tokio::test]
async fn the_probe_passes_only_on_serving_over_h2c() {
    let b = Backend::h2c("b1").await;
    let overall = config_for(&b, &["protocol: h2c", &grpc_check("")]);
    let named = config_for(&b, &["protocol: h2c", &grpc_check(SERVICE)]);
    assert!(
        passes(&overall).await,
        "the server overall serves from the start"
    );
    assert!(!passes(&named).await, "an unknown service is NOT_FOUND");
    b.set_health(SERVICE, true).await;
    assert!(passes(&named).await);
    b.set_health(SERVICE, false).await;
    assert!(!passes(&named).await, "NOT_SERVING fails");
    assert!(passes(&overall).await, "only the named service changed");
    b.set_health("", false).await;
    assert!(!passes(&overall).await);
}

#[tokio::test]
async fn the_probe_fails_on_what_is_not_a_grpc_health_server() {
    let http1 = Upstream::echo("h1").await;
    let spec = PoolSpec::new(POOL)
        .address("h1", http1.addr, 1)
        .opt("protocol: h2c")
        .opt(&grpc_check(""));
    let config = parse_config(&config_yaml(&[spec], &[]));
    assert!(!passes(&config).await, "an HTTP/1.1 server");
    let dead = crate::grpc::backend::refused_addr().await;
    let spec = PoolSpec::new(POOL)
        .address("dead", dead, 1)
        .opt("protocol: h2c")
        .opt(&grpc_check(""));
    let config = parse_config(&config_yaml(&[spec], &[]));
    assert!(!passes(&config).await, "nothing listening");
}

#[tokio::test]
async fn the_probe_speaks_tls_with_alpn_h2_for_tls_pools() {
    let ca = Ca::new("backend CA");
    let b = Backend::tls("t1", &ca.issue(&["127.0.0.1"])).await;
    let dir = Dir::new();
    let tls = format!("tls: {{ca_file: {}}}", yaml_path(&dir.ca("ca", &ca)));
    let h2 = config_for(&b, &["protocol: h2", &tls, &grpc_check("")]);
    assert!(passes(&h2).await, "TLS, ALPN h2, SERVING");
    b.set_health("", false).await;
    assert!(!passes(&h2).await, "NOT_SERVING over TLS");
    b.set_health("", true).await;
    // The same backend trusted through another CA: the handshake fails.
    let other = Ca::new("other CA");
    let wrong = format!("tls: {{ca_file: {}}}", yaml_path(&dir.ca("other", &other)));
    let untrusted = config_for(&b, &["protocol: h2", &wrong, &grpc_check("")]);
    assert!(!passes(&untrusted).await, "an untrusted certificate fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_grpc_checks_eject_a_not_serving_backend_and_readmit_it() {
    let bs = [
        Backend::h2c("b1").await,
        Backend::h2c("b2").await,
        Backend::h2c("b3").await,
    ];
    for b in &bs {
        b.set_health(SERVICE, true).await;
    }
    let refs: Vec<&Backend> = bs.iter().collect();
    let check = format!(
        "health: {{active: {{grpc: {{service: {SERVICE:?}}}, interval_ms: 100, timeout_ms: 100, rise: 1, fall: 1}}}}"
    );
    let proxy = proxy(pool(
        &refs,
        &["protocol: h2c", "hash_key: header:x-user", &check],
    ))
    .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let checker = tokio::spawn(ringway::control::active::run(proxy.proxy.clone(), stop_rx));
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| predict(&proxy.config, POOL, u) == "b1")
        .expect("some key belongs to b1");
    let mut client = EchoClient::connect(proxy.addr).await;
    assert_eq!(check::unary(&mut client, &user).await, "b1");

    bs[0].set_health(SERVICE, false).await;
    let moved = served_until(&mut client, &user, |b| b != "b1").await;
    let next = walk_ids(&proxy.config, POOL, &user, 2)[1].clone();
    assert_eq!(
        moved, next,
        "an ejected upstream's keys go to the next on the ring"
    );
    // While NOT_SERVING it stays out.
    for _ in 0..5 {
        assert_eq!(check::unary(&mut client, &user).await, next);
    }

    bs[0].set_health(SERVICE, true).await;
    served_until(&mut client, &user, |b| b == "b1").await;
    let _ = stop_tx.send(true);
    within("checker stops", checker)
        .await
        .expect("checker task");
}

/// Calls `Say` with `user` until the serving backend satisfies `done` (bounded by
/// [`WAIT`]); returns it.
async fn served_until(client: &mut EchoClient, user: &str, done: impl Fn(&str) -> bool) -> String {
    within("routing to change", async {
        loop {
            let b = check::unary(client, user).await;
            if done(&b) {
                break b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
