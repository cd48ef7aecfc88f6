//! One set of bounds, tested at its edges: every value that reaches the replicated
//! state is accepted at exactly its bound and refused one past it, the same way by the
//! file's build, by apply in `cluster::state` and by the admin API's body parsers.
//! Whatever `check` accepts, the cluster applies (also as a property). A bootstrap that
//! apply would refuse is never proposed. Config files are bounded in size and nesting
//! before they are parsed. The last test holds a running instance to the same
//! bounds through its file, a reload, `PUT` and `/api/batch`.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use proptest::prelude::*;
use ringway::admin::parse;
use ringway::cluster::driver::{start_thread, Driver, DriverConfig, Outbox};
use ringway::cluster::state::{file_changes, ClusterState, Command, UpstreamSpec};
use ringway::config::bounds::*;
use ringway::config::{Config, ConfigError};
use ringway::raft::{ConfState, MemStorage, Message, Role, BOOTSTRAP_INDEX};
use tokio::sync::{mpsc, oneshot};

const HEAD: &str =
    "node: {id: n1, data_dir: /tmp/n1}\nlisteners: [{address: '127.0.0.1:1'}]\npools:\n";

/// The `i`th distinct upstream address.
fn addr(i: usize) -> String {
    format!("10.{}.{}.{}:80", i / 65_536, (i / 256) % 256, i % 256)
}

/// A pool of upstreams with these weights, routed by its own path prefix.
fn pool_yaml(name: &str, vnodes: u32, weights: &[u32], first: usize) -> String {
    let mut out = format!(
        "  - name: {name}\n    path_prefix: /{name}\n    vnodes: {vnodes}\n    upstreams:\n"
    );
    for (i, w) in weights.iter().enumerate() {
        out.push_str(&format!(
            "      - {{address: \"{}\", weight: {w}}}\n",
            addr(first + i)
        ));
    }
    out
}

fn parse(pools: &str) -> Result<Config, Vec<String>> {
    Config::parse(&format!("{HEAD}{pools}"))
        .map_err(|e| e.field_errors().iter().map(|e| e.to_string()).collect())
}

/// The file builds and the bootstrap it makes applies to an empty cluster, and fits in
/// one entry.
fn applies(pools: &str) -> (Config, ClusterState) {
    let config = parse(pools).unwrap_or_else(|e| panic!("file refused: {e:?}"));
    let cmd = ClusterState::bootstrap_command(&config);
    assert!(cmd.encode().len() <= MAX_COMMAND_BYTES);
    let mut state = ClusterState::default();
    state
        .apply(&cmd)
        .expect("the cluster applies what the file accepts");
    (config, state)
}

fn refused_by_file(pools: &str, path: &str, words: &str) {
    let errors = parse(pools).expect_err("file should be refused");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(path) && e.contains(words)),
        "no error at {path} saying {words:?} in {errors:?}"
    );
}

fn up(id: &str, i: usize, weight: u32) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        address: addr(i),
        weight,
        draining: false,
    }
}

fn set_pool(pool: &str, weights: &[u32], first: usize) -> Command {
    Command::SetPool {
        pool: pool.into(),
        upstreams: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| up(&addr(first + i), first + i, w))
            .collect(),
    }
}

/// The admin API's body for a batch of `changes`.
fn batch_body(changes: &[Command]) -> Vec<u8> {
    let changes: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    serde_json::to_vec(&serde_json::json!({ "changes": changes })).unwrap()
}

