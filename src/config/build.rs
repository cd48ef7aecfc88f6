//! Turns the raw shape into a typed [`Config`], collecting every error with the path
//! of the field, the rule and the value found.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use super::bounds::{self, valid_node_id, MAX_NODE_ID_BYTES};
use super::raw::{
    RawAdmin, RawCluster, RawConfig, RawHeaderWork, RawLimits, RawListener, RawNode, RawPool,
    RawUpstream,
};
use super::*;
use crate::balance::{HashKey, HostPattern, MissingKey};

mod access_log;
mod cache;
mod discover;
mod health;
mod http2;
mod retry;
mod slow_start;
mod tls;

/// One rule a field broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `pools[0].upstreams[2].weight`.
    pub path: String,
    /// The rule and the value found, e.g. `must be at least 1, got 0`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects errors while fields are read.
#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

pub(super) fn build(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut c = Checker::default();
    c.unknown("", &raw.unknown);
    let node = c.node(raw.node);
    let listeners = c.listeners(raw.listeners);
    let admin = raw.admin.and_then(|a| c.admin(a));
    let cluster = raw
        .cluster
        .and_then(|cl| c.cluster(cl, node.as_ref().map(|n| n.id.as_str())));
    let limits = raw.limits.map(|l| c.limits(l)).unwrap_or_default();
    let pools = c.pools(raw.pools);
    let access_log = c.access_log(raw.access_log);
    if c.errors.is_empty() {
        Ok(Config {
            node: node.expect("no errors means node was built"),
            listeners,
            admin,
            cluster,
            limits,
            pools,
            access_log,
        })
    } else {
        Err(c.errors)
    }
}

/// Parses an upstream `host:port` (`[v6]:port` for IPv6 literals).
pub fn parse_upstream_addr(s: &str) -> Result<UpstreamAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("port must be a number from 1 to 65535, got {s:?}"));
        }
        return Ok(UpstreamAddr {
            host: sa.ip().to_string(),
            port: sa.port(),
            ip: Some(sa.ip()),
        });
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("must be host:port, got {s:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port must be a number from 1 to 65535, got {s:?}"))?;
    if port == 0 {
        return Err(format!("port must be a number from 1 to 65535, got {s:?}"));
    }
    if !is_dns_name(host) {
        return Err(format!(
            "host must be an IP address or a DNS name, got {s:?}"
        ));
    }
    let ip = host.parse::<IpAddr>().ok();
    Ok(UpstreamAddr {
        host: host.to_ascii_lowercase(),
        port,
        ip,
    })
}

fn is_dns_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)
}

