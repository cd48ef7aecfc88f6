//! The status page in a real browser, and the cluster demo run end to end.
//!
//! `the_status_page_shows_the_cluster_in_a_real_browser`: three `ringway run`
//! processes in front of four upstreams, with active checks and breakers; one
//! upstream's process is stopped until the cluster ejects it, another is set draining
//! through the admin API. Headless Chromium (Debian's `chromium`) then loads the page
//! of one instance, lets its script run, and the test reads from the DOM that the
//! leader, the three members, every upstream, the ejected and the draining one, the
//! ring and the answer to a key's route are shown. A screenshot is saved to
//! `target/status-page.png`. Without Chromium the test fails, naming the command that
//! installs it.
//!
//! `the_cluster_demo_passes_every_step`: `scripts/cluster-demo.sh --auto` with the
//! test build of the binary, on ports of its own.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::procs;
use crate::procs::{eventually_every, free_port, local, test_dir, Instance};
use serde_json::Value;

/// What installs the browser this test needs (Debian's package).
const INSTALL_CHROMIUM: &str = "apt-get install -y chromium";
/// Every wait on the cluster in this file gives up here.
const PATIENCE: Duration = Duration::from_secs(60);
/// Virtual time the headless browser gives the page before dumping it: the page reads
/// the API at once and every 2 s after, so this is a few refreshes.
const VIRTUAL_TIME_BUDGET_MS: u32 = 6000;
/// Wall-clock bound on one browser run (start, load, script, dump or screenshot).
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);
/// Wall-clock bound on the whole demo run in `--auto` mode.
const DEMO_DEADLINE: Duration = Duration::from_secs(300);
/// The size the page is drawn at for the screenshot.
const WINDOW_SIZE: &str = "1440,1280";

fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_every(what, Duration::from_millis(100), PATIENCE, f)
}

/// The health settings of the test's pool: quick active checks, two reporters to
/// eject, and an ejection long enough to outlast the browser's visit.
const HEALTH: &str = "      active: {path: /healthz, interval_ms: 200, timeout_ms: 150, fall: 2, rise: 1}\n      breaker: {base_ejection_ms: 120000, max_ejection_ms: 240000, min_reporters: 2}\n";

/// A second pool whose name is markup: the page must show it as text.
const MARKUP_POOL: &str = "<img src=x onerror=document.title='pwned'>";

/// Writes and starts instance `name` of three (peers `peers`), pool `web` over
/// `upstreams` (ids `up0`...).
fn start_member(
    dir: &Path,
    name: &str,
    peers: &[(&str, u16)],
    upstreams: &[SocketAddr],
) -> Instance {
    let port = peers.iter().find(|(n, _)| *n == name).unwrap().1;
    let peer_list: Vec<String> = peers
        .iter()
        .map(|(n, p)| format!("{n}: 127.0.0.1:{p}"))
        .collect();
    let ups: Vec<String> = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{id: up{i}, address: \"{a}\"}}"))
        .collect();
    let (listener, admin) = (free_port(), free_port());
    let yaml = format!(
        "node: {{id: {name}, data_dir: {data:?}}}\n\
         cluster:\n  address: 127.0.0.1:{port}\n  peers: {{{peers}}}\n  heartbeat_ms: 50\n  election_timeout_ms: 500\n  secret_file: {secret:?}\n\
         listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
         admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
         pools:\n  - name: web\n    hash_key: path\n    connect_timeout_ms: 500\n    slow_start_ms: 600000\n    upstreams: [{ups}]\n    health:\n{HEALTH}\
         \n  - name: \"{MARKUP_POOL}\"\n    hosts: [markup.test]\n    upstreams: [{{id: up0, address: \"{first}\"}}]\n",
        data = dir.join(name).display().to_string(),
        token = dir.join("token").display().to_string(),
        secret = procs::cluster_secret(dir).display().to_string(),
        peers = peer_list.join(", "),
        ups = ups.join(", "),
        first = upstreams[0],
    );
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    let mut i = Instance {
        name: name.to_string(),
        config,
        admin: local(admin),
        listener: local(listener),
        raft: local(port),
        child: None,
    };
    i.start();
    i
}

/// A `ringway echo` process: an upstream that can be stopped for real.
struct EchoProcess(Child);

impl EchoProcess {
    fn start(addr: SocketAddr, name: &str) -> EchoProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["echo", "--listen", &addr.to_string(), "--name", name])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("the echo upstream listening", || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        EchoProcess(child)
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `id`'s entry in pool `web` as instance `i` shows it: (breaker state, draining).
fn upstream_state(i: &Instance, id: &str) -> Option<(String, bool)> {
    let pools = i.get("/api/pools")?;
    let pool = &pools["pools"][0];
    let replicated = pool["replicated"].as_array()?;
    let draining = replicated
        .iter()
        .find(|u| u["id"] == id)?
        .get("draining")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let breaker = pool["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["id"] == id)
        .map_or("closed".to_owned(), |u| {
            u["breaker"]["state"].as_str().unwrap_or("").to_owned()
        });
    Some((breaker, draining))
}

/// The steps of `id`'s slow start in pool `web` on instance `i`, while it ramps.
fn ramp_steps(i: &Instance, id: &str) -> Option<u64> {
    let pools = i.get("/api/pools")?;
    let ups = pools["pools"][0]["upstreams"].as_array()?;
    let u = ups.iter().find(|u| u["id"] == id)?;
    u["slow_start"]["steps"].as_u64()
}

/// The browser: Debian's `chromium` on the `PATH`. Missing, the test fails and says how
/// to install it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("this test needs Chromium, which is not installed: run `{INSTALL_CHROMIUM}`")
        })
}

