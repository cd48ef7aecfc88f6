//! The consistent-hash ring: an immutable, sorted array of MD5 points, each owned by
//! one upstream of a pool.
//!
//! The scheme (kept compatible with the reference HashRing; golden tests pin it):
//! - `point(s)` is MD5(s) read as a big-endian 128-bit integer, mod 2^32: the last
//!   four digest bytes as a big-endian `u32`.
//! - An upstream with identity `id` and weight `w` owns `point("{i}:{id}")` for
//!   `i in 0..vnodes * w`.
//! - A key maps to the first point `>= point(key)`, wrapping to the ring's first point.
//! - When two upstreams hash to the same point, the one listed later keeps it.
//! - An upstream in slow start at step `k` of `n` (a [`Share`]) owns only the first
//!   `ceil(points * k / n)` of its points (`i` in `0..m`): a growing share only adds
//!   points, so no key moves between two other upstreams and its own keys only grow.
//!   A full share is exactly the scheme above.
//!
//! A ring does no I/O and never changes once built; a new membership builds a new ring.

use std::fmt::Write as _;

use md5::{Digest, Md5};

/// One member as the ring sees it: an identity and a weight.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub id: &'a str,
    pub weight: u32,
}

/// How much of its points a member owns: step `step` of `steps` of a slow start.
/// [`Share::FULL`] (and any `step >= steps`) is every point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub step: u32,
    pub steps: u32,
}

impl Share {
    /// Every point: a member not in slow start.
    pub const FULL: Share = Share { step: 1, steps: 1 };

    /// True when the member owns every point.
    pub fn is_full(self) -> bool {
        self.steps == 0 || self.step >= self.steps
    }

    /// How many of `full` points this share owns: `ceil(full * step / steps)`.
    pub fn points(self, full: u64) -> u64 {
        if self.is_full() {
            return full;
        }
        (full * u64::from(self.step)).div_ceil(u64::from(self.steps))
    }
}

/// A built ring. Upstreams are named by their index in the member list it was built from.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// Sorted ascending, no duplicates.
    points: Box<[u32]>,
    /// `owners[i]` is the member index owning `points[i]`.
    owners: Box<[u32]>,
    /// Number of members the ring was built from (some may own no point).
    members: usize,
    /// The share of each member that is not full, by member index (usually empty).
    partial: Box<[(u32, Share)]>,
}

/// Hashes a whole key to its ring position.
pub fn point(key: &[u8]) -> u32 {
    point_of(Md5::new_with_prefix(key))
}

/// Finishes an incrementally fed hasher into a ring position (see [`point`]).
pub fn point_of(hasher: Md5) -> u32 {
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[12], digest[13], digest[14], digest[15]])
}

impl Ring {
    /// Builds the ring for `members` in pool order, `vnodes` points per unit of weight.
    pub fn build(members: &[Member<'_>], vnodes: u32) -> Ring {
        Ring::build_shared(members, vnodes, |_| Share::FULL)
    }

    /// Builds the ring with member `i` owning `share(i)` of its points (see the
    /// module docs); a full share for every member is [`Ring::build`].
    pub fn build_shared(
        members: &[Member<'_>],
        vnodes: u32,
        share: impl Fn(usize) -> Share,
    ) -> Ring {
        let shares: Vec<Share> = (0..members.len()).map(&share).collect();
        let counts: Vec<u64> = members
            .iter()
            .zip(&shares)
            .map(|(m, s)| s.points(u64::from(vnodes) * u64::from(m.weight)))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(total as usize);
        let mut label = String::new();
        for (owner, (m, &count)) in members.iter().zip(&counts).enumerate() {
            for i in 0..count {
                label.clear();
                let _ = write!(label, "{i}:{}", m.id);
                pairs.push((point(label.as_bytes()), owner as u32));
            }
        }
        // Stable by point, so equal points stay in pool order; keeping the last of a
        // run of equal points gives the point to the upstream listed later.
        pairs.sort_by_key(|&(p, _)| p);
        let mut points = Vec::with_capacity(pairs.len());
        let mut owners = Vec::with_capacity(pairs.len());
        for (i, &(p, o)) in pairs.iter().enumerate() {
            if pairs.get(i + 1).is_some_and(|next| next.0 == p) {
                continue;
            }
            points.push(p);
            owners.push(o);
        }
        let partial = shares
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_full())
            .map(|(i, &s)| (i as u32, s))
            .collect();
        Ring {
            points: points.into(),
            owners: owners.into(),
            members: members.len(),
            partial,
        }
    }

    /// The share of its points member `i` owns ([`Share::FULL`] unless in slow start).
    pub fn share(&self, i: usize) -> Share {
        self.partial
            .iter()
            .find(|(m, _)| *m as usize == i)
            .map_or(Share::FULL, |&(_, s)| s)
    }

    /// True when no member owns a point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Number of points on the ring.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Number of members the ring was built from.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Index of the first point at or after `hash`, wrapping to 0.
    fn position(&self, hash: u32) -> usize {
        let i = self.points.partition_point(|&p| p < hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// The member owning `hash`, or `None` on an empty ring. O(log n), no allocation.
    pub fn lookup(&self, hash: u32) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        Some(self.owners[self.position(hash)] as usize)
    }

    /// Distinct members in ring order starting at `hash`: the owner first, then the
    /// failover order. Yields at most `limit` members (capped at [`MAX_WALK`]).
    pub fn walk(&self, hash: u32, limit: usize) -> Walk<'_> {
        let start = if self.is_empty() {
            0
        } else {
            self.position(hash)
        };
        Walk {
            ring: self,
            next: start,
            stepped: 0,
            seen: [0; MAX_WALK],
            yielded: 0,
            limit: limit.min(MAX_WALK).min(self.members),
        }
    }

    /// Points owned by each member, indexed like the member list.
    pub fn points_per_member(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members];
        for &o in self.owners.iter() {
            counts[o as usize] += 1;
        }
        counts
    }

