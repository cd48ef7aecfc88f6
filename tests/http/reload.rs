//! Hot reload through the binary: a file replaced by rename, a symlink swapped as
//! Kubernetes swaps ConfigMaps, SIGHUP, a bad file that changes nothing, settings that
//! need a restart, and 100 reloads under steady load without one failed request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::procs::*;
use serde_json::Value;

/// A single instance's config serving pool `web` over `upstreams` (ids u0, u1...
/// by index), with its listener and admin ports fixed by the caller.
fn yaml(dir: &Path, listener: u16, admin: u16, upstreams: &[(usize, SocketAddr)]) -> String {
    let ups: Vec<String> = upstreams
        .iter()
        .map(|(i, a)| format!("{{id: u{i}, address: \"{a}\"}}"))
        .collect();
    format!(
        "node: {{id: solo, data_dir: {data:?}}}\n\
         listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
         pools:\n  - name: web\n    hash_key: path\n    upstreams: [{ups}]\n",
        data = dir.join("data").display().to_string(),
        token = dir.join("token").display().to_string(),
        ups = ups.join(", "),
    )
}

/// Replaces `path` the way editors do: a temporary file renamed over it.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start(config: PathBuf, listener: u16, admin: u16) -> Instance {
    let mut i = Instance {
        name: "solo".into(),
        config,
        admin: local(admin),
        listener: local(listener),
        raft: local(0),
        child: None,
    };
    i.start();
    eventually("the instance answers", || i.get("/api/config"));
    i
}

/// Lines of the instance's log (written beside its config file) that contain `what`.
fn log_lines(i: &Instance, what: &str) -> usize {
    let log = std::fs::read_to_string(i.config.with_extension("log")).unwrap_or_default();
    log.lines().filter(|l| l.contains(what)).count()
}

fn reloads(i: &Instance) -> (u64, u64) {
    let v: Value = i.get("/api/config").unwrap();
    (v["loaded"].as_u64().unwrap(), v["failed"].as_u64().unwrap())
}

fn ids_are(i: &Instance, want: &[usize]) -> Option<()> {
    let mut got = upstream_ids(i)?;
    got.sort();
    let mut want: Vec<String> = want.iter().map(|n| format!("u{n}")).collect();
    want.sort();
    (got == want).then_some(())
}

#[test]
fn a_bad_file_is_reported_once_and_its_undoing_clears_the_error() {
    // The instance's log is written into the config file's own directory: the watcher
    // must not take each error line for an edit of the file.
    let dir = test_dir("reload-once");
    let (_rt, ups) = echo_upstreams(2);
    let (listener, admin) = (free_port(), free_port());
    let config = dir.join("ringway.yaml");
    let good = yaml(&dir, listener, admin, &[(0, ups[0]), (1, ups[1])]);
    std::fs::write(&config, &good).unwrap();
    let node = start(config.clone(), listener, admin);
    write_atomically(&config, "pools: [oops\n");
    eventually("the broken file refused", || {
        (reloads(&node).1 == 1).then_some(())
    });
    // Past two polls of the file: the same bytes are not parsed or reported again.
    std::thread::sleep(std::time::Duration::from_secs(11));
    assert_eq!(reloads(&node).1, 1, "{:?}", node.get("/api/config"));
    assert_eq!(log_lines(&node, "config reload refused"), 1);
    // The edit undone: the file in force is back, the error is cleared, the log says so.
    write_atomically(&config, &good);
    let v = eventually("the error cleared", || {
        let v = node.get("/api/config")?;
        v["last_error"].is_null().then_some(v)
    });
    assert_eq!(v["failed"], 1, "{v}");
    eventually("the log says the file is valid again", || {
        (log_lines(&node, "valid again") == 1).then_some(())
    });
}

