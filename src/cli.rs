//! What the commands print, kept apart from argument parsing so it can be tested:
//! `check`'s summary and `route`'s lines here, the admin API client side of `cluster`
//! and `route --live` in [`remote`], and `config dump` in [`dump`].

pub mod dump;
pub mod remote;

use std::fmt::Write as _;

pub use remote::{AdminAddr, Remote, RemoteArgs};

use crate::config::{bounds, Config, Pool};
use crate::proxy::snapshot::pool_ring;
use crate::ring;

/// A human summary of a valid config: pools, upstreams and their share of the ring.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    let _ = writeln!(
        out,
        "node {} (data_dir {})",
        config.node.id,
        config.node.data_dir.display()
    );
    let _ = writeln!(out, "listeners: {}", listeners.join(", "));
    if let Some(admin) = &config.admin {
        let _ = writeln!(out, "admin: {}", admin.address);
    }
    let mut points = 0;
    for pool in &config.pools {
        points += pool_summary(&mut out, pool);
    }
    let _ = writeln!(
        out,
        "ring points, all pools: {points} of at most {} ({})",
        bounds::MAX_TOTAL_POINTS,
        megabytes(points)
    );
    out
}

/// The memory `points` ring points take once built.
fn megabytes(points: u64) -> String {
    let bytes = points * bounds::BYTES_PER_POINT;
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Writes one pool's lines; returns the points of its ring.
fn pool_summary(out: &mut String, pool: &Pool) -> u64 {
    let hosts: Vec<String> = pool.hosts.iter().map(|h| h.to_string()).collect();
    let _ = writeln!(
        out,
        "pool {}: hosts [{}], path_prefix {}, hash_key {}, on_missing_key {}, vnodes {}, max_attempts {}",
        pool.name,
        hosts.join(", "),
        pool.path_prefix,
        pool.hash_key,
        pool.on_missing_key,
        pool.vnodes,
        pool.max_attempts
    );
    let ring = pool_ring(pool);
    let points = ring.points_per_member();
    let total = ring.len().max(1) as f64;
    for (u, n) in pool.upstreams.iter().zip(points) {
        let _ = writeln!(
            out,
            "  upstream {:<24} address {:<24} weight {:<3} ring points {:>6} ({:.1}%)",
            u.id,
            u.address.to_string(),
            u.weight,
            n,
            n as f64 * 100.0 / total
        );
    }
    let points = ring.len() as u64;
    let weight: u64 = pool.upstreams.iter().map(|u| u64::from(u.weight)).sum();
    let _ = writeln!(
        out,
        "  ring points {points} of at most {} ({}), weight {weight} of at most {}",
        bounds::MAX_POINTS_PER_POOL,
        megabytes(points),
        bounds::MAX_POOL_WEIGHT
    );
    points
}

/// `KEY<TAB>UPSTREAM_ID` lines for `keys` on the named pool's ring (or the only pool).
pub fn route(config: &Config, pool: Option<&str>, keys: &[String]) -> Result<String, String> {
    let pool = pick_pool(config, pool)?;
    let ring = pool_ring(pool);
    let mut out = String::new();
    for key in keys {
        let id = ring
            .lookup(ring::point(key.as_bytes()))
            .map(|i| pool.upstreams[i].id.as_str())
            .unwrap_or("-");
        let _ = writeln!(out, "{key}\t{id}");
    }
    Ok(out)
}

fn pick_pool<'c>(config: &'c Config, name: Option<&str>) -> Result<&'c Pool, String> {
    let names = || {
        let n: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        n.join(", ")
    };
    match name {
        Some(name) => config
            .pools
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no pool named {name:?}; pools: {}", names())),
        None if config.pools.len() == 1 => Ok(&config.pools[0]),
        None => Err(format!(
            "several pools; choose one with --pool ({})",
            names()
        )),
    }
}

/// The pool `route --live` asks about: the one named, or the file's only pool.
pub fn live_pool(config: Option<&Config>, name: Option<&str>) -> Result<String, String> {
    match (name, config) {
        (Some(n), _) => Ok(n.to_owned()),
        (None, Some(c)) => pick_pool(c, None).map(|p| p.name.clone()),
        (None, None) => Err("give --pool NAME".into()),
    }
}

/// Percent-encoding for a path segment or query component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
