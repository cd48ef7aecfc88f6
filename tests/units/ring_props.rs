//! Consistency properties of the ring: adding one of N upstreams moves about 1/(N+1) of
//! the keys and only onto the new one; removing one moves only its own keys.

use proptest::prelude::*;
use ringway::ring::{point, Member, Ring};

fn ring_of(ids: &[String], vnodes: u32) -> Ring {
    let m: Vec<Member> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
    Ring::build(&m, vnodes)
}

fn owner<'a>(ring: &Ring, ids: &'a [String], key: u32) -> &'a str {
    &ids[ring.lookup(point(&key.to_be_bytes())).unwrap()]
}

const KEYS: u32 = 20_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn adding_an_upstream_moves_only_its_share_onto_it(n in 2usize..12, salt in any::<u64>()) {
        let ids: Vec<String> = (0..n).map(|i| format!("up-{salt}-{i}")).collect();
        let mut grown = ids.clone();
        grown.push(format!("new-{salt}"));
        let (before, after) = (ring_of(&ids, 150), ring_of(&grown, 150));
        let mut moved = 0;
        for k in 0..KEYS {
            let (a, b) = (owner(&before, &ids, k), owner(&after, &grown, k));
            if a != b {
                prop_assert_eq!(b, grown.last().unwrap().as_str(), "a moved key goes to the new upstream");
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        let expected = 1.0 / (n as f64 + 1.0);
        prop_assert!(share > expected * 0.6 && share < expected * 1.5,
            "moved {share:.3} of keys, expected about {expected:.3}");
    }

    #[test]
    fn removing_an_upstream_moves_only_its_keys(n in 3usize..12, gone in 0usize..12, salt in any::<u64>()) {
        let gone = gone % n;
        let ids: Vec<String> = (0..n).map(|i| format!("up-{salt}-{i}")).collect();
        let mut shrunk = ids.clone();
        let removed = shrunk.remove(gone);
        let (before, after) = (ring_of(&ids, 150), ring_of(&shrunk, 150));
        for k in 0..KEYS {
            let (a, b) = (owner(&before, &ids, k), owner(&after, &shrunk, k));
            if a != removed {
                prop_assert_eq!(a, b, "a key of a remaining upstream stays");
            }
        }
    }

    #[test]
    fn failover_order_is_the_ring_walk_without_the_owner(n in 2usize..10, key in any::<u32>(), salt in any::<u64>()) {
        let ids: Vec<String> = (0..n).map(|i| format!("up-{salt}-{i}")).collect();
        let ring = ring_of(&ids, 150);
        let walk: Vec<usize> = ring.walk(key, 16).collect();
        prop_assert_eq!(walk.len(), n);
        // Removing the owner sends the key to the second upstream of the walk.
        let owner = walk[0];
        let mut rest = ids.clone();
        rest.remove(owner);
        let shrunk = ring_of(&rest, 150);
        let next = &rest[shrunk.lookup(key).unwrap()];
        prop_assert_eq!(next, &ids[walk[1]]);
    }
}

#[test]
fn weights_spread_keys_in_proportion() {
    let ids = ["a", "b", "c"];
    let weights = [1u32, 2, 1];
    let m: Vec<Member> = ids
        .iter()
        .zip(weights)
        .map(|(id, weight)| Member { id, weight })
        .collect();
    let ring = Ring::build(&m, 150);
    let mut counts = [0usize; 3];
    for k in 0..KEYS {
        counts[ring.lookup(point(&k.to_be_bytes())).unwrap()] += 1;
    }
    let total = KEYS as f64;
    for (i, w) in weights.iter().enumerate() {
        let share = counts[i] as f64 / total;
        let expected = *w as f64 / 4.0;
        assert!(
            (share - expected).abs() < 0.08,
            "{}: share {share:.3}, expected {expected:.3}",
            ids[i]
        );
    }
}
