//! `ringway config dump`: the configuration in force as YAML, every default filled in,
//! in the file's own field names, so that `ringway check` accepts it again and it
//! loads to the same [`Config`].
//!
//! Every struct is taken apart by a pattern that names all its fields: a field added
//! to the config does not compile here until the dump writes it.

use std::path::Path;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::config::access_log::{AccessFormat, AccessLog};
use crate::config::discover::{Discover, RecordType};
use crate::config::health::{Active, CheckKind, FailureClasses, Health, Passive, Policy};
use crate::config::{
    Admin, AtLimit, CertPair, Cluster, ClusterTls, Config, HeaderWork, Http2Settings, Limits,
    Listener, ListenerTls, Node, Pool, PoolTls, RetryPolicy, Timeouts, Upstream, UpstreamLimits,
};

/// The YAML text of `config`, with a first comment line naming `source`.
pub fn dump(config: &Config, source: &Path) -> Result<String, String> {
    let yaml = serde_yaml::to_string(&Value::Mapping(config_map(config)))
        .map_err(|e| format!("cannot write the config as YAML: {e}"))?;
    Ok(format!(
        "# The configuration in force from {}, every default filled in.\n{yaml}",
        source.display()
    ))
}

/// Builds a mapping from `(key, value)` pairs, leaving out the `None`s.
fn map<const N: usize>(fields: [(&str, Option<Value>); N]) -> Mapping {
    let mut m = Mapping::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(Value::from(k), v);
        }
    }
    m
}

fn s(v: impl ToString) -> Option<Value> {
    Some(Value::String(v.to_string()))
}

fn n(v: impl Into<u64>) -> Option<Value> {
    Some(Value::from(v.into()))
}

fn size(v: usize) -> Option<Value> {
    Some(Value::from(v as u64))
}

fn b(v: bool) -> Option<Value> {
    Some(Value::Bool(v))
}

fn ms(d: Duration) -> Option<Value> {
    Some(Value::from(d.as_millis() as u64))
}

fn path(p: &Path) -> Option<Value> {
    s(p.to_string_lossy())
}

fn mapping(m: Mapping) -> Option<Value> {
    Some(Value::Mapping(m))
}

fn list(items: impl IntoIterator<Item = Value>) -> Option<Value> {
    Some(Value::Sequence(items.into_iter().collect()))
}

fn config_map(config: &Config) -> Mapping {
    let Config {
        node,
        listeners,
        admin,
        cluster,
        limits,
        pools,
        access_log,
    } = config;
    map([
        ("node", mapping(node_map(node))),
        (
            "listeners",
            list(listeners.iter().map(|l| Value::Mapping(listener_map(l)))),
        ),
        (
            "admin",
            admin.as_ref().map(|a| Value::Mapping(admin_map(a))),
        ),
        (
            "cluster",
            cluster.as_ref().map(|c| Value::Mapping(cluster_map(c))),
        ),
        ("limits", mapping(limits_map(limits))),
        ("access_log", mapping(access_log_map(access_log))),
        (
            "pools",
            list(pools.iter().map(|p| Value::Mapping(pool_map(p)))),
        ),
    ])
}

fn access_log_map(log: &AccessLog) -> Mapping {
    let format = match log.format {
        AccessFormat::Text => "text",
        AccessFormat::Json => "json",
        AccessFormat::Combined => "combined",
    };
    // The combined format's fields are fixed: listing them is refused.
    let fields = (log.format != AccessFormat::Combined)
        .then(|| Value::Sequence(log.fields.iter().map(|f| Value::from(f.name())).collect()));
    map([
        ("enabled", Some(Value::Bool(log.enabled))),
        ("format", s(format)),
        ("fields", fields),
    ])
}

fn node_map(node: &Node) -> Mapping {
    let Node { id, data_dir } = node;
    map([("id", s(id)), ("data_dir", path(data_dir))])
}

fn listener_map(listener: &Listener) -> Mapping {
    let Listener {
        address,
        tls,
        headers,
    } = listener;
    map([
        ("address", s(address)),
        ("tls", tls.as_ref().map(|t| Value::Mapping(listener_tls(t)))),
        ("headers", mapping(header_work(headers))),
    ])
}