/// Bytes `pools` take as one cluster change, at most (see [`bounds::MAX_FILE_CHANGE_BYTES`]).
fn change_bytes(pools: &[Pool]) -> usize {
    let upstreams = |p: &Pool| -> usize {
        p.upstreams
            .iter()
            .map(|u| {
                bounds::upstream_change_bytes(&p.name, &u.id, &u.address.to_string(), u.weight)
            })
            .sum()
    };
    bounds::CHANGE_ENVELOPE_BYTES
        + pools
            .iter()
            .map(|p| bounds::pool_change_bytes(&p.name) + upstreams(p))
            .sum::<usize>()
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// How a YAML value reads in an error message.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

impl Checker {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, parent: &str, unknown: &super::raw::Unknown) {
        for key in unknown.keys() {
            self.error(join(parent, key), "unknown field");
        }
    }

    fn required<'v>(&mut self, path: &str, v: &'v Option<Value>) -> Option<&'v Value> {
        if v.is_none() {
            self.error(path, "is required");
        }
        v.as_ref()
    }

    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.error(path, "must not be empty");
                None
            }
            other => {
                self.error(path, format!("must be a string, got {}", shown(other)));
                None
            }
        }
    }

    fn int(&mut self, path: &str, v: &Value, min: u64, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n,
            other => {
                self.error(
                    path,
                    format!("must be a whole number, got {}", shown(other)),
                );
                return None;
            }
        };
        match (n.as_u64(), n.as_i64()) {
            (Some(x), _) if x < min => self.error(path, format!("must be at least {min}, got {x}")),
            (Some(x), _) if x > max => self.error(path, format!("must be at most {max}, got {x}")),
            (Some(x), _) => return Some(x),
            (None, Some(x)) => self.error(path, format!("must be at least {min}, got {x}")),
            (None, None) => self.error(path, format!("must be a whole number, got {n}")),
        }
        None
    }

    fn opt_bool(&mut self, path: &str, v: &Option<Value>, default: bool) -> bool {
        match v {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(path, format!("must be true or false, got {}", shown(other)));
                default
            }
        }
    }

    fn opt_int(&mut self, path: &str, v: &Option<Value>, min: u64, max: u64, default: u64) -> u64 {
        match v {
            Some(v) => self.int(path, v, min, max).unwrap_or(default),
            None => default,
        }
    }

    fn millis(&mut self, path: &str, v: &Option<Value>, default: Duration) -> Duration {
        // An hour: anything longer is a typo in a proxy timeout.
        const MAX_TIMEOUT_MS: u64 = 3_600_000;
        let ms = self.opt_int(path, v, 1, MAX_TIMEOUT_MS, default.as_millis() as u64);
        Duration::from_millis(ms)
    }

    fn socket_addr(&mut self, path: &str, v: &Value) -> Option<SocketAddr> {
        let s = self.string(path, v)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    path,
                    format!("must be an IP address and port such as 127.0.0.1:8080, got {s:?}"),
                );
                None
            }
        }
    }

    fn node(&mut self, raw: Option<RawNode>) -> Option<Node> {
        let Some(raw) = raw else {
            self.error("node", "is required (node.id and node.data_dir)");
            return None;
        };
        self.unknown("node", &raw.unknown);
        let id = self
            .required("node.id", &raw.id)
            .and_then(|v| self.string("node.id", v));
        if let Some(id) = &id {
            if !valid_node_id(id) {
                self.error(
                    "node.id",
                    format!("must be 1 to {MAX_NODE_ID_BYTES} letters, digits, '-', '_' or '.', got {id:?}"),
                );
            }
        }
        let dir = self
            .required("node.data_dir", &raw.data_dir)
            .and_then(|v| self.string("node.data_dir", v));
        Some(Node {
            id: id?,
            data_dir: PathBuf::from(dir?),
        })
    }

    fn listeners(&mut self, raw: Option<Vec<RawListener>>) -> Vec<Listener> {
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            self.error("listeners", "must list at least one listener");
        }
        let mut out: Vec<Listener> = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let path = format!("listeners[{i}]");
            self.unknown(&path, &l.unknown);
            let tls = l
                .tls
                .and_then(|t| self.listener_tls(&join(&path, "tls"), t));
            let field = join(&path, "address");
            let Some(address) = self
                .required(&field, &l.address)
                .and_then(|v| self.socket_addr(&field, v))
            else {
                continue;
            };
            if out.iter().any(|o| o.address == address) {
                self.error(&field, format!("{address} is listed twice"));
            }
            let headers = self.header_work(&join(&path, "headers"), l.headers);
            out.push(Listener {
                address,
                tls,
                headers,
            });
        }
        out
    }

    fn header_work(&mut self, path: &str, raw: Option<RawHeaderWork>) -> HeaderWork {
        let on = HeaderWork::default();
        let Some(raw) = raw else {
            return on;
        };
        self.unknown(path, &raw.unknown);
        HeaderWork {
            forwarded: self.opt_bool(&join(path, "forwarded"), &raw.forwarded, on.forwarded),
            via: self.opt_bool(&join(path, "via"), &raw.via, on.via),
            request_id: self.opt_bool(&join(path, "request_id"), &raw.request_id, on.request_id),
            traceparent: self.opt_bool(
                &join(path, "traceparent"),
                &raw.traceparent,
                on.traceparent,
            ),
        }
    }

    fn admin(&mut self, raw: RawAdmin) -> Option<Admin> {
        self.unknown("admin", &raw.unknown);
        let token_file = raw
            .token_file
            .as_ref()
            .and_then(|v| self.string("admin.token_file", v))
            .map(PathBuf::from);
        let tls = raw.tls.and_then(|t| self.cert_pair("admin.tls", t));
        let address = self
            .required("admin.address", &raw.address)
            .and_then(|v| self.socket_addr("admin.address", v))?;
        Some(Admin {
            address,
            token_file,
            tls,
        })
    }

    fn cluster(&mut self, raw: RawCluster, node_id: Option<&str>) -> Option<Cluster> {
        self.unknown("cluster", &raw.unknown);
        let address = self
            .required("cluster.address", &raw.address)
            .and_then(|v| self.socket_addr("cluster.address", v));
        let peers = self.peers(raw.peers.unwrap_or_default(), node_id);
        let heartbeat = self.millis("cluster.heartbeat_ms", &raw.heartbeat_ms, DEFAULT_HEARTBEAT);
        let election_timeout = self.millis(
            "cluster.election_timeout_ms",
            &raw.election_timeout_ms,
            DEFAULT_ELECTION_TIMEOUT,
        );
        let join = self.opt_bool("cluster.join", &raw.join, false);
        let compact_threshold = self.opt_int(
            "cluster.compact_threshold",
            &raw.compact_threshold,
            MIN_COMPACT_THRESHOLD,
            MAX_COMPACT_THRESHOLD,
            DEFAULT_COMPACT_THRESHOLD,
        );
        if election_timeout < heartbeat * MIN_ELECTION_HEARTBEATS {
            self.error(
                "cluster.election_timeout_ms",
                format!(
                    "must be at least {MIN_ELECTION_HEARTBEATS} x heartbeat_ms ({} ms), got {} ms",
                    (heartbeat * MIN_ELECTION_HEARTBEATS).as_millis(),
                    election_timeout.as_millis()
                ),
            );
        }
        let has_tls = raw.tls.is_some();
        let tls = raw.tls.and_then(|t| self.cluster_tls(t));
        let secret_file = raw
            .secret_file
            .as_ref()
            .and_then(|v| self.string("cluster.secret_file", v))
            .map(PathBuf::from);
        let insecure_plaintext =
            self.opt_bool("cluster.insecure_plaintext", &raw.insecure_plaintext, false);
        if has_tls && secret_file.is_some() {
            self.error(
                "cluster.secret_file",
                "cluster.tls already authenticates peers; set one of tls and secret_file",
            );
        }
        let members = peers.as_ref().map_or(0, |p| p.len());
        if members > 1 && !has_tls && secret_file.is_none() && !insecure_plaintext {
            self.error(
                "cluster",
                format!(
                    "a cluster of {members} members needs peer authentication: set cluster.tls \
                     or cluster.secret_file (or insecure_plaintext: true to run without any)"
                ),
            );
        }
        Some(Cluster {
            address: address?,
            peers: peers?,
            heartbeat,
            election_timeout,
            join,
            compact_threshold,
            tls,
            secret_file,
            insecure_plaintext,
        })
    }

    fn peers(
        &mut self,
        raw: std::collections::BTreeMap<String, Value>,
        node_id: Option<&str>,
    ) -> Option<std::collections::BTreeMap<String, SocketAddr>> {
        if raw.is_empty() {
            self.error("cluster.peers", "must list every voter, this node included");
            return None;
        }
        let mut out = std::collections::BTreeMap::new();
        let mut ok = true;
        for (id, v) in &raw {
            let path = format!("cluster.peers.{id}");
            if !valid_node_id(id) {
                self.error(
                    &path,
                    format!("node id must be 1 to {MAX_NODE_ID_BYTES} letters, digits, '-', '_' or '.', got {id:?}"),
                );
                ok = false;
            }
            match self.socket_addr(&path, v) {
                Some(a) if out.values().any(|o| *o == a) => {
                    self.error(&path, format!("{a} is already the address of another peer"));
                    ok = false;
                }
                Some(a) => {
                    out.insert(id.clone(), a);
                }
                None => ok = false,
            }
        }
        if let Some(me) = node_id.filter(|me| !raw.contains_key(*me)) {
            self.error("cluster.peers", format!("must include this node ({me})"));
            ok = false;
        }
        ok.then_some(out)
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        // Bounds that keep a typo from turning a limit off: a million connections
        // exhausts file descriptors long before; hyper needs at least 8 KiB of read
        // buffer; a head beyond 1 MiB is an attack, not a request.
        const MAX_CONNECTIONS_LIMIT: u64 = 1_000_000;
        const MIN_HEADER_BYTES: u64 = 8 * 1024;
        const MAX_HEADER_BYTES: u64 = 1024 * 1024;
        self.unknown("limits", &raw.unknown);
        let d = Limits::default();
        Limits {
            max_connections: self.opt_int(
                "limits.max_connections",
                &raw.max_connections,
                1,
                MAX_CONNECTIONS_LIMIT,
                d.max_connections as u64,
            ) as usize,
            max_header_bytes: self.opt_int(
                "limits.max_header_bytes",
                &raw.max_header_bytes,
                MIN_HEADER_BYTES,
                MAX_HEADER_BYTES,
                d.max_header_bytes as u64,
            ) as usize,
            header_read_timeout: self.millis(
                "limits.header_read_timeout_ms",
                &raw.header_read_timeout_ms,
                d.header_read_timeout,
            ),
            keep_alive_timeout: self.millis(
                "limits.keep_alive_timeout_ms",
                &raw.keep_alive_timeout_ms,
                d.keep_alive_timeout,
            ),
            request_body_timeout: self.millis(
                "limits.request_body_timeout_ms",
                &raw.request_body_timeout_ms,
                d.request_body_timeout,
            ),
            shutdown_grace: self.millis(
                "limits.shutdown_grace_ms",
                &raw.shutdown_grace_ms,
                d.shutdown_grace,
            ),
        }
    }

    fn pools(&mut self, raw: Option<Vec<RawPool>>) -> Vec<Pool> {
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            self.error("pools", "must list at least one pool");
        }
        if let Err(why) = bounds::check_pool_count(raw.len()) {
            self.error("pools", why);
            return Vec::new();
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut routes: HashMap<(Vec<HostPattern>, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let path = format!("pools[{i}]");
            let Some(pool) = self.pool(&path, p) else {
                continue;
            };
            if let Some(first) = names.insert(pool.name.clone(), i) {
                self.error(
                    join(&path, "name"),
                    format!(
                        "pool name {:?} is already used by pools[{first}]",
                        pool.name
                    ),
                );
            }
            let mut hosts = pool.hosts.clone();
            hosts.sort_by_key(|h| h.to_string());
            if let Some(first) = routes.insert((hosts, pool.path_prefix.clone()), i) {
                self.error(&path, format!("same hosts and path_prefix as pools[{first}]: requests could never reach one of them"));
            }
            out.push(pool);
        }
        let weight: u64 = out
            .iter()
            .flat_map(|p| &p.upstreams)
            .map(|u| u64::from(u.weight))
            .sum();
        if let Err(why) = bounds::check_total_weight(weight) {
            self.error("pools", why);
        }
        if let Err(why) = bounds::check_file_change_bytes(change_bytes(&out)) {
            self.error("pools", why);
        }
        out
    }

    fn pool(&mut self, path: &str, raw: RawPool) -> Option<Pool> {
        self.unknown(path, &raw.unknown);
        let name_path = join(path, "name");
        let name = self
            .required(&name_path, &raw.name)
            .and_then(|v| self.string(&name_path, v))
            .and_then(|n| self.name(&name_path, n, ""));
        let hosts = self.hosts(path, raw.hosts.as_deref());
        let path_prefix = self.path_prefix(path, &raw.path_prefix);
        let hash_key = self.hash_key(path, &raw.hash_key);
        let on_missing_key = self.on_missing_key(path, &raw.on_missing_key);
        let vnodes = self.opt_int(
            &join(path, "vnodes"),
            &raw.vnodes,
            1,
            bounds::MAX_VNODES.into(),
            DEFAULT_VNODES as u64,
        ) as u32;
        let max_attempts = self.opt_int(
            &join(path, "max_attempts"),
            &raw.max_attempts,
            1,
            MAX_ATTEMPTS_LIMIT as u64,
            DEFAULT_MAX_ATTEMPTS as u64,
        ) as u32;
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: self.millis(
                &join(path, "connect_timeout_ms"),
                &raw.connect_timeout_ms,
                d.connect,
            ),
            response_header: self.millis(
                &join(path, "response_header_timeout_ms"),
                &raw.response_header_timeout_ms,
                d.response_header,
            ),
            idle: self.millis(&join(path, "idle_timeout_ms"), &raw.idle_timeout_ms, d.idle),
        };
        // Idle connections beyond this are sockets held for nothing.
        const MAX_IDLE_LIMIT: u64 = 10_000;
        let max_idle_per_upstream = self.opt_int(
            &join(path, "max_idle_per_upstream"),
            &raw.max_idle_per_upstream,
            0,
            MAX_IDLE_LIMIT,
            DEFAULT_MAX_IDLE_PER_UPSTREAM as u64,
        ) as usize;
        let (upstreams, discover) = match (raw.upstreams, raw.discover) {
            (Some(_), Some(_)) => {
                self.error(path, "give either upstreams or discover, not both");
                (Vec::new(), None)
            }
            (None, Some(d)) => (Vec::new(), self.discover(path, d, name.as_deref())),
            (upstreams, None) => (self.upstreams(path, upstreams), None),
        };
        let tls = match raw.tls {
            Some(t) => Some(self.pool_tls(&join(path, "tls"), t)?),
            None => None,
        };
        let protocol = self.protocol(path, &raw.protocol, tls.is_some());
        let http2 = self.http2(path, raw.http2, protocol);
        let retry = self.retry(path, raw.retry);
        let upstream_limits = self.upstream_limits(path, raw.upstream_limits);
        let health = self.health(path, raw.health, protocol);
        if let Err(why) = health.breaker.check() {
            self.error(format!("{path}.health.breaker"), why);
        }
        let hash_balance_factor = self.balance_factor(path, &raw.hash_balance_factor);
        let slow_start = self.slow_start(path, &raw.slow_start_ms, &raw.slow_start_steps);
        let cache = self.cache(path, raw.cache);
        Some(Pool {
            name: name?,
            hosts: hosts?,
            path_prefix: path_prefix?,
            hash_key: hash_key?,
            on_missing_key: on_missing_key?,
            vnodes,
            max_attempts,
            timeouts,
            max_idle_per_upstream,
            upstreams,
            tls,
            protocol: protocol?,
            http2,
            retry,
            upstream_limits,
            health,
            hash_balance_factor,
            slow_start,
            cache,
            discover,
        })
    }

    fn hosts(&mut self, path: &str, raw: Option<&[Value]>) -> Option<Vec<HostPattern>> {
        let Some(raw) = raw else {
            return Some(vec![HostPattern::Any]);
        };
        if raw.is_empty() {
            self.error(
                join(path, "hosts"),
                "must list at least one host (use [\"*\"] for any)",
            );
            return None;
        }
        let mut ok = true;
        let mut out = Vec::with_capacity(raw.len());
        for (i, v) in raw.iter().enumerate() {
            let p = format!("{path}.hosts[{i}]");
            match self.string(&p, v).map(|s| HostPattern::parse(&s)) {
                Some(Ok(h)) => out.push(h),
                Some(Err(why)) => {
                    self.error(&p, why);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn path_prefix(&mut self, path: &str, raw: &Option<Value>) -> Option<String> {
        let Some(v) = raw else {
            return Some("/".into());
        };
        let p = join(path, "path_prefix");
        let s = self.string(&p, v)?;
        if !s.starts_with('/') {
            self.error(p, format!("must start with '/', got {s:?}"));
            return None;
        }
        Some(s)
    }

    fn hash_key(&mut self, path: &str, raw: &Option<Value>) -> Option<HashKey> {
        let Some(v) = raw else {
            return Some(HashKey::default());
        };
        let p = join(path, "hash_key");
        let s = self.string(&p, v)?;
        HashKey::parse(&s).map_err(|why| self.error(&p, why)).ok()
    }

    fn on_missing_key(&mut self, path: &str, raw: &Option<Value>) -> Option<MissingKey> {
        let Some(v) = raw else {
            return Some(MissingKey::default());
        };
        let p = join(path, "on_missing_key");
        let s = self.string(&p, v)?;
        MissingKey::parse(&s)
            .map_err(|why| self.error(&p, why))
            .ok()
    }

    fn upstreams(&mut self, path: &str, raw: Option<Vec<RawUpstream>>) -> Vec<Upstream> {
        let list_path = join(path, "upstreams");
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            self.error(&list_path, "must list at least one upstream");
        }
        if let Err(why) = bounds::check_upstream_count(raw.len()) {
            self.error(&list_path, why);
            return Vec::new();
        }
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, u) in raw.into_iter().enumerate() {
            let p = format!("{list_path}[{i}]");
            let Some(up) = self.upstream(&p, u) else {
                continue;
            };
            if let Some(first) = ids.insert(up.id.clone(), i) {
                self.error(
                    join(&p, "id"),
                    format!(
                        "upstream id {:?} is already used by upstreams[{first}] of this pool",
                        up.id
                    ),
                );
            }
            out.push(up);
        }
        let weight: u64 = out.iter().map(|u| u64::from(u.weight)).sum();
        if let Err(why) = bounds::check_pool_weight(weight) {
            self.error(&list_path, why);
        }
        out
    }

    fn upstream(&mut self, path: &str, raw: RawUpstream) -> Option<Upstream> {
        self.unknown(path, &raw.unknown);
        let ap = join(path, "address");
        let address = self
            .required(&ap, &raw.address)
            .and_then(|v| self.string(&ap, v));
        let address = address.and_then(|s| {
            parse_upstream_addr(&s)
                .map_err(|why| self.error(&ap, why))
                .ok()
        });
        let id_path = join(path, "id");
        let id = match &raw.id {
            Some(v) => self
                .string(&id_path, v)
                .and_then(|id| self.name(&id_path, id, "")),
            None => address.as_ref().and_then(|a| {
                self.name(
                    &id_path,
                    a.to_string(),
                    " (the id defaults to the address: give a shorter id)",
                )
            }),
        };
        let weight_path = join(path, "weight");
        let weight = match &raw.weight {
            Some(v) => self.int(&weight_path, v, 1, bounds::MAX_WEIGHT.into())? as u32,
            None => 1,
        };
        Some(Upstream {
            id: id?,
            address: address?,
            weight,
        })
    }

    /// A pool name or upstream id that the cluster will take (see [`bounds::check_name`]).
    fn name(&mut self, path: &str, name: String, hint: &str) -> Option<String> {
        match bounds::check_name(&name) {
            Ok(()) => Some(name),
            Err(why) => {
                self.error(path, format!("{why}{hint}"));
                None
            }
        }
    }
}
