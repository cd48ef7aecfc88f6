//! TLS over real sockets on 127.0.0.1, with certificates made at test time: a TLS
//! listener (SNI, ALPN h2 and http/1.1, curl and hyper clients, certificate reload
//! without dropping connections), TLS upstreams (CA file, wrong CA, verification off,
//! client certificates), the cluster transport over mutual TLS, and the binary with
//! TLS on its listener and admin API. Every wait is bounded; nothing asserts timing.

use crate::common;
use crate::tlsutil;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ringway::config::{CertPair, Config, ListenerTls};
use ringway::proxy::server::Server;
use ringway::proxy::{Proxy, Snapshot};
use ringway::tls::ServerTls;

use common::*;
use tlsutil::*;

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// The proxy in-process with TLS on its one listener.
struct TlsProxy {
    addr: SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

async fn tls_proxy(config: &Config, certs: Vec<CertPair>) -> TlsProxy {
    let tls = ServerTls::new(&ListenerTls {
        certificates: certs,
        handshake_timeout: Duration::from_secs(10),
    })
    .expect("certificates load");
    let proxy = Arc::new(Proxy::new(Snapshot::build(config, None)));
    let server = Server::bind(&[loopback()], proxy, config.limits.clone())
        .await
        .expect("bind")
        .with_tls(vec![Some(tls)]);
    let addr = server.local_addrs()[0];
    let task = tokio::spawn(server.run(std::future::pending()));
    TlsProxy { addr, _task: task }
}

fn pair(paths: (std::path::PathBuf, std::path::PathBuf)) -> CertPair {
    CertPair {
        cert: paths.0,
        key: paths.1,
    }
}

/// An upstream answering with the `X-Forwarded-Proto` it was sent.
fn proto_handler() -> Handler {
    handler(|req: Request<hyper::body::Incoming>| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        http::Response::builder()
            .header("x-upstream", "u")
            .body(full(proto))
            .unwrap()
    })
}

async fn h1_over(stream: ClientStream, path: &str) -> Resp {
    let (mut sender, conn) = within(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    within("response", sender.send_request(get_req(path)))
        .await
        .map(collect)
        .unwrap()
        .await
}

async fn h2_over(stream: ClientStream, path: &str) -> Resp {
    let (mut sender, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://a.test{path}"))
        .body(empty())
        .unwrap();
    collect(within("response", sender.send_request(req)).await.unwrap()).await
}

/// A CA, `a.test` (also valid for 127.0.0.1, the default) and `b.test` +
/// `*.wild.test`, and a proxy to one upstream serving both.
struct SniSetup {
    ca: Ca,
    a: Leaf,
    b: Leaf,
    dir: Dir,
    proxy: TlsProxy,
    _up: Upstream,
}

async fn sni_setup() -> SniSetup {
    let ca = Ca::new("test CA");
    let a = ca.issue(&["a.test", "127.0.0.1"]);
    let b = ca.issue(&["b.test", "*.wild.test"]);
    let dir = Dir::new();
    let certs = vec![pair(dir.leaf("a", &a)), pair(dir.leaf("b", &b))];
    let up = Upstream::start("u", proto_handler()).await;
    let config = parse_config(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[]));
    let proxy = tls_proxy(&config, certs).await;
    SniSetup {
        ca,
        a,
        b,
        dir,
        proxy,
        _up: up,
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_picks_the_protocol() {
    let s = sni_setup().await;
    let both = client_config(&s.ca, &[H2, H1]);

    let conn = connect(s.proxy.addr, "a.test", both.clone()).await;
    assert_eq!(peer_cert(&conn), s.a.der, "a.test gets a's certificate");
    assert_eq!(alpn(&conn).as_deref(), Some(H2), "h2 is preferred");
    let resp = h2_over(conn, "/x").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.version, http::Version::HTTP_2);
    assert_eq!(
        resp.text(),
        "https",
        "the upstream hears the client used TLS"
    );

    let conn = connect(s.proxy.addr, "b.test", client_config(&s.ca, &[H1])).await;
    assert_eq!(peer_cert(&conn), s.b.der, "b.test gets b's certificate");
    assert_eq!(alpn(&conn).as_deref(), Some(H1));
    let resp = h1_over(conn, "/y").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.version, http::Version::HTTP_11);

    let conn = connect(s.proxy.addr, "x.wild.test", both.clone()).await;
    assert_eq!(peer_cert(&conn), s.b.der, "a wildcard name matches");

    // An IP address sends no SNI: the first certificate is the default.
    let conn = connect(s.proxy.addr, "127.0.0.1", both).await;
    assert_eq!(peer_cert(&conn), s.a.der);
    let _keep = &s.dir;
}

#[tokio::test]
async fn an_unknown_sni_name_gets_the_default_certificate() {
    let s = sni_setup().await;
    let conn = connect(s.proxy.addr, "nobody.test", any_cert_config(&[H1])).await;
    assert_eq!(peer_cert(&conn), s.a.der);
}

fn curl(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run curl ({e}); scripts/install-test-deps.sh installs it"),
    }
}