#[test]
fn edits_apply_bad_files_change_nothing_and_restart_settings_are_reported() {
    let dir = test_dir("reload");
    let (_rt, ups) = echo_upstreams(3);
    let (listener, admin) = (free_port(), free_port());
    let config = dir.join("ringway.yaml");
    let set =
        |ids: &[usize]| -> Vec<(usize, SocketAddr)> { ids.iter().map(|&i| (i, ups[i])).collect() };
    std::fs::write(&config, yaml(&dir, listener, admin, &set(&[0, 1]))).unwrap();
    let mut node = start(config.clone(), listener, admin);
    eventually("the file's pool", || ids_are(&node, &[0, 1]));

    // An editor's rename: the new upstream is in the ring.
    write_atomically(&config, &yaml(&dir, listener, admin, &set(&[0, 1, 2])));
    eventually("u2 added", || ids_are(&node, &[0, 1, 2]));
    let v = node.get("/api/config").unwrap();
    assert_eq!(v["loaded"], 2, "{v}");
    assert!(
        v["last_applied"].as_u64().is_some(),
        "applied through the cluster: {v}"
    );

    // A bad file: nothing changes, the error names its place, the next good file applies.
    let bad = yaml(&dir, listener, admin, &set(&[0])).replace(
        &format!("address: \"{}\"", ups[0]),
        &format!("address: \"{}\", weight: 0", ups[0]),
    );
    write_atomically(&config, &bad);
    let v = eventually("the bad file refused", || {
        let v = node.get("/api/config")?;
        (v["failed"] == 1).then_some(v)
    });
    let err = v["last_error"].as_str().unwrap();
    assert!(err.contains("pools[0].upstreams[0].weight"), "{err}");
    ids_are(&node, &[0, 1, 2]).expect("a bad file changed the pool");
    let metrics = http_get(node.admin, "/metrics").unwrap();
    for (series, want) in [
        ("ringway_config_reloads_total{result=\"success\"} ", "1"),
        ("ringway_config_reloads_total{result=\"failure\"} ", "1"),
    ] {
        let line = metrics.lines().find(|l| l.starts_with(series));
        assert_eq!(line.map(|l| &l[series.len()..]), Some(want), "{series}");
    }
    for k in 0..20 {
        assert!(node.served_by(&format!("/k/{k}")).is_some());
    }
    write_atomically(&config, "pools: [oops\n");
    eventually("the broken YAML refused", || {
        (reloads(&node).1 == 2).then_some(())
    });
    ids_are(&node, &[0, 1, 2]).expect("broken YAML changed the pool");
    write_atomically(&config, &yaml(&dir, listener, admin, &set(&[1, 2])));
    eventually("u0 removed", || ids_are(&node, &[1, 2]));
    let v = node.get("/api/config").unwrap();
    assert!(v["last_error"].is_null(), "{v}");

    // A listener change is reported as needing a restart; the pool part still applies.
    let moved = free_port();
    write_atomically(&config, &yaml(&dir, moved, admin, &set(&[2])));
    eventually("u1 removed", || ids_are(&node, &[2]));
    let v = node.get("/api/config").unwrap();
    assert_eq!(
        v["restart_required"],
        serde_json::json!(["listeners"]),
        "{v}"
    );
    assert!(
        node.served_by("/still/here").is_some(),
        "the old listener serves on"
    );

    // SIGHUP re-reads even an unchanged file.
    let (loaded, _) = reloads(&node);
    let pid = node.child.as_ref().unwrap().id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    eventually("SIGHUP's re-read", || {
        (reloads(&node).0 > loaded).then_some(())
    });
    node.assert_running();
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_configmap_style_symlink_swap_is_followed() {
    let dir = test_dir("configmap");
    let (_rt, ups) = echo_upstreams(2);
    let (listener, admin) = (free_port(), free_port());
    // mount/ringway.yaml -> ..data/ringway.yaml, ..data -> ..v1 (what the kubelet makes).
    let mount = dir.join("mount");
    std::fs::create_dir_all(mount.join("..v1")).unwrap();
    std::fs::create_dir_all(mount.join("..v2")).unwrap();
    let v1 = yaml(&dir, listener, admin, &[(0, ups[0])]);
    let v2 = yaml(&dir, listener, admin, &[(0, ups[0]), (1, ups[1])]);
    std::fs::write(mount.join("..v1/ringway.yaml"), v1).unwrap();
    std::fs::write(mount.join("..v2/ringway.yaml"), v2).unwrap();
    std::os::unix::fs::symlink("..v1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ringway.yaml", mount.join("ringway.yaml")).unwrap();
    let node = start(mount.join("ringway.yaml"), listener, admin);
    eventually("v1's pool", || ids_are(&node, &[0]));
    // The atomic swap: a new link renamed over ..data.
    std::os::unix::fs::symlink("..v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    eventually("v2's pool", || ids_are(&node, &[0, 1]));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hundred_reloads_under_load_fail_no_request() {
    let dir = test_dir("reload-load");
    let (_rt, ups) = echo_upstreams(4);
    let (listener, admin) = (free_port(), free_port());
    let config = dir.join("ringway.yaml");
    let all: Vec<(usize, SocketAddr)> = ups.iter().copied().enumerate().collect();
    std::fs::write(&config, yaml(&dir, listener, admin, &all)).unwrap();
    let node = start(config.clone(), listener, admin);
    eventually("the file's pool", || ids_are(&node, &[0, 1, 2, 3]));

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..2)
        .map(|t| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            let addr = node.listener;
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if http_get(addr, &format!("/t{t}/{k}")).is_none() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let mut rng = fastrand::Rng::with_seed(7);
    let mut bad_seen = false;
    for round in 0..100 {
        if round == 50 {
            // A bad file in the middle: nothing changes, the next good one applies.
            let (_, failed_before) = reloads(&node);
            let before = upstream_ids(&node).unwrap();
            write_atomically(&config, "pools:\n  - name: web\n    upstreams: []\n");
            eventually("the bad file refused", || {
                (reloads(&node).1 > failed_before).then_some(())
            });
            assert_eq!(upstream_ids(&node).unwrap(), before);
            bad_seen = true;
        }
        // A random non-empty subset of the four upstreams.
        let mut ids: Vec<usize> = (0..4).filter(|_| rng.bool()).collect();
        if ids.is_empty() {
            ids.push(rng.usize(..4));
        }
        let set: Vec<(usize, SocketAddr)> = ids.iter().map(|&i| (i, ups[i])).collect();
        write_atomically(&config, &yaml(&dir, listener, admin, &set));
        eventually(&format!("reload {round} applied"), || ids_are(&node, &ids));
    }
    stop.store(true, Ordering::Relaxed);
    load.into_iter().for_each(|t| t.join().unwrap());
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(bad_seen);
    assert!(sent > 100, "the load ran: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the reloads"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
