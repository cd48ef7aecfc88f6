//! Relative paths in a config file name files beside it: the data dir, the admin token,
//! every TLS file and the cluster secret are found from the config file's directory,
//! whatever the working directory of `ringway`, at start and on reload.

use crate::{common, procs, tlsutil};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ringway::config::Config;

/// A fresh directory holding a config and the files it names, removed on drop.
struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = procs::test_dir(&format!("paths-{tag}"));
        Site { dir }
    }

    fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed when the test ends, passing or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory that is not the config's, to run `ringway` from (one per test: tests
/// run in parallel).
fn elsewhere(tag: &str) -> PathBuf {
    let d = procs::test_dir(&format!("paths-cwd-{tag}"));
    std::fs::remove_file(d.join("token")).unwrap();
    d
}

#[test]
fn load_resolves_every_path_field_against_the_files_directory() {
    let site = Site::new("load");
    let text = "node: {id: a, data_dir: ./state}\n\
        listeners:\n  - address: 127.0.0.1:1\n    tls: {certificates: [{cert: tls/a.crt, key: tls/a.key}]}\n\
        admin: {address: 127.0.0.1:2, token_file: admin-token, tls: {cert: tls/adm.crt, key: /abs/adm.key}}\n\
        cluster: {address: 127.0.0.1:3, peers: {a: 127.0.0.1:3}, tls: {ca_file: ../ca.crt, cert: n.crt, key: n.key}}\n\
        pools:\n  - name: p\n    upstreams: [{address: 'up.internal:443'}]\n    \
        tls: {ca_file: up-ca.crt, client_cert: c.crt, client_key: c.key}\n";
    let file = site.write("conf/ringway.yaml", text);
    let c = Config::load(&file).expect("valid");
    let base = site.dir.join("conf");
    let at = |rel: &str| base.join(rel);
    assert_eq!(c.node.data_dir, at("state"));
    let cert = &c.listeners[0].tls.as_ref().unwrap().certificates[0];
    assert_eq!(
        (&cert.cert, &cert.key),
        (&at("tls/a.crt"), &at("tls/a.key"))
    );
    let admin = c.admin.as_ref().unwrap();
    assert_eq!(
        admin.token_file.as_deref(),
        Some(at("admin-token").as_path())
    );
    let adm = admin.tls.as_ref().unwrap();
    assert_eq!(adm.cert, at("tls/adm.crt"));
    assert_eq!(adm.key, Path::new("/abs/adm.key"), "absolute paths stay");
    let cl = c.cluster.as_ref().unwrap().tls.as_ref().unwrap();
    assert_eq!(cl.ca_file, at("../ca.crt"));
    assert_eq!(
        (&cl.identity.cert, &cl.identity.key),
        (&at("n.crt"), &at("n.key"))
    );
    let p = c.pools[0].tls.as_ref().unwrap();
    assert_eq!(p.ca_file.as_deref(), Some(at("up-ca.crt").as_path()));
    let client = p.client_cert.as_ref().unwrap();
    assert_eq!((&client.cert, &client.key), (&at("c.crt"), &at("c.key")));

    // cluster.secret_file (set without cluster.tls).
    let secret = "node: {id: a, data_dir: d}\nlisteners: [{address: 127.0.0.1:1}]\n\
        cluster: {address: 127.0.0.1:3, peers: {a: 127.0.0.1:3}, secret_file: ./cluster.secret}\n\
        pools:\n  - name: p\n    upstreams: [{address: '127.0.0.1:9'}]\n";
    let file = site.write("conf/secret.yaml", secret);
    let c = Config::load(&file).unwrap();
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.secret_file, Some(at("cluster.secret")));
    assert_eq!(c.node.data_dir, at("d"));

    // Text parsed on its own keeps its paths as written.
    assert_eq!(Config::parse(secret).unwrap().node.data_dir, Path::new("d"));
}

