//! Whole instances run in-process through the control layer (`control::Instance` and
//! the admin API beside it): one serves a request and stops cleanly on its signal; a
//! member added at an address where nothing runs is taken out again when it cannot
//! catch up, so no learner is left behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringway::admin::Admin;
use ringway::control::{load_file, Instance};

fn dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringway-control-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "s3cret\n").unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A cluster of one (`n1`) serving pool `web` over `upstream`.
fn write_config(dir: &Path, upstream: SocketAddr, admin: SocketAddr) -> PathBuf {
    let yaml = format!(
        "node: {{id: n1, data_dir: {data:?}}}\n\
         cluster:\n  address: \"{raft}\"\n  peers: {{n1: \"{raft}\"}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n\
         listeners: [{{address: \"127.0.0.1:0\"}}]\n\
         admin: {{address: \"{admin}\", token_file: {token:?}}}\n\
         pools:\n  - name: web\n    hash_key: path\n    upstreams: [{{id: e1, address: \"{upstream}\"}}]\n",
        data = dir.join("data").display().to_string(),
        raft = free_addr(),
        token = dir.join("token").display().to_string(),
    );
    let path = dir.join("ringway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    // A request without a body carries no Content-Length: the echo upstream then
    // answers with its name rather than the (empty) body.
    let length = match body.is_empty() {
        true => String::new(),
        false => format!("content-length: {}\r\n", body.len()),
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}{length}connection: close\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(ringway::echo::serve(l, "e1".into()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_in_process_serves_and_stops_on_its_signal() {
    let dir = dir("serve");
    let admin = free_addr();
    let path = write_config(&dir, echo().await, admin);
    let (config, text) = load_file(&path).unwrap();
    let mut instance = Instance::start(&path, config, text).await.unwrap();
    Admin::start(&instance).await.unwrap();
    instance.bind().await.unwrap();
    let proxy = instance.local_addrs()[0];
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(instance.serve(async move {
        let _ = stop_rx.await;
    }));
    let (status, body) = until("a request served", async || {
        let got = call(proxy, "GET", "/k/1", None, "").await;
        (got.0 == 200).then_some(got)
    })
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("e1 GET /k/1"), "{body:?}");
    let (status, _) = call(admin, "GET", "/api/cluster", None, "").await;
    assert_eq!(status, 200);
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), served).await;
    stopped.expect("stops within the grace").unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_catch_up_is_removed_again() {
    let dir = dir("add-dead");
    let admin = free_addr();
    let path = write_config(&dir, echo().await, admin);
    let (config, text) = load_file(&path).unwrap();
    let instance = Instance::start(&path, config, text).await.unwrap();
    Admin::start(&instance).await.unwrap();
    let cluster = instance.proposer.cluster().clone();
    let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(instance.serve(async move {
        let _ = stop_rx.await;
    }));
    until("n1 leads", async || {
        (cluster.view().role == ringway::raft::Role::Leader).then_some(())
    })
    .await;
    // Nothing listens at the new member's address: it can never catch up.
    let body = format!("{{\"address\": \"{}\"}}", free_addr());
    let (status, answer) = call(admin, "PUT", "/api/cluster/nodes/n9", Some("s3cret"), &body).await;
    assert_eq!(status, 504, "{answer}");
    assert!(answer.contains("removed again"), "{answer}");
    let view = cluster.view();
    let n9 = ringway::cluster::raft_id("n9");
    assert!(
        !view.learners.contains(&n9),
        "learner left behind: {view:?}"
    );
    assert!(!view.voters.contains(&n9), "{view:?}");
    assert!(
        view.state.peers().get("n9").is_none(),
        "address left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_data_dir_exits_2_naming_the_holder() {
    let dir = dir("lock");
    let path = write_config(&dir, echo().await, free_addr());
    let (config, text) = load_file(&path).unwrap();
    let _first = Instance::start(&path, config, text).await.unwrap();
    // Same file, so same data dir: the lock, not a port, must be what stops it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let holder = format!("pid {}", std::process::id());
    assert!(
        stderr.contains("in use by another ringway process"),
        "{stderr}"
    );
    assert!(stderr.contains(&holder), "{stderr}");
}