fn listener_tls(tls: &ListenerTls) -> Mapping {
    let ListenerTls {
        certificates,
        handshake_timeout,
    } = tls;
    map([
        (
            "certificates",
            list(certificates.iter().map(|c| Value::Mapping(cert_pair(c)))),
        ),
        ("handshake_timeout_ms", ms(*handshake_timeout)),
    ])
}

fn cert_pair(pair: &CertPair) -> Mapping {
    let CertPair { cert, key } = pair;
    map([("cert", path(cert)), ("key", path(key))])
}

fn header_work(headers: &HeaderWork) -> Mapping {
    let HeaderWork {
        forwarded,
        via,
        request_id,
        traceparent,
    } = *headers;
    map([
        ("forwarded", b(forwarded)),
        ("via", b(via)),
        ("request_id", b(request_id)),
        ("traceparent", b(traceparent)),
    ])
}

fn admin_map(admin: &Admin) -> Mapping {
    let Admin {
        address,
        token_file,
        tls,
    } = admin;
    map([
        ("address", s(address)),
        ("token_file", token_file.as_deref().and_then(path)),
        ("tls", tls.as_ref().map(|t| Value::Mapping(cert_pair(t)))),
    ])
}

fn cluster_map(cluster: &Cluster) -> Mapping {
    let Cluster {
        address,
        peers,
        heartbeat,
        election_timeout,
        join,
        compact_threshold,
        tls,
        secret_file,
        insecure_plaintext,
    } = cluster;
    let peers: Mapping = peers
        .iter()
        .map(|(id, addr)| (Value::from(id.as_str()), Value::from(addr.to_string())))
        .collect();
    map([
        ("address", s(address)),
        ("peers", mapping(peers)),
        ("heartbeat_ms", ms(*heartbeat)),
        ("election_timeout_ms", ms(*election_timeout)),
        ("join", b(*join)),
        ("compact_threshold", n(*compact_threshold)),
        ("tls", tls.as_ref().map(|t| Value::Mapping(cluster_tls(t)))),
        ("secret_file", secret_file.as_deref().and_then(path)),
        ("insecure_plaintext", b(*insecure_plaintext)),
    ])
}

fn cluster_tls(tls: &ClusterTls) -> Mapping {
    let ClusterTls { ca_file, identity } = tls;
    let CertPair { cert, key } = identity;
    map([
        ("ca_file", path(ca_file)),
        ("cert", path(cert)),
        ("key", path(key)),
    ])
}

fn limits_map(limits: &Limits) -> Mapping {
    let Limits {
        max_connections,
        max_header_bytes,
        header_read_timeout,
        keep_alive_timeout,
        request_body_timeout,
        shutdown_grace,
    } = limits;
    map([
        ("max_connections", size(*max_connections)),
        ("max_header_bytes", size(*max_header_bytes)),
        ("header_read_timeout_ms", ms(*header_read_timeout)),
        ("keep_alive_timeout_ms", ms(*keep_alive_timeout)),
        ("request_body_timeout_ms", ms(*request_body_timeout)),
        ("shutdown_grace_ms", ms(*shutdown_grace)),
    ])
}