#[test]
fn check_reads_relative_tls_files_from_another_working_directory() {
    let site = Site::new("check");
    let ca = tlsutil::Ca::new("paths-ca");
    let leaf = ca.issue(&["localhost"]);
    site.write("tls/site.crt", &leaf.cert_pem);
    site.write("tls/site.key", &leaf.key_pem);
    site.write("tls/ca.crt", &ca.pem);
    let file = site.write(
        "ringway.yaml",
        "node: {id: a, data_dir: ./data}\n\
         listeners:\n  - address: 127.0.0.1:1\n    tls: {certificates: [{cert: ./tls/site.crt, key: tls/site.key}]}\n\
         pools:\n  - name: p\n    upstreams: [{address: 'up.internal:443'}]\n    tls: {ca_file: tls/ca.crt}\n",
    );
    let cwd = elsewhere("check");
    let out = common::binary()
        .args(["check", "--config"])
        .arg(&file)
        .current_dir(&cwd)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&cwd);
    assert!(
        out.status.success(),
        "ringway check from another directory:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_from_another_directory_uses_the_files_beside_the_config_and_reloads_the_same() {
    let site = Site::new("run");
    let ca = tlsutil::Ca::new("paths-ca");
    let leaf = ca.issue(&["localhost"]);
    site.write("tls/site.crt", &leaf.cert_pem);
    site.write("tls/site.key", &leaf.key_pem);
    site.write("secrets/admin-token", "s3cret-token\n");
    let (rt, upstreams) = procs::echo_upstreams(1);
    let (listen, admin) = (procs::free_port(), procs::free_port());
    let yaml = format!(
        "node: {{id: solo, data_dir: ./data}}\n\
         listeners:\n  - address: 127.0.0.1:{listen}\n    tls: {{certificates: [{{cert: tls/site.crt, key: tls/site.key}}]}}\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: secrets/admin-token}}\n\
         pools:\n  - name: web\n    upstreams: [{{address: \"{up}\"}}]\n",
        up = upstreams[0],
    );
    let file = site.write("ringway.yaml", &yaml);
    let cwd = elsewhere("run");
    let log = site.dir.join("ringway.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["run", "--config"])
        .arg(&file)
        .current_dir(&cwd)
        .env("RUST_LOG", "info,ringway::access=off")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let admin = procs::local(admin);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    procs::eventually("the admin API to answer", || {
        procs::http_get(admin, "/healthz")
    });

    // The data dir is beside the config, not in the working directory.
    assert!(
        site.dir.join("data").join("ringway.lock").exists(),
        "{}",
        read_log()
    );
    assert!(!cwd.join("data").exists());
    // The token file was read: a change with its token is accepted.
    let (status, body) = procs::eventually("a change with the token", || {
        let answer = procs::http_call(
            admin,
            "PUT",
            "/api/pools/web/upstreams/extra",
            &["Authorization: Bearer s3cret-token"],
            "{\"address\": \"127.0.0.1:9\"}",
        )?;
        (answer.0 != 503).then_some(answer)
    });
    assert_eq!(status, 200, "{body}\n{}", read_log());
    // The TLS listener serves the certificate named relative to the config.
    rt.block_on(async {
        let config = tlsutil::client_config(&ca, &[b"http/1.1"]);
        let conn = tlsutil::connect(procs::local(listen), "localhost", config).await;
        assert_eq!(tlsutil::peer_cert(&conn), leaf.der);
    });

    // A reload of the same file from the same process resolves the same paths: the
    // reload applies, and no start-time setting is reported as changed.
    std::fs::write(&file, format!("{yaml}# touched\n")).unwrap();
    procs::eventually_every(
        "the reload to apply",
        Duration::from_millis(100),
        procs::PATIENCE,
        || read_log().contains("config reloaded").then_some(()),
    );
    let text = read_log();
    assert!(!text.contains("takes effect after a restart"), "{text}");
    drop(child);
    let _ = std::fs::remove_dir_all(&cwd);
}
