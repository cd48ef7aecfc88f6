//! Three real `ringway run` processes on 127.0.0.1 form one cluster: a leader is
//! elected, every instance builds the same rings from the committed state and routes
//! every key alike; an upstream added through a follower reaches every ring; after
//! kill -9 of the leader a new one is elected, and the killed instance restarts from
//! its data dir, catches up, and keeps the newer cluster state over its file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::procs::*;
use serde_json::Value;

#[test]
fn three_processes_agree_survive_a_leader_kill_and_catch_up() {
    let dir = test_dir("cluster");
    let (_rt, upstreams) = echo_upstreams(4);
    let (extra, upstreams) = (upstreams[3], &upstreams[..3]);
    let mut nodes = cluster(&dir, upstreams, "");
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
            served.windows(2).all(|w| w[0] == w[1]) && served[0].starts_with("up"),
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

    // kill -9 the leader while clients keep sending requests through the other two:
    // they elect a new one, and not one request fails meanwhile.
    let li = nodes.iter().position(|i| i.name == leader).unwrap();
    let survivors: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| n.listener)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for addr in &survivors {
                    k += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if http_get(*addr, &format!("/load/{k}")).is_none() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
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
    // The next change commits under the new leader.
    let before = same_digest(&rest, None).unwrap();
    let (status, answer) = rest[0]
        .change("PUT", "/api/pools/web/upstreams/extra2", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    eventually("the change on both survivors", || {
        same_digest(&rest, Some(&before))
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 20, "the load ran: {sent} requests");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests through the survivors failed"
    );

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
    // Its file still lacks both added upstreams: the committed state wins.
    let ids = upstream_ids(&nodes[li]).unwrap();
    assert!(
        ids.iter().any(|i| i == "extra") && ids.iter().any(|i| i == "extra2"),
        "restart with an unchanged file reverted the cluster, or missed a change: {ids:?}"
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
        admin: local(admin),
        listener: local(listener),
        raft: local(0),
        child: None,
    }
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

/// A change sent to a follower just as the leader is killed. The follower forwards it
/// over the cluster transport; the answer must tell the truth within its bound: 200
/// means the change is on every instance, a refusal (503) names why and leaves every
/// instance agreeing on one state. Rounds kill the leader at different moments of
/// the forward. (That a forwarded change is applied at most once, however often it
/// is retried, is shown with in-process drivers in `tests/cluster/forward.rs`.)
#[test]
fn a_change_forwarded_while_the_leader_is_killed_commits_or_is_refused_clearly() {
    let dir = test_dir("forward-kill");
    let (_rt, upstreams) = echo_upstreams(3);
    let mut nodes = cluster(&dir, &upstreams, "");
    std::thread::sleep(Duration::from_millis(300));
    nodes.iter_mut().for_each(Instance::assert_running);
    let (mut committed, mut refused) = (0, 0);
    for (round, delay_ms) in [0u64, 1, 3, 8].into_iter().enumerate() {
        let all: Vec<&Instance> = nodes.iter().collect();
        let leader = eventually("a leader all three agree on", || agreed_leader(&all));
        eventually("the same ring everywhere", || same_digest(&all, None));
        let at = nodes.iter().position(|n| n.name == leader).unwrap();
        let via = (at + 1) % nodes.len();
        let (admin, id) = (nodes[via].admin, format!("r{round}"));
        let body = format!("{{\"address\": \"{}\", \"weight\": 3}}", upstreams[0]);
        let path = format!("/api/pools/web/upstreams/{id}");
        let sent = std::time::Instant::now();
        let call = std::thread::spawn(move || {
            // Longer than the admin API's own bound on a change, so that bound is
            // what answers.
            slow_call(admin, "PUT", &path, &body, Duration::from_secs(30))
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        nodes[at].kill9();
        let answer = call.join().unwrap();
        let took = sent.elapsed();
        let (status, text) = answer.unwrap_or_else(|| panic!("round {round}: no answer"));
        assert!(
            took < Duration::from_secs(20),
            "round {round}: answered after {took:?}"
        );
        let rest: Vec<&Instance> = nodes.iter().filter(|n| n.name != leader).collect();
        eventually("a new leader", || agreed_leader(&rest));
        match status {
            200 => {
                committed += 1;
                for n in &rest {
                    let ids = eventually("the change on the survivors", || {
                        upstream_ids(n).filter(|ids| ids.contains(&id))
                    });
                    assert!(ids.contains(&id));
                }
            }
            503 => {
                refused += 1;
                assert!(
                    text.starts_with("unavailable:")
                        || text.starts_with("leadership changed")
                        || text.starts_with("no leader is known"),
                    "round {round}: a refusal names its cause: {text}"
                );
            }
            other => panic!("round {round}: {other} {text}"),
        }
        // The killed leader comes back; all three hold one state, whatever the answer.
        nodes[at].start();
        let all: Vec<&Instance> = nodes.iter().collect();
        eventually("all three on one ring again", || same_digest(&all, None));
        let seen: Vec<bool> = all
            .iter()
            .map(|n| upstream_ids(n).unwrap().contains(&id))
            .collect();
        assert!(
            seen.iter().all(|&s| s == seen[0]),
            "round {round}: {id} on some instances only: {seen:?}"
        );
        eprintln!(
            "round {round} (kill after {delay_ms} ms): {status} in {took:?}, applied: {}",
            seen[0]
        );
    }
    eprintln!("{committed} committed, {refused} refused");
    nodes.iter_mut().for_each(Instance::assert_running);
    // Logs name peers by their names: the survivors warned about the dead leader.
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| std::fs::read_to_string(n.config.with_extension("log")).unwrap())
        .collect();
    let numbered = |l: &&str| {
        l.split("peer=")
            .skip(1)
            .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    for log in &logs {
        let bad: Vec<&str> = log.lines().filter(numbered).collect();
        assert!(bad.is_empty(), "peers named by number: {bad:?}");
    }
    assert!(
        logs.iter().any(|l| l.contains("peer=n")),
        "some peer named in the logs"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One admin call with the test token, waiting up to `wait` for the answer.
fn slow_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    wait: Duration,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer t0ken\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

/// A small tmpfs mounted for the life of the value (unmounted lazily on drop).
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. "2m") at `at`. Fails the test, naming what is
    /// missing, where mounting is not allowed.
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("running mount(8)");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed: {}\nthis test needs root (CAP_SYS_ADMIN) \
             to give one instance a small file system; run the tests as root (CI does)",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { at: at.to_owned() }
    }

    /// Fills the file system with one file until the kernel refuses more.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.at.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn storage_state(i: &Instance) -> Option<String> {
    let v = i.get("/api/cluster")?;
    Some(v["storage"]["state"].as_str()?.to_owned())
}

#[test]
fn a_full_data_dir_takes_no_writes_says_why_and_resumes_when_space_returns() {
    let dir = test_dir("diskfull");
    let disk = SmallDisk::mount(&dir.join("n1"), "2m");
    let (_rt, ups) = echo_upstreams(2);
    let mut nodes = cluster(&dir, &ups, "");
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually("a leader", || agreed_leader(&all));
    eventually("the bootstrap everywhere", || same_digest(&all, None));
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    assert_eq!(storage_state(n1).as_deref(), Some("writable"));

    let filler = disk.fill();
    // The live segment's last page may still have room: changes go on until a write
    // needs a new page.
    let put = |via: &Instance, id: &str| -> (u16, String) {
        let body = format!("{{\"address\": \"127.0.0.1:{}\"}}", 20000 + id.len());
        via.change("PUT", &format!("/api/pools/web/upstreams/{id}"), &body)
            .unwrap_or((0, "no answer".into()))
    };
    let mut made = 0;
    while storage_state(n1).as_deref() != Some("full") {
        assert!(made < 400, "400 changes and n1 never found its disk full");
        let (status, body) = put(n2, &format!("f{made}"));
        assert_eq!(status, 200, "a change while n1 fills: {body}");
        made += 1;
    }
    let view = n1.get("/api/cluster").unwrap();
    let error = view["storage"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("No space left on device"),
        "n1 says why: {view}"
    );
    let metrics = http_get(n1.admin, "/metrics").unwrap();
    assert!(
        metrics.contains("ringway_raft_storage_state{state=\"full\"} 1"),
        "the metric shows it"
    );

    // The other two lead and take changes; n1 applies nothing it could not write.
    let others = [n2, n3];
    let leader = eventually("a leader among n2 and n3", || {
        agreed_leader(&others).filter(|l| l != "n1")
    });
    for k in 0..3 {
        let (status, body) = put(n3, &format!("while-full-{k}"));
        assert_eq!(
            status, 200,
            "the majority takes changes (leader {leader}): {body}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let seen = upstream_ids(n1).unwrap();
    assert!(
        !seen.iter().any(|id| id.starts_with("while-full")),
        "n1 applied entries it had not written: {seen:?}"
    );
    assert_eq!(storage_state(n1).as_deref(), Some("full"));

    std::fs::remove_file(&filler).unwrap();
    eventually("n1 writes again", || {
        (storage_state(n1)? == "writable").then_some(())
    });
    eventually("all three agree", || same_digest(&all, None));
    let ids = upstream_ids(n1).unwrap();
    for k in 0..3 {
        assert!(ids.contains(&format!("while-full-{k}")), "{ids:?}");
    }
    let log = std::fs::read_to_string(n1.config.with_extension("log")).unwrap();
    assert!(log.contains("no room to write the Raft log"), "{log}");
    assert!(log.contains("the Raft log is writable again"), "{log}");

    // What n1 wrote is a log it can start from.
    drop(all);
    nodes[0].kill9();
    nodes[0].start();
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually("n1 back and agreeing", || same_digest(&all, None));
    nodes[0].assert_running();
}
