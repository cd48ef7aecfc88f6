//! Golden vectors: ringway's ring must map keys exactly as the reference HashRing does.
//! `tests/golden/ring_v1.tsv` was recorded by `tests/golden/ring_reference.py`, an
//! independent implementation of the scheme; regenerate it only if the scheme changes
//! on purpose (which would move keys for every user).

use std::collections::BTreeMap;
use std::path::Path;

use ringway::config::Config;
use ringway::ring::{point, Member, Ring};

/// A ring case: vnodes and the members as (id, weight), in pool order.
type Case = (u32, Vec<(String, u32)>);

/// The cases of `ring_reference.py`.
fn cases() -> BTreeMap<&'static str, Case> {
    let ids = |v: &[(&str, u32)]| v.iter().map(|(id, w)| (id.to_string(), *w)).collect();
    let mut c = BTreeMap::new();
    c.insert(
        "three-default",
        (
            150,
            ids(&[
                ("127.0.0.1:9001", 1),
                ("127.0.0.1:9002", 1),
                ("127.0.0.1:9003", 1),
            ]),
        ),
    );
    c.insert(
        "example-weighted",
        (
            150,
            ids(&[("127.0.0.1:9001", 1), ("127.0.0.1:9002", 2), ("cache-3", 1)]),
        ),
    );
    let shards = (0..10).map(|n| (format!("shard-{n}"), 1 + n % 3)).collect();
    c.insert("ten-vnodes40", (40, shards));
    c.insert("one", (150, ids(&[("solo", 1)])));
    c
}

fn golden() -> Vec<(String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ring_v1.tsv");
    let text = std::fs::read_to_string(&path).expect("golden file is readable");
    text.lines()
        .map(|line| {
            let mut f = line.splitn(3, '\t');
            let mut next = || f.next().expect("three tab-separated fields").to_owned();
            (next(), next(), next())
        })
        .collect()
}

#[test]
fn ring_matches_the_reference_hash_ring() {
    let cases = cases();
    let rows = golden();
    assert!(rows.len() > 800, "golden file has {} rows", rows.len());
    let mut checked = 0;
    for (case, (vnodes, members)) in &cases {
        let m: Vec<Member> = members
            .iter()
            .map(|(id, w)| Member { id, weight: *w })
            .collect();
        let ring = Ring::build(&m, *vnodes);
        for (_, key, want) in rows.iter().filter(|r| r.0 == *case) {
            let got = &members[ring.lookup(point(key.as_bytes())).unwrap()].0;
            assert_eq!(got, want, "case {case}, key {key:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, rows.len(), "every golden row belongs to a case");
}

#[test]
fn example_config_routes_like_the_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let config = Config::load(&path).expect("example config is valid");
    let rows: Vec<_> = golden()
        .into_iter()
        .filter(|r| r.0 == "example-weighted")
        .collect();
    let keys: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    let out = ringway::cli::route(&config, Some("web"), &keys).unwrap();
    for (line, (_, key, want)) in out.lines().zip(&rows) {
        assert_eq!(line, format!("{key}\t{want}"));
    }
    assert_eq!(out.lines().count(), rows.len());
}