fn pool_map(pool: &Pool) -> Mapping {
    let Pool {
        name,
        hosts,
        path_prefix,
        hash_key,
        on_missing_key,
        vnodes,
        max_attempts,
        timeouts,
        max_idle_per_upstream,
        upstreams,
        tls,
        protocol,
        http2,
        retry,
        upstream_limits,
        health,
        hash_balance_factor,
        slow_start,
        cache,
        discover,
    } = pool;
    let Timeouts {
        connect,
        response_header,
        idle,
    } = timeouts;
    map([
        ("name", s(name)),
        (
            "hosts",
            list(hosts.iter().map(|h| Value::from(h.to_string()))),
        ),
        ("path_prefix", s(path_prefix)),
        ("hash_key", s(hash_key)),
        ("on_missing_key", s(on_missing_key)),
        ("vnodes", n(*vnodes)),
        ("max_attempts", n(*max_attempts)),
        ("connect_timeout_ms", ms(*connect)),
        ("response_header_timeout_ms", ms(*response_header)),
        ("idle_timeout_ms", ms(*idle)),
        ("max_idle_per_upstream", size(*max_idle_per_upstream)),
        (
            "upstreams",
            discover
                .is_none()
                .then(|| list(upstreams.iter().map(|u| Value::Mapping(upstream_map(u)))))
                .flatten(),
        ),
        (
            "discover",
            discover.as_ref().map(|d| Value::Mapping(discover_map(d))),
        ),
        ("tls", tls.as_ref().map(|t| Value::Mapping(pool_tls(t)))),
        ("protocol", s(protocol)),
        // Only where it applies: the section is refused on an http1 pool.
        (
            "http2",
            protocol
                .may_use_h2()
                .then(|| mapping(http2_map(http2)))
                .flatten(),
        ),
        ("retry", mapping(retry_map(retry))),
        (
            "upstream_limits",
            upstream_limits
                .any()
                .then(|| upstream_limits_map(upstream_limits))
                .and_then(mapping),
        ),
        ("health", mapping(health_map(health))),
        ("hash_balance_factor", hash_balance_factor.and_then(n)),
        ("slow_start_ms", n(slow_start.duration_ms)),
        ("slow_start_steps", n(slow_start.steps)),
        ("cache", cache.as_ref().and_then(|c| mapping(cache_map(c)))),
    ])
}

fn cache_map(cache: &crate::config::CacheSettings) -> Mapping {
    let crate::config::CacheSettings {
        max_bytes,
        max_object_bytes,
        coalesce_timeout,
        key,
    } = cache;
    map([
        ("max_bytes", n(*max_bytes)),
        ("max_object_bytes", n(*max_object_bytes)),
        ("coalesce_timeout_ms", ms(*coalesce_timeout)),
        ("key", key.as_ref().and_then(s)),
    ])
}

fn discover_map(d: &Discover) -> Mapping {
    let Discover {
        dns,
        record,
        port,
        interval,
        timeout,
        resolver,
        max_remove_percent,
        hold_down,
        weight,
        id_prefix,
    } = d;
    let srv = *record == RecordType::Srv;
    map([
        ("dns", s(dns)),
        ("type", s(record.as_str())),
        ("port", port.and_then(n)),
        ("interval_ms", ms(*interval)),
        ("timeout_ms", ms(*timeout)),
        ("resolver", resolver.as_ref().and_then(s)),
        ("max_remove_percent", n(*max_remove_percent)),
        ("hold_down", n(*hold_down)),
        ("weight", (!srv).then_some(*weight).and_then(n)),
        ("id_prefix", (!srv).then_some(id_prefix).and_then(s)),
    ])
}

fn upstream_limits_map(limits: &UpstreamLimits) -> Mapping {
    let UpstreamLimits {
        max_inflight,
        cluster_max_inflight,
        max_connections,
        at_limit,
        queue_timeout,
    } = limits;
    let at_limit = match at_limit {
        AtLimit::Spill => "spill",
        AtLimit::Queue => "queue",
    };
    map([
        ("max_inflight", max_inflight.and_then(size)),
        ("cluster_max_inflight", cluster_max_inflight.and_then(size)),
        ("max_connections", max_connections.and_then(size)),
        ("at_limit", Some(Value::from(at_limit))),
        ("queue_timeout_ms", ms(*queue_timeout)),
    ])
}

fn retry_map(retry: &RetryPolicy) -> Mapping {
    let RetryPolicy {
        on,
        methods,
        backoff,
        max_backoff,
        budget_percent,
        budget_floor_per_s,
        max_body_bytes,
    } = retry;
    map([
        ("on", list(on.names().into_iter().map(Value::from))),
        (
            "methods",
            list(methods.iter().map(|m| Value::from(m.as_str()))),
        ),
        ("backoff_ms", ms(*backoff)),
        ("max_backoff_ms", ms(*max_backoff)),
        ("budget_percent", n(*budget_percent)),
        ("budget_floor_per_s", n(*budget_floor_per_s)),
        ("max_body_bytes", size(*max_body_bytes)),
    ])
}

fn http2_map(http2: &Http2Settings) -> Mapping {
    let Http2Settings {
        max_connections,
        max_streams,
        keepalive_interval,
        keepalive_timeout,
    } = http2;
    map([
        ("max_connections_per_upstream", size(*max_connections)),
        ("max_streams_per_connection", size(*max_streams)),
        ("keepalive_interval_ms", ms(*keepalive_interval)),
        ("keepalive_timeout_ms", ms(*keepalive_timeout)),
    ])
}

