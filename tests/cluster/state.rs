//! The replicated state machine: deterministic apply, refusals that change nothing,
//! encoding round trips, drift between file and cluster, and rings built from it.

use proptest::prelude::*;
use ringway::cluster::state::{ClusterState, Command, Drift, Refused, UpstreamSpec, MAX_WEIGHT};
use ringway::config::Config;
use ringway::proxy::Snapshot;

fn up(id: &str, port: u16, weight: u32) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        address: format!("127.0.0.1:{port}"),
        weight,
        draining: false,
    }
}

fn set_pool(pool: &str, ups: Vec<UpstreamSpec>) -> Command {
    Command::SetPool {
        pool: pool.into(),
        upstreams: ups,
    }
}

#[test]
fn commands_change_membership_in_place() {
    let mut s = ClusterState::default();
    s.apply(&set_pool("web", vec![up("a", 1, 1), up("b", 2, 1)]))
        .unwrap();
    s.apply(&Command::PutUpstream {
        pool: "web".into(),
        upstream: up("c", 3, 2),
    })
    .unwrap();
    // Updating keeps the upstream's position (ring ties depend on pool order).
    s.apply(&Command::PutUpstream {
        pool: "web".into(),
        upstream: up("a", 11, 5),
    })
    .unwrap();
    let ids: Vec<_> = s
        .pool("web")
        .unwrap()
        .iter()
        .map(|u| (u.id.as_str(), u.weight))
        .collect();
    assert_eq!(ids, [("a", 5), ("b", 1), ("c", 2)]);
    assert_eq!(s.pool("web").unwrap()[0].address, "127.0.0.1:11");
    s.apply(&Command::DeleteUpstream {
        pool: "web".into(),
        id: "b".into(),
    })
    .unwrap();
    assert_eq!(s.pool("web").unwrap().len(), 2);
    s.apply(&Command::RemovePool { pool: "web".into() })
        .unwrap();
    assert!(s.pool("web").is_none());
}

#[test]
fn refused_commands_change_nothing() {
    let mut s = ClusterState::default();
    s.apply(&set_pool("web", vec![up("a", 1, 1)])).unwrap();
    let before = s.clone();
    let bad = [
        (
            Command::PutUpstream {
                pool: "nope".into(),
                upstream: up("x", 9, 1),
            },
            "no pool named",
        ),
        (
            Command::DeleteUpstream {
                pool: "web".into(),
                id: "zz".into(),
            },
            "has no upstream",
        ),
        (
            Command::RemovePool {
                pool: "nope".into(),
            },
            "no pool named",
        ),
        (
            Command::PutUpstream {
                pool: "web".into(),
                upstream: up("x", 9, 0),
            },
            "weight must be from 1",
        ),
        (
            Command::PutUpstream {
                pool: "web".into(),
                upstream: up("x", 9, MAX_WEIGHT + 1),
            },
            "weight must be from 1",
        ),
        (
            Command::PutUpstream {
                pool: "web".into(),
                upstream: UpstreamSpec {
                    address: "not an address".into(),
                    ..up("x", 9, 1)
                },
            },
            "address",
        ),
        (
            set_pool("web", vec![up("a", 1, 1), up("a", 2, 1)]),
            "listed twice",
        ),
        (set_pool("", vec![]), "pool must be"),
    ];
    for (cmd, needle) in bad {
        let err = s.apply(&cmd).unwrap_err();
        assert!(err.to_string().contains(needle), "{cmd:?}: {err}");
        assert_eq!(s, before, "{cmd:?} must change nothing");
    }
    assert!(matches!(
        s.apply(&Command::RemovePool { pool: "x".into() }),
        Err(Refused::UnknownPool(_))
    ));
}

#[test]
fn encodings_round_trip_and_reject_other_versions() {
    let cmd = Command::PutUpstream {
        pool: "web".into(),
        upstream: up("a", 1, 3),
    };
    assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
    let mut s = ClusterState::default();
    s.apply(&set_pool("web", vec![up("a", 1, 1)])).unwrap();
    assert_eq!(ClusterState::decode(&s.encode()).unwrap(), s);
    assert_eq!(ClusterState::decode(b"").unwrap(), ClusterState::default());
    let future = br#"{"v":2,"body":{"op":"remove_pool","pool":"web"}}"#;
    assert!(Command::decode(future)
        .unwrap_err()
        .to_string()
        .contains("format version 2"));
    let unknown = br#"{"v":1,"body":{"op":"reboot"}}"#;
    assert!(Command::decode(unknown).is_err());
    // A snapshot holding an invalid upstream is refused, not trusted.
    let bad = br#"{"v":1,"body":{"pools":{"web":[{"id":"a","address":"nope","weight":1}]}}}"#;
    assert!(ClusterState::decode(bad)
        .unwrap_err()
        .to_string()
        .contains("address"));
}

fn config() -> Config {
    Config::parse(include_str!("../../config.example.yaml")).unwrap()
}