#[tokio::test]
async fn curl_speaks_h2_and_http1_through_the_tls_listener_with_sni() {
    let s = sni_setup().await;
    let ca = s.dir.ca("ca", &s.ca);
    let ca = ca.to_str().unwrap().to_owned();
    let port = s.proxy.addr.port();
    for (host, flag, version) in [
        ("a.test", "--http2", "2"),
        ("b.test", "--http1.1", "1.1"),
        ("x.wild.test", "--http2", "2"),
    ] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/c");
        let args = [
            flag,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-w",
            " %{http_version}",
            &url,
        ];
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        // curl verifies the certificate against the host name: success means SNI
        // picked the right one.
        assert!(
            out.status.success(),
            "curl {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("https {version}")
        );
    }
}

#[tokio::test]
async fn replaced_certificate_files_serve_new_handshakes_and_open_connections_stay() {
    let ca = Ca::new("test CA");
    let old = ca.issue(&["a.test"]);
    let dir = Dir::new();
    let up = Upstream::echo("u").await;
    let config = parse_config(&config_yaml(&[PoolSpec::new("web").upstream(&up)], &[]));
    let proxy = tls_proxy(&config, vec![pair(dir.leaf("a", &old))]).await;
    let cfg = client_config(&ca, &[H1]);

    let open = connect(proxy.addr, "a.test", cfg.clone()).await;
    assert_eq!(peer_cert(&open), old.der);
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);
    let first = collect(open.send_request(get_req("/1")).await.unwrap()).await;
    assert_eq!(first.status, StatusCode::OK);

    let new = ca.issue(&["a.test"]);
    dir.leaf("a", &new);
    eventually_served(proxy.addr, &cfg, &new, &[&old]).await;

    // A broken replacement keeps the last good certificate: every handshake still
    // works and presents it, until a good file comes.
    dir.write(
        "a.crt",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    for _ in 0..15 {
        let conn = connect(proxy.addr, "a.test", cfg.clone()).await;
        assert_eq!(peer_cert(&conn), new.der);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let newer = ca.issue(&["a.test"]);
    dir.leaf("a", &newer);
    eventually_served(proxy.addr, &cfg, &newer, &[&new]).await;

    within("open connection ready", open.ready()).await.unwrap();
    let again = collect(open.send_request(get_req("/2")).await.unwrap()).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "the open connection kept working"
    );
}

/// Handshakes until `want` is presented; each one before must present one of `before`.
async fn eventually_served(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    want: &Leaf,
    before: &[&Leaf],
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = peer_cert(&connect(addr, "a.test", cfg.clone()).await);
        if got == want.der {
            return;
        }
        assert!(
            before.iter().any(|b| b.der == got),
            "an unexpected certificate was served"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------
// Upstreams over TLS
// ---------------------------------------------------------------------------------

async fn proxy_to(up: SocketAddr, tls_line: &str) -> TestProxy {
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt(tls_line)
            .opt("max_attempts: 1")
            .address("u", up, 1)],
        &[],
    );
    TestProxy::start(&yaml).await
}

#[tokio::test]
async fn tls_upstream_with_its_ca_file_works_and_connections_are_pooled() {
    let ca = Ca::new("upstream CA");
    let dir = Dir::new();
    let (up, mut handshakes) = tls_upstream(&ca.issue(&["up.test"]), None, echo_handler("u")).await;
    let line = format!(
        "tls: {{ca_file: {}, server_name: up.test}}",
        yaml_path(&dir.ca("ca", &ca))
    );
    let proxy = proxy_to(up, &line).await;
    let resp = proxy.get("/a").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.upstream(), "u");
    assert_eq!(
        handshakes.recv().await,
        Some(None),
        "no client certificate sent"
    );

    // The connection goes back to the pool and carries the next request.
    let snap = proxy.proxy.snapshot();
    let client = &snap.pools[0].upstreams[0];
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.idle_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection never pooled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.get("/b").await.status, StatusCode::OK);
    assert!(
        handshakes.try_recv().is_err(),
        "the pooled TLS connection was reused"
    );
}

