//! The status page on the admin port (`GET /`, also `GET /status`): one HTML page, its
//! script (`/status.js`) and its style sheet (`/status.css`), embedded in the binary
//! from `src/admin/status/` and served with a strict Content-Security-Policy. The page
//! reads the JSON API every two seconds and draws each pool's ring
//! from `GET /api/pools/NAME/ring`; it only reads, so it needs no token.
//!
//! The ring endpoint describes the ring as *arcs* of the 2^32 hash space: a key whose
//! point falls in `[start, end)` goes to the arc's owner (before ejections are
//! skipped). Consecutive points with the same owner are merged into one arc, and at
//! most [`MAX_RING_ARCS`] arcs are sent (`capped` says when there were more); each
//! upstream's share of the hash space is always computed over the whole ring.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::proxy::snapshot::PoolState;
use crate::ring::Ring;

use super::Body;

/// The page, its script and its style sheet, as served.
const PAGE: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/status.js");
const STYLE: &str = include_str!("status/status.css");

/// What the page may load: its own script, style sheet and API, nothing inline, no
/// frames, no form posts. The names it shows are operator input; with no inline
/// script allowed, a name that slipped into markup still could not run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Most arcs one ring answer carries. A pool of 100 upstreams with 150 points each is
/// 15,000 points, hence at most 15,000 arcs, which fits; a pool can have up to
/// 2,000,000 points (`config::bounds::MAX_POINTS_PER_POOL`), which no page can draw
/// usefully and would make a 50 MB answer. 20,000 arcs are about 600 kB of JSON.
pub const MAX_RING_ARCS: usize = 20_000;

/// The size of the hash space the ring's points live in.
pub const RING_SPAN: u64 = 1 << 32;

/// The embedded file at `path` (`/`, `/status`, `/status.js`, `/status.css`), with
/// the page's security headers, or `None` for any other path.
pub(super) fn asset(segments: &[&str]) -> Option<Response<Body>> {
    let (body, content_type) = match segments {
        [""] | ["status"] => (PAGE, "text/html; charset=utf-8"),
        ["status.js"] => (SCRIPT, "text/javascript; charset=utf-8"),
        ["status.css"] => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = resp.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(resp)
}

/// One stretch of the hash space: keys hashing into `[start, end)` go to member
/// `owner` of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingArc {
    pub start: u64,
    pub end: u64,
    pub owner: usize,
}

/// A ring cut into arcs: the first `max_arcs` of them in ring order, how many there
/// are in all, and how much of the hash space each member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub arcs: Vec<RingArc>,
    pub total_arcs: usize,
    /// Indexed like the ring's members; sums to [`RING_SPAN`] unless the ring is empty.
    pub owned: Vec<u64>,
}

/// Cuts `ring` into arcs covering `[0, 2^32)` in order, merging neighbours with the
/// same owner; keeps at most `max_arcs` of them. A point `p` owns the keys after the
/// previous point up to `p` itself; the first point also owns the keys after the last.
pub fn layout(ring: &Ring, max_arcs: usize) -> Layout {
    let mut out = Layout {
        arcs: Vec::with_capacity(ring.len().min(max_arcs)),
        total_arcs: 0,
        owned: vec![0; ring.members()],
    };
    let mut entries = ring.entries();
    let Some((first_point, first_owner)) = entries.next() else {
        return out;
    };
    let mut current = RingArc {
        start: 0,
        end: u64::from(first_point) + 1,
        owner: first_owner,
    };
    let push = |out: &mut Layout, arc: RingArc| {
        out.owned[arc.owner] += arc.end - arc.start;
        out.total_arcs += 1;
        if out.arcs.len() < max_arcs {
            out.arcs.push(arc);
        }
    };
    for (point, owner) in entries {
        let end = u64::from(point) + 1;
        if owner == current.owner {
            current.end = end;
        } else {
            push(&mut out, current);
            current = RingArc {
                start: current.end,
                end,
                owner,
            };
        }
    }
    // The keys after the last point wrap to the first point's owner.
    if current.end < RING_SPAN {
        if current.owner == first_owner {
            current.end = RING_SPAN;
        } else {
            push(&mut out, current);
            current = RingArc {
                start: current.end,
                end: RING_SPAN,
                owner: first_owner,
            };
        }
    }
    push(&mut out, current);
    out
}