#[test]
fn bootstrap_from_the_file_leaves_no_drift() {
    let c = config();
    let mut s = ClusterState::default();
    assert_eq!(s.drift(&c), [Drift::PoolOnlyInFile("web".into())]);
    s.apply(&ClusterState::bootstrap_command(&c)).unwrap();
    assert!(s.is_bootstrapped());
    assert!(s.drift(&c).is_empty());
    // Only the first bootstrap applies.
    let again = s.apply(&ClusterState::bootstrap_command(&c)).unwrap_err();
    assert!(again.to_string().contains("already bootstrapped"));
    s.apply(&Command::PutUpstream {
        pool: "web".into(),
        upstream: up("extra", 9009, 1),
    })
    .unwrap();
    s.apply(&set_pool("api", vec![up("z", 1, 1)])).unwrap();
    assert_eq!(
        s.drift(&c),
        [
            Drift::UpstreamsDiffer {
                pool: "web".into(),
                in_file: vec![],
                in_cluster: vec!["extra".into()],
            },
            Drift::PoolOnlyInCluster("api".into())
        ]
    );
    assert_eq!(
        s.drift(&c)[0].to_string(),
        "pool web differs: as in the file only [], as in the cluster only [extra]"
    );
}

#[test]
fn rings_come_from_the_cluster_and_skip_draining_upstreams() {
    let c = config();
    let mut s = ClusterState::default();
    s.apply(&ClusterState::bootstrap_command(&c)).unwrap();
    let from_file = Snapshot::build(&c, None);
    let from_cluster = Snapshot::build_with(&c, Some(&committed(&s)), None);
    let digest = |snap: &Snapshot| {
        let p = &snap.pools[0];
        let ids: Vec<&str> = p.upstreams.iter().map(|u| &*u.id).collect();
        p.ring.digest(&ids)
    };
    assert_eq!(digest(&from_file), digest(&from_cluster));
    let mut drained = s.pool("web").unwrap()[1].clone();
    drained.draining = true;
    s.apply(&Command::PutUpstream {
        pool: "web".into(),
        upstream: drained,
    })
    .unwrap();
    let snap = Snapshot::build_with(&c, Some(&committed(&s)), None);
    let ids: Vec<&str> = snap.pools[0].upstreams.iter().map(|u| &*u.id).collect();
    assert_eq!(ids, ["127.0.0.1:9001", "cache-3"]);
}

#[test]
fn a_joining_instance_serves_no_upstream_until_the_cluster_state_arrives() {
    let c = config();
    let empty = ClusterState::default();
    let joining = ringway::control::follow::Committed {
        state: &empty,
        joining: true,
    };
    let snap = Snapshot::build_with(&c, Some(&joining), None);
    assert!(
        snap.pools[0].upstreams.is_empty(),
        "no upstream before the state"
    );
    assert!(snap.pools[0].ring.is_empty());
    // A founder that has not bootstrapped yet serves its file meanwhile.
    let founder = Snapshot::build_with(&c, Some(&committed(&empty)), None);
    assert_eq!(founder.pools[0].upstreams.len(), c.pools[0].upstreams.len());
    // Once the state has arrived the joining instance serves the cluster's pools.
    let mut s = ClusterState::default();
    s.apply(&ClusterState::bootstrap_command(&c)).unwrap();
    let joined = ringway::control::follow::Committed {
        state: &s,
        joining: true,
    };
    let snap = Snapshot::build_with(&c, Some(&joined), None);
    assert_eq!(snap.pools[0].upstreams.len(), c.pools[0].upstreams.len());
}

fn arb_command() -> impl Strategy<Value = Command> {
    let pool = prop::sample::select(vec!["web", "api", "img"]);
    let id = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
    let spec =
        (id.clone(), 1u16..5, 0u32..4, any::<bool>()).prop_map(|(id, port, weight, draining)| {
            UpstreamSpec {
                id: id.into(),
                address: format!("127.0.0.1:{port}"),
                weight,
                draining,
            }
        });
    prop_oneof![
        (pool.clone(), prop::collection::vec(spec.clone(), 0..4)).prop_map(|(p, u)| {
            Command::SetPool {
                pool: p.into(),
                upstreams: u,
            }
        }),
        pool.clone()
            .prop_map(|p| Command::RemovePool { pool: p.into() }),
        (pool.clone(), spec).prop_map(|(p, u)| Command::PutUpstream {
            pool: p.into(),
            upstream: u
        }),
        (pool, id).prop_map(|(p, i)| Command::DeleteUpstream {
            pool: p.into(),
            id: i.into()
        }),
    ]
}

proptest! {
    /// Two instances applying the same log hold byte-identical state, whatever the
    /// commands (refused ones included); decoding the encoded log gives the same state.
    #[test]
    fn apply_is_deterministic(cmds in prop::collection::vec(arb_command(), 0..40)) {
        let (mut a, mut b) = (ClusterState::default(), ClusterState::default());
        for cmd in &cmds {
            let wire = cmd.encode();
            let ra = a.apply(cmd);
            let rb = b.apply(&Command::decode(&wire).unwrap());
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(a.encode(), b.encode());
        prop_assert_eq!(ClusterState::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Command::decode(&bytes);
        let _ = ClusterState::decode(&bytes);
    }
}

/// The committed state as a snapshot's source, as a founding member reads it.
fn committed(state: &ClusterState) -> ringway::control::follow::Committed<'_> {
    ringway::control::follow::Committed {
        state,
        joining: false,
    }
}