fn put_body(address: &str, weight: u32) -> Vec<u8> {
    format!(r#"{{"address": "{address}", "weight": {weight}}}"#).into_bytes()
}

#[test]
fn weight_at_its_bound_applies_and_one_past_is_refused_everywhere() {
    let (_, mut state) = applies(&pool_yaml("web", 1, &[MAX_WEIGHT], 0));
    refused_by_file(
        &pool_yaml("web", 1, &[MAX_WEIGHT + 1], 0),
        "pools[0].upstreams[0].weight",
        &format!("at most {MAX_WEIGHT}"),
    );
    let put = |w| {
        parse::command(
            &Method::PUT,
            "web".into(),
            "x".into(),
            &put_body("10.9.9.9:80", w),
        )
    };
    let ok = put(MAX_WEIGHT).expect("admin API takes the largest weight");
    let err = put(MAX_WEIGHT + 1).expect_err("admin API refuses a weight past the bound");
    assert!(err.contains("weight"), "{err}");
    state.apply(&ok).expect("apply takes the largest weight");
    let heavier = Command::PutUpstream {
        pool: "web".into(),
        upstream: up("y", 7, MAX_WEIGHT + 1),
    };
    assert!(state.apply(&heavier).is_err());
}

#[test]
fn vnodes_at_its_bound_builds_and_one_past_is_refused() {
    applies(&pool_yaml("web", MAX_VNODES, &[1], 0));
    refused_by_file(
        &pool_yaml("web", MAX_VNODES + 1, &[1], 0),
        "pools[0].vnodes",
        &format!("at most {MAX_VNODES}"),
    );
}

#[test]
fn a_pool_at_its_weight_bound_holds_at_most_its_points() {
    let full = vec![MAX_WEIGHT; (MAX_POOL_WEIGHT / MAX_WEIGHT as u64) as usize];
    let (config, mut state) = applies(&pool_yaml("web", MAX_VNODES, &full, 0));
    let ring = ringway::proxy::snapshot::pool_ring(&config.pools[0]);
    assert!(ring.len() as u64 <= MAX_POINTS_PER_POOL);
    assert!(ring.len() as u64 > MAX_POINTS_PER_POOL * 99 / 100);

    let mut over = full.clone();
    over.push(1);
    refused_by_file(
        &pool_yaml("web", MAX_VNODES, &over, 0),
        "pools[0].upstreams",
        &format!("at most {MAX_POOL_WEIGHT}"),
    );
    assert!(state.clone().apply(&set_pool("web", &over, 0)).is_err());
    assert!(parse::batch_command(&batch_body(&[set_pool("web", &over, 0)])).is_err());
    // One more unit of weight through the admin API: parsed, then refused by apply.
    let one_more = parse::command(
        &Method::PUT,
        "web".into(),
        "z".into(),
        &put_body("10.9.9.9:80", 1),
    )
    .expect("a weight-1 upstream is a valid change on its own");
    let before = state.clone();
    let refusal = state.apply(&one_more).expect_err("the pool is full");
    assert!(
        refusal.to_string().contains(&MAX_POOL_WEIGHT.to_string()),
        "{refusal}"
    );
    assert_eq!(state, before, "a refused change changes nothing");
}

#[test]
fn upstreams_per_pool_at_the_bound_apply_and_one_more_is_refused() {
    let full = vec![1; MAX_UPSTREAMS_PER_POOL];
    let (_, state) = applies(&pool_yaml("web", 1, &full, 0));
    assert_eq!(
        state.pool("web").map(|p| p.len()),
        Some(MAX_UPSTREAMS_PER_POOL)
    );
    let over = vec![1; MAX_UPSTREAMS_PER_POOL + 1];
    refused_by_file(
        &pool_yaml("web", 1, &over, 0),
        "pools[0].upstreams",
        &format!("at most {MAX_UPSTREAMS_PER_POOL} upstreams"),
    );
    assert!(ClusterState::default()
        .apply(&set_pool("web", &over, 0))
        .is_err());
}

#[test]
fn total_weight_at_its_bound_applies_and_one_more_is_refused() {
    let per_pool = (MAX_POOL_WEIGHT / MAX_WEIGHT as u64) as usize;
    let pools = (MAX_TOTAL_WEIGHT / MAX_POOL_WEIGHT) as usize;
    let mut yaml = String::new();
    for p in 0..pools {
        yaml.push_str(&pool_yaml(
            &format!("p{p}"),
            MAX_VNODES,
            &vec![MAX_WEIGHT; per_pool],
            p * per_pool,
        ));
    }
    let (_, mut state) = applies(&yaml);
    let extra = pool_yaml("extra", 1, &[1], 60_000);
    refused_by_file(
        &format!("{yaml}{extra}"),
        "pools",
        &format!("at most {MAX_TOTAL_WEIGHT}"),
    );
    assert!(state
        .clone()
        .apply(&set_pool("extra", &[1], 60_000))
        .is_err());

    // A batch is bounded by where it ends, not by the order of its changes: adding a
    // pool before removing another fits when the end state does.
    let swap = Command::Batch {
        commands: vec![
            set_pool("extra", &[1], 60_000),
            Command::RemovePool { pool: "p0".into() },
        ],
    };
    state
        .apply(&swap)
        .expect("the end state is within the bounds");
    let overfull = Command::Batch {
        commands: vec![
            Command::RemovePool {
                pool: "extra".into(),
            },
            set_pool("p0", &vec![MAX_WEIGHT; per_pool], 0),
            set_pool("again", &[1], 61_000),
        ],
    };
    assert!(state.apply(&overfull).is_err());
}

#[test]
fn pools_at_the_bound_apply_and_one_more_is_refused() {
    let mut yaml = String::new();
    for p in 0..MAX_POOLS {
        yaml.push_str(&format!(
            "  - {{name: p{p}, path_prefix: /p{p}, upstreams: [{{address: \"{}\"}}]}}\n",
            addr(p)
        ));
    }
    let (_, state) = applies(&yaml);
    let extra = format!(
        "  - {{name: extra, path_prefix: /extra, upstreams: [{{address: \"{}\"}}]}}\n",
        addr(MAX_POOLS)
    );
    refused_by_file(
        &format!("{yaml}{extra}"),
        "pools",
        &format!("at most {MAX_POOLS} pools"),
    );
    assert!(state
        .clone()
        .apply(&set_pool("extra", &[1], MAX_POOLS))
        .is_err());
}

#[test]
fn names_at_their_bound_apply_and_bidi_and_controls_are_refused_everywhere() {
    let long = "n".repeat(MAX_NAME_BYTES);
    let yaml =
        format!("  - name: {long}\n    upstreams: [{{id: {long}, address: \"10.0.0.1:80\"}}]\n");
    applies(&yaml);
    let too_long = "n".repeat(MAX_NAME_BYTES + 1);
    refused_by_file(
        &format!("  - name: {too_long}\n    upstreams: [{{address: \"10.0.0.1:80\"}}]\n"),
        "pools[0].name",
        &format!("1 to {MAX_NAME_BYTES} bytes"),
    );
    // An id defaulted from a long DNS name would not fit in the cluster either.
    let host = format!("{}.", "h".repeat(62)).repeat(4) + "a";
    assert_eq!(host.len(), 253, "the longest DNS name");
    refused_by_file(
        &format!("  - name: web\n    upstreams: [{{address: \"{host}:65535\"}}]\n"),
        "pools[0].upstreams[0].id",
        "defaults to the address",
    );
    for bad in [
        "web\u{202E}1",
        "web\u{2066}",
        "w\u{200F}",
        "a\u{061C}b",
        "a\u{7}b",
    ] {
        // Quoted as JSON, which YAML reads: control characters arrive escaped.
        let quoted = serde_json::to_string(bad).unwrap();
        refused_by_file(
            &format!("  - name: {quoted}\n    upstreams: [{{address: \"10.0.0.1:80\"}}]\n"),
            "pools[0].name",
            "control",
        );
        refused_by_file(
            &format!(
                "  - name: web\n    upstreams: [{{id: {quoted}, address: \"10.0.0.1:80\"}}]\n"
            ),
            "pools[0].upstreams[0].id",
            "control",
        );
        let put = parse::command(
            &Method::PUT,
            "web".into(),
            bad.into(),
            &put_body("10.0.0.1:80", 1),
        );
        assert!(put.is_err(), "admin API took id {bad:?}");
        let del = parse::command(&Method::DELETE, bad.into(), "a".into(), b"");
        assert!(del.is_err(), "admin API took pool {bad:?}");
        assert!(parse::node_change(&Method::DELETE, bad, b"").is_err());
        let mut state = ClusterState::default();
        assert!(state.apply(&set_pool(bad, &[1], 0)).is_err());
        let bootstrap = Command::Bootstrap {
            pools: BTreeMap::from([("web".to_owned(), vec![up(bad, 0, 1)])]),
            peers: BTreeMap::new(),
        };
        assert!(state.apply(&bootstrap).is_err());
        assert!(!state.is_bootstrapped());
        let peer = Command::SetPeer {
            node: bad.into(),
            address: "127.0.0.1:7000".into(),
        };
        assert!(state.apply(&peer).is_err());
    }
}

#[test]
fn ids_that_are_not_utf8_are_refused_naming_the_segment() {
    let ff = parse::decode_segment("a%FF").expect_err("%FF is not UTF-8");
    let fe = parse::decode_segment("a%FE").expect_err("%FE is not UTF-8");
    assert!(ff.contains("a%FF") && fe.contains("a%FE"), "{ff} / {fe}");
    assert_eq!(parse::decode_segment("caf%C3%A9").as_deref(), Ok("café"));
}

#[test]
fn deep_nesting_is_refused_before_parsing_with_the_line_and_the_bound() {
    // 200 KB of '[' took serde_yaml 48 s; the scan refuses it at once.
    let text = format!("{HEAD}  - name: web\n    hosts: {}\n", "[".repeat(200_000));
    let err = Config::parse(&text).expect_err("too deep").to_string();
    assert!(
        err.contains("line 5") && err.contains(&format!("more than {MAX_YAML_DEPTH} deep")),
        "{err}"
    );
    let err = Config::parse(&format!("{HEAD}{}", "- ".repeat(MAX_YAML_DEPTH + 1)))
        .expect_err("too deep")
        .to_string();
    assert!(err.contains(&MAX_YAML_DEPTH.to_string()), "{err}");
}

#[test]
fn a_file_over_the_size_bound_is_refused_naming_the_file_and_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let mut text = format!("{HEAD}  - name: web\n    upstreams: [{{address: \"10.0.0.1:80\"}}]\n");
    text.push_str(&"#".repeat(MAX_CONFIG_BYTES as usize + 1 - text.len()));
    std::fs::write(&path, &text).unwrap();
    let err = Config::load(&path).expect_err("too large");
    assert!(matches!(err, ConfigError::Syntax { .. }));
    let err = err.to_string();
    assert!(
        err.contains("big.yaml") && err.contains(&MAX_CONFIG_BYTES.to_string()),
        "{err}"
    );
    text.truncate(MAX_CONFIG_BYTES as usize);
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).expect("a file of exactly the bound is read");
}

