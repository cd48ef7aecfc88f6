//! What the `check` and `route` commands print, kept apart from argument parsing so it
//! can be tested.

use std::fmt::Write as _;

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

/// A running instance's admin API, as the `cluster` and `route --live` commands reach it.
pub struct Remote {
    pub addr: std::net::SocketAddr,
    /// Bearer token for changes.
    pub token: Option<String>,
}

impl Remote {
    /// Where to reach the instance: `--admin` or the file's `admin.address`, and the
    /// token from `--token-file` or the file's `admin.token_file`.
    pub fn from_args(
        config: Option<&Config>,
        admin: Option<std::net::SocketAddr>,
        token_file: Option<&std::path::Path>,
    ) -> Result<Remote, String> {
        let file_admin = config.and_then(|c| c.admin.as_ref());
        let addr = admin
            .or(file_admin.map(|a| a.address))
            .ok_or("no admin address: give --admin ADDR or a config file with an admin section")?;
        let token_file = token_file.or(file_admin.and_then(|a| a.token_file.as_deref()));
        let token = token_file.map(crate::control::read_token).transpose()?;
        Ok(Remote { addr, token })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: String,
    ) -> Result<serde_json::Value, String> {
        let mut headers = Vec::new();
        if method != http::Method::GET {
            let token = self
                .token
                .as_deref()
                .ok_or("changes need the admin token: give --token-file or a config file with admin.token_file")?;
            headers.push(crate::admin::client::bearer(token)?);
        }
        let (parts, bytes) =
            crate::admin::client::call(self.addr, method, path, &headers, body.into()).await?;
        let text = String::from_utf8_lossy(&bytes);
        if !parts.status.is_success() {
            return Err(format!(
                "{} answered {}: {}",
                self.addr,
                parts.status,
                text.trim()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: the answer is not JSON ({e}): {}",
                self.addr,
                text.trim()
            )
        })
    }

    /// `GET /api/cluster`, pretty-printed.
    pub async fn status(&self) -> Result<String, String> {
        let v = self
            .call(http::Method::GET, "/api/cluster", String::new())
            .await?;
        Ok(format!("{v:#}\n"))
    }

    /// Adds a member; answers once it is a voter.
    pub async fn add_node(&self, name: &str, peer_address: &str) -> Result<String, String> {
        let body = serde_json::json!({ "address": peer_address }).to_string();
        let path = format!("/api/cluster/nodes/{}", encode(name));
        let v = self.call(http::Method::PUT, &path, body).await?;
        Ok(format!("{v:#}\n"))
    }

    /// Removes a member.
    pub async fn remove_node(&self, name: &str) -> Result<String, String> {
        let path = format!("/api/cluster/nodes/{}", encode(name));
        let v = self
            .call(http::Method::DELETE, &path, String::new())
            .await?;
        Ok(format!("{v:#}\n"))
    }

    /// `KEY<TAB>UPSTREAM_ID` lines as the running instance routes them now (from the
    /// cluster's committed state, not the file).
    pub async fn route(&self, pool: &str, keys: &[String]) -> Result<String, String> {
        let mut out = String::new();
        for key in keys {
            let path = format!("/api/route?pool={}&key={}", encode(pool), encode(key));
            let v = self.call(http::Method::GET, &path, String::new()).await?;
            let id = v["upstream"].as_str().unwrap_or("-");
            let _ = writeln!(out, "{key}\t{id}");
        }
        Ok(out)
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