/// `protocol: auto` over TLS to an upstream that offers no HTTP/2 in ALPN: HTTP/1.1,
/// its connections pooled and reused, and counted by `max_connections` (three
/// requests at once over one connection, queued in turn).
#[tokio::test]
async fn auto_over_tls_to_an_http1_upstream_pools_and_counts_its_connections() {
    let ca = Ca::new("upstream CA");
    let dir = Dir::new();
    let slow = handler(|_req| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        http::Response::new(full("slow"))
    });
    let (up, mut handshakes) = tls_upstream(&ca.issue(&["up.test"]), None, slow).await;
    let yaml = config_yaml(
        &[PoolSpec::new("web")
            .opt(&format!(
                "tls: {{ca_file: {}, server_name: up.test}}",
                yaml_path(&dir.ca("ca", &ca))
            ))
            .opt("protocol: auto")
            .opt("max_attempts: 1")
            .opt("upstream_limits: {max_connections: 1, at_limit: queue, queue_timeout_ms: 5000}")
            .address("u", up, 1)],
        &[],
    );
    let proxy = TestProxy::start(&yaml).await;
    assert_eq!(proxy.get("/a").await.text(), "slow");
    let client = proxy.proxy.snapshot().pools[0].upstreams[0].clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.idle_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection never pooled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut many = tokio::task::JoinSet::new();
    for i in 0..3 {
        let addr = proxy.addr;
        many.spawn(async move { get(addr, &format!("/m{i}")).await });
    }
    while let Some(r) = many.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(proxy.get("/b").await.text(), "slow");
    let mut n = 0;
    while handshakes.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 1, "one TLS connection carried every request");
}