    /// Every point with the index of the member owning it, in ring order (ascending).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (u32, usize)> + '_ {
        self.points
            .iter()
            .zip(self.owners.iter())
            .map(|(&p, &o)| (p, o as usize))
    }

    /// An order-sensitive digest of the whole ring (points and owners), to compare
    /// rings built on different instances.
    pub fn digest(&self, ids: &[&str]) -> String {
        let mut h = Md5::new();
        for (&p, &o) in self.points.iter().zip(self.owners.iter()) {
            h.update(p.to_be_bytes());
            h.update(ids.get(o as usize).copied().unwrap_or("").as_bytes());
            h.update([0]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Most distinct members one walk can yield; the inline memory of [`Walk`]. Bounds
/// failover attempts per request (see `config::MAX_ATTEMPTS_LIMIT`).
pub const MAX_WALK: usize = 16;

/// Iterator over distinct members in ring order; see [`Ring::walk`].
#[derive(Debug, Clone)]
pub struct Walk<'r> {
    ring: &'r Ring,
    next: usize,
    stepped: usize,
    seen: [u32; MAX_WALK],
    yielded: usize,
    limit: usize,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let n = self.ring.points.len();
        while self.yielded < self.limit && self.stepped < n {
            let owner = self.ring.owners[self.next];
            self.next = if self.next + 1 == n { 0 } else { self.next + 1 };
            self.stepped += 1;
            if !self.seen[..self.yielded].contains(&owner) {
                self.seen[self.yielded] = owner;
                self.yielded += 1;
                return Some(owner as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Ring {
        let members: Vec<Member> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
        Ring::build(&members, 150)
    }

    #[test]
    fn point_is_last_four_digest_bytes_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(point(b""), 0xecf8427e);
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(point(b"a"), 0x69772661);
    }

    #[test]
    fn empty_ring_finds_nothing() {
        let r = Ring::build(&[], 150);
        assert!(r.is_empty());
        assert_eq!(r.lookup(42), None);
        assert_eq!(r.walk(42, 3).count(), 0);
    }

    #[test]
    fn key_maps_to_first_point_at_or_after_it_and_wraps() {
        let r = ring(&["a", "b", "c"]);
        let first = r.points[0];
        let last = *r.points.last().unwrap();
        assert_eq!(r.lookup(first), Some(r.owners[0] as usize));
        assert_eq!(r.lookup(first.wrapping_sub(1)), Some(r.owners[0] as usize));
        assert_eq!(r.lookup(last), Some(*r.owners.last().unwrap() as usize));
        if last < u32::MAX {
            assert_eq!(
                r.lookup(last + 1),
                Some(r.owners[0] as usize),
                "wraps to the first point"
            );
        }
        let mid = r.points[10];
        assert_eq!(r.lookup(mid - 1), Some(r.owners[10] as usize));
    }

    #[test]
    fn weight_multiplies_points() {
        let members = [Member { id: "a", weight: 1 }, Member { id: "b", weight: 3 }];
        let r = Ring::build(&members, 100);
        assert_eq!(r.points_per_member(), vec![100, 300]);
    }

    #[test]
    fn later_member_keeps_a_shared_point() {
        // The same id twice collides on every point: the later one owns them all.
        let members = [Member { id: "x", weight: 1 }, Member { id: "x", weight: 1 }];
        let r = Ring::build(&members, 10);
        assert_eq!(r.points_per_member(), vec![0, 10]);
    }

    #[test]
    fn walk_yields_distinct_members_starting_with_the_owner() {
        let r = ring(&["a", "b", "c", "d"]);
        for key in 0..200u32 {
            let h = point(&key.to_be_bytes());
            let order: Vec<usize> = r.walk(h, 16).collect();
            assert_eq!(order.len(), 4);
            assert_eq!(order[0], r.lookup(h).unwrap());
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
            assert_eq!(r.walk(h, 2).collect::<Vec<_>>(), order[..2]);
        }
    }
}
