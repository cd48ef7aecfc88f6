//! Three real `ringway run` processes on 127.0.0.1 form one cluster: a leader is
//! elected, every instance builds the same rings from the committed state and routes
//! every key alike; an upstream added through a follower reaches every ring; after
//! kill -9 of the leader a new one is elected, and the killed instance restarts from
//! its data dir, catches up, and keeps the newer cluster state over its file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every wait in this file gives up here.
const PATIENCE: Duration = Duration::from_secs(30);

/// A port free right now, below the kernel's ephemeral range (which starts at 32768
/// by default), so outgoing connections of other tests cannot take it before the
/// instance binds it.
fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Instance {
    name: String,
    config: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
    child: Option<Child>,
}

impl Instance {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Panics with the instance's log if its process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            let log =
                std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
            panic!("{} exited ({status}):\n{log}", self.name);
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// GET on the admin API; `None` while the instance does not answer.
    fn get(&self, path: &str) -> Option<Value> {
        let body = http_get(self.admin, path)?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let (status, body) = http_call(addr, "GET", path, &[], "")?;
    (status == 200).then_some(body)
}

/// One HTTP/1.1 exchange: (status, body).
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster(dir: &Path, upstreams: &[SocketAddr]) -> Vec<Instance> {
    let names = ["n1", "n2", "n3"];
    let raft: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let peers: Vec<String> = names
        .iter()
        .zip(&raft)
        .map(|(n, p)| format!("{n}: 127.0.0.1:{p}"))
        .collect();
    let ups: Vec<String> = upstreams
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    names
        .iter()
        .zip(&raft)
        .map(|(name, port)| {
            let (listener, admin) = (free_port(), free_port());
            let yaml = format!(
                "node: {{id: {name}, data_dir: {data:?}}}\n\
                 cluster:\n  address: 127.0.0.1:{port}\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n\
                 listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
                 admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
                 pools:\n  - name: web\n    hash_key: path\n    upstreams: [{ups}]\n",
                data = dir.join(name).display().to_string(),
                token = dir.join("token").display().to_string(),
                peers = peers.join(", "),
                ups = ups.join(", "),
            );
            let config = dir.join(format!("{name}.yaml"));
            std::fs::write(&config, yaml).unwrap();
            let mut i = Instance {
                name: name.to_string(),
                config,
                admin: format!("127.0.0.1:{admin}").parse().unwrap(),
                listener: format!("127.0.0.1:{listener}").parse().unwrap(),
                child: None,
            };
            i.start();
            i
        })
        .collect()
}

/// The leader's name when every running instance names the same leader.
fn agreed_leader(instances: &[&Instance]) -> Option<String> {
    let views: Vec<Value> = instances
        .iter()
        .map(|i| i.get("/api/cluster"))
        .collect::<Option<_>>()?;
    let leader = views[0]["leader"].as_str()?.to_owned();
    let leads = views.iter().filter(|v| v["role"] == "leader").count();
    (leads == 1 && views.iter().all(|v| v["leader"] == leader.as_str())).then_some(leader)
}

/// Ring digests and applied index, when every instance has applied the bootstrap.
fn digests(instances: &[&Instance]) -> Option<Vec<(String, u64)>> {
    instances
        .iter()
        .map(|i| {
            let pools = i.get("/api/pools")?;
            let replicated = !pools["pools"][0]["replicated"].is_null();
            let digest = pools["pools"][0]["ring_digest"].as_str()?.to_owned();
            replicated.then_some((digest, pools["applied"].as_u64()?))
        })
        .collect()
}

fn echo_upstreams(n: usize) -> (tokio::runtime::Runtime, Vec<SocketAddr>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addrs = (0..n)
        .map(|i| {
            let l = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = l.local_addr().unwrap();
            rt.spawn(ringway::echo::serve(l, format!("up{i}")));
            addr
        })
        .collect();
    (rt, addrs)
}

#[test]
fn three_processes_agree_survive_a_leader_kill_and_catch_up() {
    let dir = std::env::temp_dir().join(format!("ringway-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    let (_rt, upstreams) = echo_upstreams(4);
    let (extra, upstreams) = (upstreams[3], &upstreams[..3]);
    let mut nodes = cluster(&dir, upstreams);
    std::thread::sleep(Duration::from_millis(300));
    nodes.iter_mut().for_each(Instance::assert_running);

    let all: Vec<&Instance> = nodes.iter().collect();
    let leader = eventually("a leader all three agree on", || agreed_leader(&all));
    let ds = eventually("the bootstrap applied on all three", || digests(&all));
    assert!(
        ds.windows(2).all(|w| w[0].0 == w[1].0),
        "same ring digest everywhere: {ds:?}"
    );

    // Every instance routes every key alike, through the admin API and the proxy.
    for k in 0..40 {
        let key = format!("/item/{k}");
        let routes: Vec<Value> = all
            .iter()
            .map(|i| i.get(&format!("/api/route?pool=web&key={key}")).unwrap()["upstream"].clone())
            .collect();
        assert!(routes.windows(2).all(|w| w[0] == w[1]), "{key}: {routes:?}");
        let served: Vec<String> = all
            .iter()
            .map(|i| {
                http_get(i.listener, &key)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(
            served.windows(2).all(|w| w[0] == w[1]),
            "{key} served by {served:?}"
        );
    }

    // An upstream added through a follower reaches every ring; changes need the token.
    let follower = all.iter().find(|i| i.name != leader).unwrap();
    let path = "/api/pools/web/upstreams/extra";
    let body = format!("{{\"address\": \"{extra}\", \"weight\": 3}}");
    let (status, _) = http_call(follower.admin, "PUT", path, &[], &body).unwrap();
    assert_eq!(status, 401, "no token, no change");
    let (status, _) = http_call(
        follower.admin,
        "PUT",
        path,
        &["Authorization: Bearer wrong"],
        &body,
    )
    .unwrap();
    assert_eq!(status, 401);
    let (status, answer) = http_call(
        follower.admin,
        "PUT",
        path,
        &["Authorization: Bearer t0ken"],
        &body,
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let before = ds[0].0.clone();
    eventually("the new upstream in every ring", || {
        let d = digests(&all)?;
        (d.windows(2).all(|w| w[0].0 == w[1].0) && d[0].0 != before).then_some(d)
    });
    let pools = all[0].get("/api/pools").unwrap();
    let ids = upstream_ids(all[0]).unwrap();
    assert!(ids.iter().any(|i| i == "extra"), "{ids:?}");
    assert!(
        !pools["drift"].as_array().unwrap().is_empty(),
        "the files now differ from the cluster"
    );

    // kill -9 the leader: the other two elect a new one.
    let li = nodes.iter().position(|i| i.name == leader).unwrap();
    nodes[li].kill9();
    let rest: Vec<&Instance> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| n)
        .collect();
    let new_leader = eventually("a new leader among the other two", || {
        agreed_leader(&rest).filter(|l| *l != leader)
    });
    assert_ne!(new_leader, leader);

    // The killed instance restarts from its data dir and catches up.
    nodes[li].start();
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually(
        "the restarted instance rejoins under the new leader",
        || agreed_leader(&all).filter(|l| *l == new_leader),
    );
    let ds = eventually("all three at the same applied index and digest", || {
        let d = digests(&all)?;
        d.windows(2).all(|w| w[0] == w[1]).then_some(d)
    });
    assert_eq!(ds[0].0, ds[li].0);
    // Its file still lacks the added upstream: the committed state wins.
    let ids = upstream_ids(&nodes[li]).unwrap();
    assert!(
        ids.iter().any(|i| i == "extra"),
        "restart with an unchanged file reverted the cluster: {ids:?}"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A single instance with an admin token, its data dir and config in `dir`.
fn single(dir: &Path) -> Instance {
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    let (listener, admin) = (free_port(), free_port());
    let yaml = format!(
        "node: {{id: solo, data_dir: {data:?}}}\n\
         listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
         pools: [{{name: web, upstreams: [{{address: \"127.0.0.1:9\"}}]}}]\n",
        data = dir.join("data").display().to_string(),
        token = dir.join("token").display().to_string(),
    );
    let config = dir.join("solo.yaml");
    std::fs::write(&config, yaml).unwrap();
    Instance {
        name: "solo".into(),
        config,
        admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        listener: format!("127.0.0.1:{listener}").parse().unwrap(),
        child: None,
    }
}

fn upstream_ids(i: &Instance) -> Option<Vec<String>> {
    let pools = i.get("/api/pools")?;
    let ups = pools["pools"][0]["upstreams"].as_array()?;
    Some(
        ups.iter()
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

fn segment(dir: &Path) -> PathBuf {
    let raft = dir.join("data").join("raft");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&raft)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a log segment")
}

#[test]
fn a_torn_last_record_starts_and_a_corrupt_middle_record_refuses_with_file_and_offset() {
    let dir = std::env::temp_dir().join(format!("ringway-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut solo = single(&dir);
    solo.start();
    std::thread::sleep(Duration::from_millis(300));
    solo.assert_running();
    // The proxy serves the file's pools at once; changes wait for the group of one
    // to elect itself and apply its bootstrap.
    eventually("a group of one leads itself", || agreed_leader(&[&solo]));
    eventually("the bootstrap applied", || {
        let pools = solo.get("/api/pools")?;
        (!pools["pools"][0]["replicated"].is_null()).then_some(())
    });
    for n in 1..=3 {
        let body = format!("{{\"address\": \"127.0.0.1:{}\"}}", 9100 + n);
        let path = format!("/api/pools/web/upstreams/u{n}");
        let (status, answer) = http_call(
            solo.admin,
            "PUT",
            &path,
            &["Authorization: Bearer t0ken"],
            &body,
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    solo.kill9();

    // A crash mid-write leaves a partial record at the tail: the instance starts and
    // keeps everything before it.
    let seg = segment(&dir);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    solo.start();
    let ids = eventually("a restart after a torn write", || upstream_ids(&solo));
    assert!(
        ids.len() >= 3,
        "only the torn last change may be lost: {ids:?}"
    );
    solo.kill9();

    // Damage in the middle of the log is not a torn write: refuse to start, naming
    // the file and the offset.
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["run", "--config"])
        .arg(&solo.config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a corrupt log must stop the instance"
    );
    let file = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains(&file), "error names the file: {stderr}");
    assert!(
        stderr.contains("offset"),
        "error names the offset: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