/// Runs `cmd`, killing it past `deadline`; its output.
fn run_bounded(mut cmd: Command, deadline: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Drain the pipes while waiting, so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut b);
        b
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("{what} did not finish within {deadline:?}\n{stdout}\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Headless Chromium on `url` with `extra` arguments, in a profile of its own.
fn browse(dir: &Path, url: &str, extra: &[String]) -> Output {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.join("chromium").display()
    ))
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
    .arg(format!("--window-size={WINDOW_SIZE}"))
    .args(extra)
    .arg(url);
    let out = run_bounded(cmd, BROWSER_DEADLINE, "chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The opening tag of the first element whose attributes start with `attr`, e.g.
/// `<tr data-upstream="up0"`.
fn tag<'a>(dom: &'a str, start: &str) -> &'a str {
    let at = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the page:\n{dom}"));
    let end = dom[at..].find('>').map_or(dom.len(), |e| at + e);
    &dom[at..end]
}

/// Where cargo puts build output (and the screenshot).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[test]
fn the_status_page_shows_the_cluster_in_a_real_browser() {
    let browser = chromium();
    let dir = test_dir("status-page");
    let addrs: Vec<SocketAddr> = (0..4).map(|_| local(free_port())).collect();
    let mut echoes: Vec<Option<EchoProcess>> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Some(EchoProcess::start(*a, &format!("up{i}"))))
        .collect();
    let peers: Vec<(&str, u16)> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|n| (n, free_port()))
        .collect();
    let mut nodes: Vec<Instance> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| start_member(&dir, n, &peers, &addrs))
        .collect();
    let leader = eventually("a leader all three agree on", || {
        nodes.iter_mut().for_each(Instance::assert_running);
        procs::agreed_leader(&nodes.iter().collect::<Vec<_>>())
    });
    eventually("the pool applied on all three", || {
        let all = nodes.iter().all(|n| upstream_state(n, "up0").is_some());
        all.then_some(())
    });

    // up3 stops: every instance's active check fails, two reports eject it.
    echoes[3] = None;
    eventually("up3 ejected on all three", || {
        let open = nodes
            .iter()
            .all(|n| upstream_state(n, "up3").is_some_and(|(b, _)| b == "open"));
        open.then_some(())
    });
    // up2 is set draining through the admin API.
    let body = format!("{{\"address\": \"{}\", \"draining\": true}}", addrs[2]);
    let (status, answer) = nodes[1]
        .change("PUT", "/api/pools/web/upstreams/up2", &body)
        .expect("the admin API answers");
    assert_eq!(status, 200, "{answer}");
    eventually("up2 draining on all three", || {
        let draining = nodes
            .iter()
            .all(|n| upstream_state(n, "up2").is_some_and(|(_, d)| d));
        draining.then_some(())
    });
    // up4 joins through the admin API and ramps in (a step every 66 s of a 10-minute
    // slow start, so it is still warming when the page is read).
    let up4 = local(free_port());
    let _echo4 = EchoProcess::start(up4, "up4");
    let body = format!("{{\"address\": \"{up4}\"}}");
    let (status, answer) = nodes[0]
        .change("PUT", "/api/pools/web/upstreams/up4", &body)
        .expect("the admin API answers");
    assert!(status == 200 || status == 201, "{status} {answer}");
    eventually("up4 ramping on all three", || {
        let ramping = nodes.iter().all(|n| ramp_steps(n, "up4") == Some(10));
        ramping.then_some(())
    });
    let leader = procs::agreed_leader(&nodes.iter().collect::<Vec<_>>()).unwrap_or(leader);
    let key = "/users/42";
    let route = nodes[0]
        .get(&format!("/api/route?pool=web&key={key}"))
        .unwrap();
    let key_goes_to = route["upstream"].as_str().unwrap().to_owned();

    let url = format!("http://{}/?pool=web&key={key}", nodes[0].admin);
    let out = browse(&dir, &url, &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(dir.join("status-page.html"), &dom).unwrap();

    // The page read the API and says so.
    assert!(
        tag(&dom, "<div id=\"freshness\"").contains("data-state=\"live\""),
        "{dom}"
    );
    // The cluster: the leader, and the three members with their roles.
    let leader_tag = tag(&dom, "<dd id=\"cluster-leader\"");
    assert!(
        leader_tag.contains(&format!("data-leader=\"{leader}\"")),
        "{leader_tag}"
    );
    for n in ["n1", "n2", "n3"] {
        let row = tag(&dom, &format!("<tr data-member=\"{n}\""));
        assert!(row.contains("data-role=\"voter\""), "{row}");
        let is_leader = format!("data-leader=\"{}\"", n == leader);
        assert!(row.contains(&is_leader), "{row}");
    }
    // Every upstream has its legend row, in the state the cluster holds.
    for (id, state) in [
        ("up0", "closed"),
        ("up1", "closed"),
        ("up2", "draining"),
        ("up3", "open"),
    ] {
        let row = tag(&dom, &format!("<tr data-upstream=\"{id}\""));
        assert!(row.contains(&format!("data-state=\"{state}\"")), "{row}");
        let ejected = format!("data-ejected=\"{}\"", state == "open");
        assert!(row.contains(&ejected), "{row}");
    }
    // The newcomer shows its ramp.
    let row = tag(&dom, "<tr data-upstream=\"up4\"");
    assert!(row.contains("data-slow-start=\""), "{row}");
    assert!(row.contains("/10\""), "{row}");
    let badge = tag(&dom, "<span class=\"badge\" data-kind=\"slow_start\"");
    let badge_text = &dom[dom.find(badge).unwrap() + badge.len()..];
    assert!(
        badge_text.starts_with(">warming "),
        "{badge}{badge_text:.40}"
    );
    // The ring: arcs of the upstreams on it, the ejected one hatched, none of the
    // draining one (it is off the ring).
    assert!(dom.contains("data-ring=\"web\""), "{dom}");
    for id in ["up0", "up1", "up3"] {
        let own = format!("data-upstream=\"{id}\" data-ejected=\"{}\"", id == "up3");
        assert!(dom.contains(&own), "no arc {own} in:\n{dom}");
    }
    let hatch = tag(&dom, "<path class=\"hatch\"");
    assert!(hatch.contains("data-upstream=\"up3\""), "{hatch}");
    let rim = tag(&dom, "<path class=\"rim\"");
    assert!(
        rim.contains("data-upstream=\"up3\" data-phase=\"open\""),
        "{rim}"
    );
    assert!(!dom.contains("class=\"arc\" d=\"\""), "no empty arc");
    assert!(
        !dom.contains("data-upstream=\"up2\" data-ejected"),
        "a draining upstream is off the ring"
    );
    // The question in the address was asked: where the key goes, marked on the ring.
    let answer = tag(&dom, "<span class=\"mono\" data-route-upstream=");
    assert!(
        answer.contains(&format!("data-route-upstream=\"{key_goes_to}\"")),
        "{answer}"
    );
    assert!(dom.contains(&format!("data-marker=\"{key}\"")), "{dom}");
    // The pool named with markup is there as text, and nothing of it ran.
    let escaped = "&lt;img src=x onerror=document.title='pwned'&gt;";
    assert!(dom.contains(&format!("<h2>{escaped}</h2>")), "{dom}");
    assert!(
        !dom.contains("<img"),
        "markup from a name became an element"
    );
    assert!(dom.contains("<title>ringway status</title>"), "{dom}");
    // Drift: the file does not say up2 drains, the cluster does.
    let drift = tag(&dom, "<li data-drift=");
    let drift_text = &dom[dom.find(drift).unwrap()..];
    assert!(
        drift_text.starts_with(&format!("{drift}>pool web differs")),
        "{drift_text}"
    );

    // A screenshot for people to look at.
    let shot = target_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(&dir, &url, &[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page, not a blank: {} bytes",
        png.len()
    );
    nodes.iter_mut().for_each(Instance::assert_running);
    drop(browser);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A base port for the demo such that base+1 ..= base+33 are free now.
fn demo_port_base() -> u16 {
    loop {
        let base = 20_000 + fastrand::u16(..9_900);
        let free = (1..=33).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
}

#[test]
fn the_cluster_demo_passes_every_step() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster-demo.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--auto")
        .env("RINGWAY_BIN", env!("CARGO_BIN_EXE_ringway"))
        .env("DEMO_PORT_BASE", demo_port_base().to_string())
        .env("DEMO_PATIENCE", "60")
        .env("RUST_LOG", "warn");
    let out = run_bounded(cmd, DEMO_DEADLINE, "scripts/cluster-demo.sh --auto");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let passes = stdout.lines().filter(|l| l.trim() == "PASS").count();
    assert_eq!(passes, 5, "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("All 5 steps passed."), "{stdout}");
    let page = stdout
        .lines()
        .find(|l| l.contains("Status page: http://127.0.0.1:"));
    let first = stdout.lines().find(|l| !l.trim().is_empty());
    assert_eq!(
        first.map(str::trim),
        Some("ringway cluster demo"),
        "{stdout}"
    );
    assert!(
        page.is_some(),
        "the status page's address comes first:\n{stdout}"
    );
}