fn upstream_map(upstream: &Upstream) -> Mapping {
    let Upstream {
        id,
        address,
        weight,
    } = upstream;
    map([
        ("id", s(id)),
        ("address", s(address)),
        ("weight", n(*weight)),
    ])
}

fn pool_tls(tls: &PoolTls) -> Mapping {
    let PoolTls {
        ca_file,
        server_name,
        client_cert,
        insecure_skip_verify,
    } = tls;
    let (cert, key) = match client_cert {
        Some(CertPair { cert, key }) => (path(cert), path(key)),
        None => (None, None),
    };
    map([
        ("ca_file", ca_file.as_deref().and_then(path)),
        ("server_name", server_name.as_ref().and_then(s)),
        ("client_cert", cert),
        ("client_key", key),
        ("insecure_skip_verify", b(*insecure_skip_verify)),
    ])
}

fn health_map(health: &Health) -> Mapping {
    let Health {
        passive,
        active,
        breaker,
        probe_interval,
    } = health;
    let mut breaker = breaker_map(breaker);
    breaker.insert(
        Value::from("probe_interval_ms"),
        Value::from(probe_interval.as_millis() as u64),
    );
    map([
        ("passive", mapping(passive_map(passive))),
        (
            "active",
            active.as_ref().map(|a| Value::Mapping(active_map(a))),
        ),
        ("breaker", mapping(breaker)),
    ])
}

fn passive_map(passive: &Passive) -> Mapping {
    let Passive {
        consecutive_failures,
        failure_rate_percent,
        window,
        min_requests,
        classes,
        local_suspicion,
        grpc_failures,
    } = passive;
    map([
        ("consecutive_failures", n(*consecutive_failures)),
        ("failure_rate_percent", n(*failure_rate_percent)),
        ("window_ms", ms(*window)),
        ("min_requests", n(*min_requests)),
        ("count", list(class_names(classes))),
        ("local_suspicion_ms", ms(*local_suspicion)),
        (
            "count_grpc",
            list(grpc_failures.iter().map(|c| Value::from(c.name()))),
        ),
    ])
}

/// The failure classes counted, as `count` lists them.
fn class_names(classes: &FailureClasses) -> Vec<Value> {
    let FailureClasses {
        connect,
        timeout,
        reset,
        status_5xx,
    } = *classes;
    [
        (connect, "connect"),
        (timeout, "timeout"),
        (reset, "reset"),
        (status_5xx, "5xx"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| Value::from(name))
    .collect()
}

fn active_map(active: &Active) -> Mapping {
    let Active {
        kind,
        interval,
        timeout,
        rise,
        fall,
    } = active;
    let mut m = match kind {
        CheckKind::Http { path, expected } => {
            let statuses = expected.iter().map(|&(lo, hi)| match lo == hi {
                true => Value::from(u64::from(lo)),
                false => Value::from(format!("{lo}-{hi}")),
            });
            map([("path", s(path)), ("expected_statuses", list(statuses))])
        }
        CheckKind::Grpc { service } => map([("grpc", mapping(map([("service", s(service))])))]),
    };
    m.extend(map([
        ("interval_ms", ms(*interval)),
        ("timeout_ms", ms(*timeout)),
        ("rise", n(*rise)),
        ("fall", n(*fall)),
    ]));
    m
}

fn breaker_map(policy: &Policy) -> Mapping {
    let Policy {
        base_ejection_ms,
        max_ejection_ms,
        jitter_percent,
        half_open_successes,
        min_reporters,
        report_window_ms,
        max_ejection_percent,
        panic_threshold_percent,
    } = *policy;
    map([
        ("base_ejection_ms", n(base_ejection_ms)),
        ("max_ejection_ms", n(max_ejection_ms)),
        ("jitter_percent", n(jitter_percent)),
        ("half_open_successes", n(half_open_successes)),
        ("min_reporters", n(min_reporters)),
        ("report_window_ms", n(report_window_ms)),
        ("max_ejection_percent", n(max_ejection_percent)),
        ("panic_threshold_percent", n(panic_threshold_percent)),
    ])
}