#[tokio::test]
async fn tls_upstream_named_by_ip_is_verified_against_its_ip() {
    let ca = Ca::new("upstream CA");
    let dir = Dir::new();
    let (up, _h) = tls_upstream(&ca.issue(&["127.0.0.1"]), None, echo_handler("u")).await;
    let line = format!("tls: {{ca_file: {}}}", yaml_path(&dir.ca("ca", &ca)));
    let resp = proxy_to(up, &line).await.get("/").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

#[tokio::test]
async fn tls_upstream_signed_by_another_ca_gives_502() {
    let ca = Ca::new("upstream CA");
    let other = Ca::new("some other CA");
    let dir = Dir::new();
    let (up, _h) = tls_upstream(&ca.issue(&["up.test"]), None, echo_handler("u")).await;
    let line = format!(
        "tls: {{ca_file: {}, server_name: up.test}}",
        yaml_path(&dir.ca("other", &other))
    );
    let resp = proxy_to(up, &line).await.get("/").await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_ca() {
    let ca = Ca::new("upstream CA");
    let (up, _h) = tls_upstream(&ca.issue(&["up.test"]), None, echo_handler("u")).await;
    let resp = proxy_to(up, "tls: {insecure_skip_verify: true}")
        .await
        .get("/")
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let ca = Ca::new("upstream CA");
    let clients = Ca::new("client CA");
    let me = clients.issue(&["proxy.test"]);
    let dir = Dir::new();
    let ca_file = yaml_path(&dir.ca("ca", &ca));
    let (cert, key) = dir.leaf("client", &me);
    let (up, mut seen) =
        tls_upstream(&ca.issue(&["up.test"]), Some(&clients), echo_handler("u")).await;

    let with = format!(
        "tls: {{ca_file: {ca_file}, server_name: up.test, client_cert: {}, client_key: {}}}",
        yaml_path(&cert),
        yaml_path(&key)
    );
    let resp = proxy_to(up, &with).await.get("/").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(within("handshake", seen.recv()).await, Some(Some(me.der)));

    let without = format!("tls: {{ca_file: {ca_file}, server_name: up.test}}");
    let resp = proxy_to(up, &without).await.get("/").await;
    assert_eq!(
        resp.status,
        StatusCode::BAD_GATEWAY,
        "the upstream requires one"
    );
}

// ---------------------------------------------------------------------------------
// The cluster transport over mutual TLS
// ---------------------------------------------------------------------------------

mod cluster {
    use std::collections::HashMap;

    use ringway::cluster::raft_id;
    use ringway::cluster::transport::{PeerAddr, PeerAuth, Transport, TransportConfig};
    use ringway::config::ClusterTls;
    use ringway::raft::{Message, MessageBody, NodeId};
    use tokio::sync::mpsc;

    use super::*;

    struct Node {
        t: Transport,
        rx: mpsc::Receiver<Message>,
    }

    /// Node `node{n}.test` with mutual TLS from `ca` (or plain TCP with `None`).
    async fn node(n: u64, tls: Option<(&Ca, &Dir)>) -> Node {
        let name = format!("node{n}.test");
        node_claiming(&name, &name, tls).await
    }

    /// A node announcing itself as `claims`, with a certificate issued to `cert_name`.
    async fn node_claiming(claims: &str, cert_name: &str, tls: Option<(&Ca, &Dir)>) -> Node {
        let (tx, rx) = mpsc::channel(1024);
        let id = raft_id(claims);
        let cfg = TransportConfig {
            id,
            listen: loopback(),
            peers: HashMap::new(),
            cluster: "ringway-tls-test".into(),
            name: claims.into(),
            auth: if tls.is_some() {
                PeerAuth::Certificates
            } else {
                PeerAuth::Insecure
            },
        };
        let t = match tls {
            None => Transport::start(cfg, tx).await.unwrap(),
            Some((ca, dir)) => {
                let leaf = ca.issue(&[cert_name]);
                let tls = ClusterTls {
                    ca_file: dir.ca(&format!("ca{id}"), ca),
                    identity: pair(dir.leaf(&format!("node{id}"), &leaf)),
                };
                let (dialer, acceptor) = ringway::tls::cluster::transport(&tls).unwrap();
                Transport::start_with(cfg, tx, dialer, acceptor)
                    .await
                    .unwrap()
            }
        };
        Node { t, rx }
    }

    fn hb(from: NodeId, to: NodeId, commit: u64) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: MessageBody::Heartbeat { commit },
        }
    }

    /// Sends heartbeats `from` -> `to` until one arrives.
    async fn delivered(nodes: &mut [Node], from: usize, to: usize) {
        let (f, t) = (nodes[from].t.id(), nodes[to].t.id());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            nodes[from].t.send([hb(f, t, 7)]);
            let got = tokio::time::timeout(Duration::from_millis(200), nodes[to].rx.recv()).await;
            if let Ok(Some(m)) = got {
                assert_eq!(m.from, f);
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{f} -> {t} never delivered"
            );
        }
    }

    fn connect_all(nodes: &[Node], ids: &[usize]) {
        for &i in ids {
            let peers: HashMap<NodeId, PeerAddr> = ids
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| {
                    let addr = nodes[j].t.local_addr();
                    (nodes[j].t.id(), PeerAddr::new(format!("node{j}"), addr))
                })
                .collect();
            nodes[i].t.set_peers(peers);
        }
    }

    #[tokio::test]
    async fn members_talk_and_outsiders_with_another_ca_or_plain_text_are_refused() {
        let ca = Ca::new("cluster CA");
        let rogue = Ca::new("rogue CA");
        let dir = Dir::new();
        let mut nodes = vec![
            node(1, Some((&ca, &dir))).await,
            node(2, Some((&ca, &dir))).await,
            node(3, Some((&ca, &dir))).await,
            node(4, Some((&rogue, &dir))).await,
            node(5, None).await,
        ];
        // Everyone knows everyone by id: only TLS can keep 4 and 5 out.
        connect_all(&nodes, &[0, 1, 2, 3, 4]);
        for (from, to) in [(0, 1), (1, 2), (2, 0), (1, 0)] {
            delivered(&mut nodes, from, to).await;
        }
        // Each outsider in turn keeps trying until node 1 refuses its handshake.
        for outsider in [3, 4] {
            let before = nodes[0].t.stats().handshakes_rejected;
            let (from, to) = (nodes[outsider].t.id(), nodes[0].t.id());
            let deadline = tokio::time::Instant::now() + WAIT;
            while nodes[0].t.stats().handshakes_rejected == before {
                nodes[outsider].t.send([hb(from, to, 99)]);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{from} never refused"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            nodes[outsider].t.clone().shutdown().await;
        }
        // The cluster still works, and nothing from the outsiders got in.
        delivered(&mut nodes, 2, 0).await;
        let members = [nodes[1].t.id(), nodes[2].t.id()];
        while let Ok(m) = nodes[0].rx.try_recv() {
            assert!(
                members.contains(&m.from),
                "a message from {} got in",
                m.from
            );
        }
        // Node 1 never completed a handshake towards either outsider.
        let stats = nodes[0].t.stats();
        let (four, five) = (nodes[3].t.id(), nodes[4].t.id());
        assert!(!stats.peers[&four].connected && !stats.peers[&five].connected);
    }

    /// Sends `from` -> `to` heartbeats until `cond` holds on the nodes' stats.
    async fn until(
        nodes: &[Node],
        from: usize,
        to: usize,
        what: &str,
        cond: impl Fn(&[Node]) -> bool,
    ) {
        let (f, t) = (nodes[from].t.id(), nodes[to].t.id());
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond(nodes) {
            nodes[from].t.send([hb(f, t, 5)]);
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_certificate_speaks_only_for_the_node_it_names_both_ways() {
        let ca = Ca::new("cluster CA");
        let dir = Dir::new();
        let mut nodes = vec![
            node(1, Some((&ca, &dir))).await,
            node(2, Some((&ca, &dir))).await,
            // Holds node 2's certificate but claims to be node 3.
            node_claiming("node3.test", "node2.test", Some((&ca, &dir))).await,
        ];
        connect_all(&nodes, &[0, 1, 2]);
        delivered(&mut nodes, 1, 0).await;
        // The impostor dialling node 1 is refused and counted as an authentication failure.
        until(&nodes, 2, 0, "impostor refused", |n| {
            n[0].t.stats().auth_rejected >= 1
        })
        .await;
        // Node 1 dialling the impostor's address (where it expects node 3) refuses it
        // too: its certificate does not name node 3.
        until(
            &nodes,
            0,
            2,
            "node 1 refuses to talk to the impostor",
            |n| n[0].t.stats().peers[&n[2].t.id()].connect_failures >= 1,
        )
        .await;
        let stats = nodes[0].t.stats();
        assert!(!stats.peers[&nodes[2].t.id()].connected);
        let impostor = nodes[2].t.id();
        while let Ok(m) = nodes[0].rx.try_recv() {
            assert_ne!(m.from, impostor, "a message from the impostor got in");
        }
        delivered(&mut nodes, 0, 1).await;
    }
}

// ---------------------------------------------------------------------------------
// The binary: TLS on a listener and on the admin API, and `check` naming bad files
// ---------------------------------------------------------------------------------

/// A port free right now, below the ephemeral range (see tests/cluster/process.rs).
fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn the_binary_serves_its_listener_and_admin_api_over_tls() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let (cert, key) = dir.leaf("srv", &ca.issue(&["a.test", "127.0.0.1"]));
    let ca_file = dir.ca("ca", &ca).display().to_string();
    let up = Upstream::echo("u").await;
    let admin = free_port();
    let yaml = format!(
        "node: {{id: t, data_dir: {data}}}\n\
         listeners:\n  - address: 127.0.0.1:0\n    tls: {{certificates: [{{cert: {c}, key: {k}}}]}}\n\
         admin: {{address: \"127.0.0.1:{admin}\", tls: {{cert: {c}, key: {k}}}}}\n\
         pools:\n  - name: web\n    upstreams: [{{address: \"{up}\"}}]\n",
        data = yaml_path(&dir.path.join("data")),
        c = yaml_path(&cert),
        k = yaml_path(&key),
        up = up.addr,
    );
    let child = Child::run(&yaml);
    let port = child.addr.port();
    let resolve = format!("a.test:{port}:127.0.0.1");
    let proxied = format!("https://a.test:{port}/hello");
    let health = format!("https://127.0.0.1:{admin}/healthz");
    let out = tokio::task::spawn_blocking(move || {
        let proxied = curl(&["--cacert", &ca_file, "--resolve", &resolve, &proxied]);
        let health = curl(&[
            "-f",
            "--cacert",
            &ca_file,
            "--retry",
            "5",
            "--retry-connrefused",
            &health,
        ]);
        (proxied, health)
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(out.0.status.success(), "{}\n{}", text(&out.0), child.log());
    assert_eq!(text(&out.0), "u GET /hello\n");
    assert!(out.1.status.success(), "{}\n{}", text(&out.1), child.log());
}

#[test]
fn check_names_the_field_and_file_of_an_unreadable_certificate() {
    let dir = Dir::new();
    let yaml = format!(
        "node: {{id: t, data_dir: /tmp/x}}\n\
         listeners:\n  - address: 127.0.0.1:0\n    tls: {{certificates: [{{cert: {c}, key: {c}}}]}}\n\
         pools:\n  - name: web\n    upstreams: [{{address: \"127.0.0.1:1\"}}]\n",
        c = yaml_path(&dir.path.join("missing.pem")),
    );
    let file = dir.write("ringway.yaml", &yaml);
    let out = binary()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[0].tls.certificates[0].cert: cannot read ")
            && err.contains("missing.pem"),
        "{err}"
    );
}

/// A JSON answer from an admin API over TLS, through curl.
fn admin_json(ca: &str, url: &str, extra: &[&str]) -> Option<serde_json::Value> {
    let mut args = vec!["-f", "--cacert", ca];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_sent_to_a_follower_with_its_own_token_commits_on_all_three() {
    // Three instances with cluster mutual TLS, the admin API over TLS and a different
    // admin token each: the follower hands the change to the leader over the cluster
    // transport (it holds no other instance's token and could not call its admin API).
    let ca = Ca::new("cluster CA");
    let dir = Dir::new();
    let ca_file = dir.ca("ca", &ca);
    let names = ["n1", "n2", "n3"];
    let raft: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let admin: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let peers: Vec<String> = names
        .iter()
        .zip(&raft)
        .map(|(n, p)| format!("{n}: \"127.0.0.1:{p}\""))
        .collect();
    let up = Upstream::echo("u").await;
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (cert, key) = dir.leaf(name, &ca.issue(&[name, "127.0.0.1"]));
        let token = dir.write(&format!("{name}.token"), &format!("token-of-{name}\n"));
        let yaml = format!(
            "node: {{id: {name}, data_dir: {data}}}\n\
             cluster:\n  address: \"127.0.0.1:{raft}\"\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n  tls: {{ca_file: {ca}, cert: {c}, key: {k}}}\n\
             listeners: [{{address: 127.0.0.1:0}}]\n\
             admin: {{address: \"127.0.0.1:{admin}\", token_file: {t}, tls: {{cert: {c}, key: {k}}}}}\n\
             pools:\n  - name: web\n    upstreams: [{{id: u, address: \"{up}\"}}]\n",
            data = yaml_path(&dir.path.join(name)),
            raft = raft[i],
            peers = peers.join(", "),
            ca = yaml_path(&ca_file),
            c = yaml_path(&cert),
            k = yaml_path(&key),
            admin = admin[i],
            t = yaml_path(&token),
            up = up.addr,
        );
        children.push(Child::run(&yaml));
    }
    let ca_path = ca_file.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let url = |i: usize, path: &str| format!("https://127.0.0.1:{}{path}", admin[i]);
        // A leader, and a follower that knows it.
        let mut follower = None;
        for _ in 0..200 {
            let views: Vec<Option<serde_json::Value>> = (0..3)
                .map(|i| admin_json(&ca_path, &url(i, "/api/cluster"), &[]))
                .collect();
            follower = (0..3).find(|&i| {
                views[i]
                    .as_ref()
                    .is_some_and(|v| v["role"] == "follower" && v["leader"].is_string())
            });
            if follower.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let f = follower.expect("a follower that knows the leader");
        let other = (f + 1) % 3;
        let put = |token_of: usize| {
            let auth = format!("Authorization: Bearer token-of-{}", names[token_of]);
            let body = format!("{{\"address\": \"{}\"}}", up.addr);
            curl(&[
                "--cacert",
                &ca_path,
                "-X",
                "PUT",
                "-H",
                &auth,
                "-d",
                &body,
                "-w",
                "\n%{http_code}",
                &url(f, "/api/pools/web/upstreams/added"),
            ])
        };
        // Another instance's token is not this one's.
        let said = |o: std::process::Output| {
            let (out, err) = (o.stdout, o.stderr);
            format!(
                "{}{}",
                String::from_utf8_lossy(&err),
                String::from_utf8_lossy(&out)
            )
        };
        let refused = said(put(other));
        let accepted = said(put(f));
        let mut seen = Vec::new();
        for i in 0..3 {
            let mut has = false;
            for _ in 0..100 {
                let pools = admin_json(&ca_path, &url(i, "/api/pools"), &[]);
                has = pools.is_some_and(|p| p.to_string().contains("\"added\""));
                if has {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            seen.push(has);
        }
        (refused, accepted, seen)
    })
    .await
    .unwrap();
    let logs = || {
        children
            .iter()
            .map(|c| c.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(out.0.ends_with("401"), "{}\n{}", out.0, logs());
    assert!(out.1.ends_with("200"), "{}\n{}", out.1, logs());
    assert!(out.1.contains("\"applied\""), "{}", out.1);
    assert_eq!(out.2, [true, true, true], "{}", logs());
}
