//! Operating a cluster of real `ringway run` processes: members added and removed at
//! runtime, a minority cut off from the others (traffic between instances really
//! cut, through relays), and a restarted member that can only catch up from a
//! snapshot.

use std::net::SocketAddr;
use std::time::Duration;

use crate::procs::*;

fn keys() -> Vec<String> {
    (0..30).map(|k| format!("/item/{k}")).collect()
}

fn route_via_api(i: &Instance, key: &str) -> String {
    let v = i.get(&format!("/api/route?pool=web&key={key}")).unwrap();
    v["upstream"].as_str().unwrap().to_owned()
}

#[test]
fn a_member_is_added_and_another_removed_at_runtime() {
    let dir = test_dir("membership");
    let (_rt, upstreams) = echo_upstreams(3);
    let mut nodes = cluster(&dir, &upstreams, "");
    let all: Vec<&Instance> = nodes.iter().collect();
    let leader = eventually("a leader", || agreed_leader(&all));
    eventually("the bootstrap everywhere", || same_digest(&all, None));

    // n4 starts empty, waiting to be added; it knows the founders' addresses.
    let raft4 = local(free_port());
    let mut peers: Vec<(String, SocketAddr)> =
        nodes.iter().map(|n| (n.name.clone(), n.raft)).collect();
    peers.push(("n4".into(), raft4));
    let node = Node {
        name: "n4",
        raft: raft4,
        peers,
        cluster_extra: "  join: true\n",
    };
    nodes.push(start_node(&dir, node, &upstreams));
    std::thread::sleep(Duration::from_millis(300));
    nodes[3].assert_running();
    let view = eventually("n4's admin API", || nodes[3].get("/api/cluster"));
    assert_eq!(view["members"].as_array().unwrap().len(), 0, "{view}");

    // Added through a follower with the CLI, which answers once n4 is a voter.
    let follower = nodes
        .iter()
        .find(|n| n.name != leader && n.name != "n4")
        .unwrap();
    let config = follower.config.to_str().unwrap();
    let raft4_text = raft4.to_string();
    let (ok, out, err) = Instance::cli(&["cluster", "-c", config, "add-node", "n4", &raft4_text]);
    assert!(ok, "add-node failed: {err}");
    assert!(out.contains("\"voter\""), "{out}");
    let all: Vec<&Instance> = nodes.iter().collect();
    let view = eventually("four voters seen by n4, with a leader", || {
        let v = nodes[3].get("/api/cluster")?;
        let voters = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "voter")
            .count();
        (voters == 4 && v["leader"].is_string()).then_some(v)
    });
    let names: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4);
    for n in ["n1", "n2", "n3", "n4"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let digest = eventually("n4 holds the same ring", || same_digest(&all, None));

    // `ringway route --live` on n4 and /api/route on the others agree on every key.
    let keys = keys();
    let mut args = vec!["route", "-c", nodes[3].config.to_str().unwrap(), "--live"];
    args.extend(keys.iter().map(String::as_str));
    let (ok, out, err) = Instance::cli(&args);
    assert!(ok, "route --live failed: {err}");
    let live: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let (k, u) = l.split_once('\t').unwrap();
            (k.to_owned(), u.to_owned())
        })
        .collect();
    assert_eq!(live.len(), keys.len(), "{out}");
    for (key, up) in &live {
        for n in &nodes[..3] {
            assert_eq!(&route_via_api(n, key), up, "{key} on {}", n.name);
        }
    }

    // A change through n4 reaches everyone.
    let body = format!("{{\"address\": \"{}\", \"weight\": 2}}", upstreams[0]);
    let (status, answer) = nodes[3]
        .change("PUT", "/api/pools/web/upstreams/extra", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let digest = eventually("the change on all four", || {
        same_digest(&all, Some(&digest))
    });

    // Remove a founder that is not the leader; the other three carry on without it.
    let leader = eventually("a leader", || agreed_leader(&all));
    let gone = nodes
        .iter()
        .position(|n| n.name != leader && n.name != "n4")
        .unwrap();
    let gone_name = nodes[gone].name.clone();
    let (ok, out, err) = Instance::cli(&[
        "cluster",
        "-c",
        nodes[3].config.to_str().unwrap(),
        "remove-node",
        &gone_name,
    ]);
    assert!(ok, "remove-node failed: {err}");
    assert!(out.contains("\"removed\": true"), "{out}");
    nodes[gone].kill9();
    let rest: Vec<&Instance> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, n)| n)
        .collect();
    eventually("three voters left", || {
        let v = rest[0].get("/api/cluster")?;
        let members = v["members"].as_array()?;
        let ok = members.len() == 3 && !members.iter().any(|m| m["id"] == gone_name.as_str());
        ok.then_some(())
    });
    let (status, answer) = rest[1]
        .change("DELETE", "/api/pools/web/upstreams/extra", "")
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    eventually("the next change on the remaining three", || {
        same_digest(&rest, Some(&digest))
    });

    // Bad requests are refused with a reason.
    let (status, answer) = rest[0]
        .change(
            "PUT",
            "/api/cluster/nodes/bad%20name",
            "{\"address\": \"127.0.0.1:1\"}",
        )
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = rest[0]
        .change("PUT", "/api/cluster/nodes/n9", "{\"address\": \"nowhere\"}")
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    let (status, _) = http_call(rest[0].admin, "DELETE", "/api/cluster/nodes/n4", &[], "").unwrap();
    assert_eq!(status, 401, "membership changes need the token");
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cut_off_minority_keeps_serving_cannot_commit_and_converges_after_healing() {
    let dir = test_dir("partition");
    let rt = runtime();
    let (_up_rt, upstreams) = echo_upstreams(3);
    let names = ["n1", "n2", "n3"];
    let raft: Vec<SocketAddr> = names.iter().map(|_| local(free_port())).collect();
    // relays[i][j]: how instance i reaches instance j.
    let relays: Vec<Vec<Option<Relay>>> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| (i != j).then(|| Relay::start(&rt, raft[j])))
                .collect()
        })
        .collect();
    let mut nodes: Vec<Instance> = (0..3)
        .map(|i| {
            let peers = (0..3)
                .map(|j| {
                    let addr = relays[i][j].as_ref().map_or(raft[j], |r| r.addr);
                    (names[j].to_owned(), addr)
                })
                .collect();
            let node = Node {
                name: names[i],
                raft: raft[i],
                peers,
                cluster_extra: "",
            };
            start_node(&dir, node, &upstreams)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    nodes.iter_mut().for_each(Instance::assert_running);
    let all: Vec<&Instance> = nodes.iter().collect();
    let leader = eventually("a leader", || agreed_leader(&all));
    let before = eventually("the bootstrap everywhere", || same_digest(&all, None));

    // Cut the leader off from both others, both ways.
    let cut = nodes.iter().position(|n| n.name == leader).unwrap();
    let links = |f: &dyn Fn(&Relay)| {
        for (i, row) in relays.iter().enumerate() {
            for (j, relay) in row.iter().enumerate() {
                if (i == cut) != (j == cut) {
                    f(relay.as_ref().unwrap());
                }
            }
        }
    };
    links(&|r| r.cut());
    let majority: Vec<&Instance> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cut)
        .map(|(_, n)| n)
        .collect();
    let minority = &nodes[cut];
    let new_leader = eventually("a new leader on the majority side", || {
        agreed_leader(&majority).filter(|l| *l != leader)
    });
    assert_ne!(new_leader, leader);

    // The majority commits a change; the minority cannot, and does not see it.
    let body = format!("{{\"address\": \"{}\"}}", upstreams[0]);
    let (status, answer) = majority[0]
        .change("PUT", "/api/pools/web/upstreams/extra", &body)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let after = eventually("the change on the majority", || {
        same_digest(&majority, Some(&before))
    });
    let (status, answer) = minority
        .change("PUT", "/api/pools/web/upstreams/other", &body)
        .unwrap();
    assert_eq!(
        status, 503,
        "the cut-off instance committed a change: {answer}"
    );
    eventually("the old leader steps down", || {
        let v = minority.get("/api/cluster")?;
        (v["role"] != "leader").then_some(())
    });
    let pools = minority.get("/api/pools").unwrap();
    assert_eq!(pools["pools"][0]["ring_digest"], before.as_str());

    // It keeps proxying with its last applied state.
    for key in keys() {
        let served = minority.served_by(&key);
        assert!(
            served.is_some(),
            "{key} failed through the cut-off instance"
        );
    }

    // Healed, it converges: same leader, same ring, and the refused change is nowhere.
    links(&|r| r.heal());
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually("one leader for all three", || agreed_leader(&all));
    let digest = eventually("the same ring everywhere", || same_digest(&all, None));
    assert_eq!(digest, after);
    for n in &nodes {
        let ids = upstream_ids(n).unwrap();
        assert!(ids.iter().any(|i| i == "extra"), "{}: {ids:?}", n.name);
        assert!(!ids.iter().any(|i| i == "other"), "{}: {ids:?}", n.name);
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_member_catches_up_from_a_snapshot() {
    let dir = test_dir("snapshot");
    let (_rt, upstreams) = echo_upstreams(3);
    let mut nodes = cluster(&dir, &upstreams, "  compact_threshold: 10\n");
    let all: Vec<&Instance> = nodes.iter().collect();
    let leader = eventually("a leader", || agreed_leader(&all));
    eventually("the bootstrap everywhere", || same_digest(&all, None));

    let f = nodes.iter().position(|n| n.name != leader).unwrap();
    let applied_before = nodes[f].get("/api/cluster").unwrap()["applied"]
        .as_u64()
        .unwrap();
    nodes[f].kill9();
    let li = nodes.iter().position(|n| n.name == leader).unwrap();
    for w in 0..40 {
        let body = format!(
            "{{\"address\": \"{}\", \"weight\": {}}}",
            upstreams[0],
            1 + w % 3
        );
        let (status, answer) = nodes[li]
            .change("PUT", "/api/pools/web/upstreams/extra", &body)
            .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    // The leader's log no longer holds what the stopped member lacks.
    let snap = eventually("the leader compacted its log", || {
        let v = nodes[li].get("/api/cluster")?;
        let s = v["snapshot_index"].as_u64()?;
        (s > applied_before + 1).then_some(s)
    });

    nodes[f].start();
    let all: Vec<&Instance> = nodes.iter().collect();
    eventually("the restarted member on the same ring", || {
        let d = digests(&all)?;
        d.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
    let v = nodes[f].get("/api/cluster").unwrap();
    assert!(
        v["snapshot_index"].as_u64().unwrap() >= snap,
        "caught up without the leader's snapshot? {v}"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