/// `GET /api/pools/NAME/ring` for `pool` as this instance routes it: its upstreams
/// (id, address, points, share of the hash space), the arcs as `[start, end,
/// upstream index]`, and whether they were capped at [`MAX_RING_ARCS`].
pub(super) fn ring_json(pool: &PoolState) -> Value {
    let ring = &pool.ring;
    let layout = layout(ring, MAX_RING_ARCS);
    let points = ring.points_per_member();
    let ids: Vec<&str> = pool.upstreams.iter().map(|u| &*u.id).collect();
    let upstreams: Vec<Value> = pool
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let owned = layout.owned.get(i).copied().unwrap_or(0);
            json!({
                "id": &*u.id,
                "address": u.addr.to_string(),
                "points": points.get(i).copied().unwrap_or(0),
                "share": owned as f64 / RING_SPAN as f64,
            })
        })
        .collect();
    let arcs: Vec<[u64; 3]> = layout
        .arcs
        .iter()
        .map(|a| [a.start, a.end, a.owner as u64])
        .collect();
    json!({
        "pool": &*pool.name,
        "digest": ring.digest(&ids),
        "points": ring.len(),
        "span": RING_SPAN,
        "upstreams": upstreams,
        "arcs": arcs,
        "arcs_total": layout.total_arcs,
        "max_arcs": MAX_RING_ARCS,
        "capped": layout.total_arcs > layout.arcs.len(),
    })
}

/// A compact JSON answer: a ring's arcs are many and the page reads them by script.
pub(super) fn compact_json(value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{point, Member};

    fn ring(ids: &[&str], vnodes: u32) -> Ring {
        let members: Vec<Member> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
        Ring::build(&members, vnodes)
    }

    #[test]
    fn arcs_cover_the_space_in_order_and_agree_with_lookup() {
        let r = ring(&["a", "b", "c"], 50);
        let l = layout(&r, usize::MAX);
        assert_eq!(l.total_arcs, l.arcs.len());
        assert_eq!(l.arcs[0].start, 0);
        assert_eq!(l.arcs.last().unwrap().end, RING_SPAN);
        for w in l.arcs.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous");
            assert_ne!(w[0].owner, w[1].owner, "merged");
        }
        assert_eq!(l.owned.iter().sum::<u64>(), RING_SPAN);
        for key in 0..2000u32 {
            let h = point(&key.to_be_bytes());
            let arc = l
                .arcs
                .iter()
                .find(|a| a.start <= u64::from(h) && u64::from(h) < a.end)
                .unwrap();
            assert_eq!(Some(arc.owner), r.lookup(h), "key {key}");
        }
        // Both ends of the space: 0 and u32::MAX go where lookup sends them.
        assert_eq!(Some(l.arcs[0].owner), r.lookup(0));
        assert_eq!(Some(l.arcs.last().unwrap().owner), r.lookup(u32::MAX));
    }

    #[test]
    fn one_member_owns_one_arc_of_everything() {
        let r = ring(&["solo"], 150);
        let l = layout(&r, 10);
        assert_eq!(
            l.arcs,
            vec![RingArc {
                start: 0,
                end: RING_SPAN,
                owner: 0
            }]
        );
        assert_eq!(l.owned, vec![RING_SPAN]);
    }

    #[test]
    fn an_empty_ring_has_no_arcs() {
        let l = layout(&Ring::default(), 10);
        assert!(l.arcs.is_empty());
        assert_eq!(l.total_arcs, 0);
    }

    #[test]
    fn the_cap_keeps_the_first_arcs_and_the_whole_shares() {
        let r = ring(&["a", "b", "c", "d"], 100);
        let all = layout(&r, usize::MAX);
        let capped = layout(&r, 7);
        assert_eq!(capped.arcs, all.arcs[..7]);
        assert_eq!(capped.total_arcs, all.total_arcs);
        assert_eq!(capped.owned, all.owned);
    }

    #[test]
    fn a_hundred_upstreams_of_150_points_fit_under_the_cap() {
        let ids: Vec<String> = (0..100).map(|i| format!("10.0.0.{i}:80")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let r = ring(&refs, 150);
        let l = layout(&r, MAX_RING_ARCS);
        assert!(l.total_arcs <= MAX_RING_ARCS, "{}", l.total_arcs);
        assert_eq!(l.total_arcs, l.arcs.len());
    }
}
