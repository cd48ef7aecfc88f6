//! Active health checks (HTTP, or gRPC over HTTP/2): every instance checks every upstream of every pool
//! that has `health.active`, one task per upstream, and feeds the results into that
//! upstream's detector slot (`fall` failures in a row: skipped here and reported to
//! the cluster; `rise` passes: back here).
//!
//! The checker follows routing snapshots: it looks at the current snapshot every
//! [`SNAPSHOT_POLL`], starts a task for each new upstream (or changed settings) and
//! stops the tasks of upstreams that left.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::config::health::Active;
use crate::config::UpstreamAddr;
use crate::health::detector::{now_ms, UpstreamHealth};
use crate::health::probe::{probe, ProbeTls, TlsConnecting};
use crate::proxy::{Proxy, Snapshot};
use crate::tls::UpstreamTls;

/// How often the checker looks for a new routing snapshot.
pub const SNAPSHOT_POLL: Duration = Duration::from_millis(250);

struct Check {
    slot: Arc<UpstreamHealth>,
    addr: UpstreamAddr,
    active: Active,
    tls: Option<Arc<UpstreamTls>>,
    task: AbortHandle,
}

/// Runs the active checks of `proxy`'s pools until `shutdown` turns true.
pub async fn run(proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut checks: HashMap<(Arc<str>, Arc<str>), Check> = HashMap::new();
    let mut last: Option<Arc<Snapshot>> = None;
    let mut poll = tokio::time::interval(SNAPSHOT_POLL);
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = shutdown.wait_for(|&s| s) => break,
        }
        let snapshot = proxy.snapshot();
        if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &snapshot)) {
            continue;
        }
        follow(&snapshot, &mut checks);
        last = Some(snapshot);
    }
    checks.values().for_each(|c| c.task.abort());
}

fn follow(snapshot: &Snapshot, checks: &mut HashMap<(Arc<str>, Arc<str>), Check>) {
    let mut wanted = HashMap::new();
    for pool in &snapshot.pools {
        let Some(active) = &pool.health.settings.active else {
            continue;
        };
        for (client, slot) in pool.upstreams.iter().zip(&pool.health.slots) {
            let tls = client.settings().tls.clone();
            wanted.insert(
                (pool.name.clone(), client.id.clone()),
                (slot, &client.addr, active, tls),
            );
        }
    }
    checks.retain(|key, c| {
        let keep = wanted.get(key).is_some_and(|(slot, addr, active, tls)| {
            Arc::ptr_eq(slot, &c.slot) && **addr == c.addr && **active == c.active && *tls == c.tls
        });
        if !keep {
            c.task.abort();
        }
        keep
    });
    for (key, (slot, addr, active, tls)) in wanted {
        if checks.contains_key(&key) {
            continue;
        }
        let task = tokio::spawn(check_loop(
            slot.clone(),
            addr.clone(),
            active.clone(),
            tls.clone(),
        ));
        let check = Check {
            slot: slot.clone(),
            addr: addr.clone(),
            active: active.clone(),
            tls,
            task: task.abort_handle(),
        };
        checks.insert(key, check);
    }
}

async fn check_loop(
    slot: Arc<UpstreamHealth>,
    addr: UpstreamAddr,
    active: Active,
    tls: Option<Arc<UpstreamTls>>,
) {
    let mut ticker = tokio::time::interval(active.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let tls = tls.as_deref().map(|t| t as &dyn ProbeTls);
        let passed = probe(&addr, Some(&active), tls, active.timeout).await;
        slot.record_check(passed, active.rise, active.fall, now_ms());
    }
}

/// The pool's TLS for gRPC checks: the handshake, then ALPN must have settled on `h2`.
impl ProbeTls for UpstreamTls {
    fn connect_h2<'a>(&'a self, host: &'a str, tcp: tokio::net::TcpStream) -> TlsConnecting<'a> {
        Box::pin(async move {
            let stream = self.connect(host, tcp).await?;
            let alpn = stream.get_ref().1.alpn_protocol();
            if alpn != Some(b"h2".as_slice()) {
                let got = alpn.map(String::from_utf8_lossy);
                return Err(format!(
                    "the upstream did not agree to ALPN h2 (got {got:?})"
                ));
            }
            Ok(Box::new(stream) as Box<dyn crate::health::probe::ProbeIo>)
        })
    }
}