/// A driver of one voter whose bootstrap apply refuses: it must never be proposed.
#[test]
fn a_bootstrap_apply_would_refuse_is_never_proposed() {
    struct Nowhere;
    impl Outbox for Nowhere {
        fn send(&self, _: Vec<Message>) {}
    }
    let storage = MemStorage::new_with_conf(ConfState::with_voters(&[1]));
    let mut cfg =
        DriverConfig::from_timeouts(1, Duration::from_millis(10), Duration::from_millis(50));
    cfg.bootstrap = Some(Command::Bootstrap {
        pools: BTreeMap::from([("web".to_owned(), vec![up("a", 0, MAX_WEIGHT + 1)])]),
        peers: BTreeMap::new(),
    });
    let (driver, handle) = Driver::new(cfg, storage).unwrap();
    let (_tx, rx) = mpsc::channel::<Message>(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = start_thread("cluster", move || async move {
        driver
            .run(rx, Nowhere, async {
                let _ = stopped.await;
            })
            .await
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut views = handle.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while views.borrow().role != Role::Leader {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            let _ = tokio::time::timeout(Duration::from_millis(50), views.changed()).await;
        }
        // The leader's own first entry follows the bootstrap snapshot; nothing else
        // may follow it, though a leader that re-proposed the bootstrap would append
        // an entry in each of the dozens of driver iterations below.
        let first = BOOTSTRAP_INDEX + 1;
        while handle.view().applied < first {
            assert!(tokio::time::Instant::now() < deadline, "no entry applied");
            let _ = tokio::time::timeout(Duration::from_millis(50), views.changed()).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            handle.view().applied,
            first,
            "the refused bootstrap was proposed"
        );
        assert!(!handle.view().state.is_bootstrapped());
        // The cluster still takes changes.
        let index = handle
            .propose(Command::SetPeer {
                node: "n1".into(),
                address: "127.0.0.1:7001".into(),
            })
            .await
            .expect("a valid change applies");
        assert_eq!(index, first + 1);
    });
    let _ = stop.send(());
    thread.join().unwrap();
}

/// A pool as the property tests draw it: a name (sometimes with a forbidden
/// character), vnodes and its upstreams' weights.
fn arb_pool() -> impl Strategy<Value = (String, u32, Vec<u32>)> {
    let name = prop_oneof![
        "[a-z]{1,8}",
        "[a-z]{1,4}[\u{202A}-\u{202E}\u{0}-\u{1F}é]{1,2}",
    ];
    let vnodes = prop_oneof![1..=MAX_VNODES + 1, Just(MAX_VNODES)];
    let weight = prop_oneof![1..=10u32, MAX_WEIGHT - 1..=MAX_WEIGHT + 1];
    (name, vnodes, prop::collection::vec(weight, 1..8))
}

fn file_of(pools: &[(String, u32, Vec<u32>)]) -> String {
    let mut out = String::new();
    let mut first = 0;
    for (i, (name, vnodes, weights)) in pools.iter().enumerate() {
        let name = serde_json::to_string(&format!("{name}{i}")).unwrap();
        out.push_str(&format!(
            "  - name: {name}\n    path_prefix: /{i}\n    vnodes: {vnodes}\n    upstreams:\n"
        ));
        for (j, w) in weights.iter().enumerate() {
            out.push_str(&format!(
                "      - {{address: \"{}\", weight: {w}}}\n",
                addr(first + j)
            ));
        }
        first += weights.len();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any file that builds bootstraps the cluster, and any edit from one file that
    /// builds to another applies as the reload's batch.
    #[test]
    fn whatever_check_accepts_the_cluster_applies(
        old in prop::collection::vec(arb_pool(), 1..5),
        new in prop::collection::vec(arb_pool(), 1..5),
    ) {
        let Ok(old) = parse(&file_of(&old)) else { return Ok(()) };
        let mut state = ClusterState::default();
        let bootstrap = ClusterState::bootstrap_command(&old);
        prop_assert!(bootstrap.encode().len() <= MAX_COMMAND_BYTES);
        prop_assert_eq!(state.apply(&bootstrap), Ok(()));
        let Ok(new) = parse(&file_of(&new)) else { return Ok(()) };
        let changes = file_changes(&old, &new, &state);
        if !changes.is_empty() {
            let batch = Command::Batch { commands: changes };
            prop_assert!(batch.encode().len() <= MAX_COMMAND_BYTES);
            prop_assert_eq!(state.apply(&batch), Ok(()));
        }
        let total: u64 = state.pools().flat_map(|(_, l)| l).map(|u| u64::from(u.weight)).sum();
        prop_assert!(total <= MAX_TOTAL_WEIGHT);
    }
}

#[test]
fn check_summary_names_ring_points_against_their_bounds() {
    let (config, _) = applies(&pool_yaml("web", 100, &[1, 2], 0));
    let summary = ringway::cli::summary(&config);
    let ring = ringway::proxy::snapshot::pool_ring(&config.pools[0]).len();
    assert!(
        summary.contains(&format!(
            "ring points {ring} of at most {MAX_POINTS_PER_POOL}"
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "ring points, all pools: {ring} of at most {MAX_TOTAL_POINTS}"
        )),
        "{summary}"
    );
}

/// The `i`th distinct loopback address (nothing listens; no request is sent).
fn loopback(i: usize) -> String {
    format!("127.1.{}.{}:9", i / 256, i % 256)
}

/// The replicated weights of pool `web` on a running instance, by upstream id.
fn live_weights(i: &crate::procs::Instance) -> Option<BTreeMap<String, u64>> {
    let pools = i.get("/api/pools")?;
    let replicated = pools["pools"][0]["replicated"].as_array()?;
    replicated
        .iter()
        .map(|u| Some((u["id"].as_str()?.to_owned(), u["weight"].as_u64()?)))
        .collect()
}

#[test]
fn a_running_instance_holds_the_bounds_through_file_reload_put_and_batch() {
    use crate::procs::{eventually, free_port, local, test_dir, Instance};
    let dir = test_dir("bounds-run");
    let (listener, admin) = (free_port(), free_port());
    let config = dir.join("ringway.yaml");
    // A pool of `weights`, upstream ids u0, u1, ... (addresses need not answer).
    let file = |weights: &[u32]| {
        let ups: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{{id: u{i}, address: \"{}\", weight: {w}}}", loopback(i)))
            .collect();
        format!(
            "node: {{id: solo, data_dir: {data:?}}}\n\
             listeners: [{{address: \"127.0.0.1:{listener}\"}}]\n\
             admin: {{address: \"127.0.0.1:{admin}\", token_file: {token:?}}}\n\
             pools:\n  - name: web\n    hash_key: path\n    vnodes: {MAX_VNODES}\n    upstreams: [{ups}]\n",
            data = dir.join("data").display().to_string(),
            token = dir.join("token").display().to_string(),
            ups = ups.join(", "),
        )
    };
    let replace = |text: String| {
        let tmp = config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
    };
    let per_pool = (MAX_POOL_WEIGHT / MAX_WEIGHT as u64) as usize;
    let full = vec![MAX_WEIGHT; per_pool];

    // The file: a pool at its weight bound, each upstream at the largest weight.
    replace(file(&full));
    let (ok, out, err) = Instance::cli(&["check", "--config", config.to_str().unwrap()]);
    assert!(ok, "check accepts the pool at its bounds: {out}{err}");
    let mut i = Instance {
        name: "solo".into(),
        config: config.clone(),
        admin: local(admin),
        listener: local(listener),
        raft: local(0),
        child: None,
    };
    i.start();
    let at_start = eventually("the pool applied", || {
        live_weights(&i).filter(|w| w.len() == per_pool)
    });
    assert!(
        at_start.values().all(|&w| w == MAX_WEIGHT as u64),
        "{at_start:?}"
    );
    let status = |i: &Instance| i.get("/api/config").unwrap();

    // Reloads one past each bound: refused, reported, nothing changed.
    let mut heavier = full.clone();
    heavier[0] = MAX_WEIGHT + 1;
    let mut longer = full.clone();
    longer.push(1);
    for (what, weights, words) in [
        ("weight", heavier, format!("at most {MAX_WEIGHT}")),
        ("pool weight", longer, format!("at most {MAX_POOL_WEIGHT}")),
    ] {
        let failed = status(&i)["failed"].as_u64().unwrap();
        replace(file(&weights));
        let (ok, out, err) = Instance::cli(&["check", "--config", config.to_str().unwrap()]);
        assert!(!ok, "check refuses one past the {what} bound: {out}");
        assert!(err.contains(&words), "check names the bound: {err}");
        let report = eventually("the reload refused", || {
            let st = status(&i);
            (st["failed"].as_u64()? > failed).then_some(st)
        });
        let error = report["last_error"].as_str().unwrap();
        assert!(
            error.contains(&words),
            "the reload names the bound: {error}"
        );
        assert_eq!(
            live_weights(&i).unwrap(),
            at_start,
            "a refused reload changes nothing"
        );
    }
    // Back at the bound: the reload applies (nothing to change) and clears the error.
    replace(file(&full));
    eventually("the error cleared", || {
        status(&i)["last_error"].is_null().then_some(())
    });

    // PUT: the largest weight in place applies; one more unit in the full pool and a
    // weight past the bound are refused with the bound named.
    let put = |id: &str, weight: u32| {
        let body = format!(
            "{{\"address\": \"{}\", \"weight\": {weight}}}",
            loopback(90)
        );
        i.change("PUT", &format!("/api/pools/web/upstreams/{id}"), &body)
            .unwrap()
    };
    let (code, text) = put("u1", MAX_WEIGHT);
    assert_eq!(code, 200, "{text}");
    let (code, text) = put("extra", 1);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains(&MAX_POOL_WEIGHT.to_string()), "{text}");
    let (code, text) = put("u1", MAX_WEIGHT + 1);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("weight"), "{text}");

    // A batch: swapping one upstream for another at the same weight stays at the
    // bound and applies; adding one more unit is refused whole.
    let swap = serde_json::json!({"changes": [
        {"op": "delete_upstream", "pool": "web", "id": "u0"},
        {"op": "put_upstream", "pool": "web", "upstream": {"id": "swapped", "address": loopback(91), "weight": MAX_WEIGHT}},
    ]});
    let (code, text) = i.change("POST", "/api/batch", &swap.to_string()).unwrap();
    assert_eq!(code, 200, "{text}");
    let before = live_weights(&i).unwrap();
    assert_eq!(before.values().sum::<u64>(), MAX_POOL_WEIGHT, "{before:?}");
    let over = serde_json::json!({"changes": [
        {"op": "put_upstream", "pool": "web", "upstream": {"id": "more", "address": loopback(92), "weight": 1}},
    ]});
    let (code, text) = i.change("POST", "/api/batch", &over.to_string()).unwrap();
    assert_eq!(code, 400, "{text}");
    assert!(text.contains(&MAX_POOL_WEIGHT.to_string()), "{text}");
    assert_eq!(
        live_weights(&i).unwrap(),
        before,
        "a refused batch changes nothing"
    );
    i.assert_running();
    drop(i);
    let _ = std::fs::remove_dir_all(&dir);
}
