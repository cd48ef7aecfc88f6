//! `ringway_upstream_h2_connections` and `ringway_upstream_h2_streams`: HTTP/2
//! connections open to each upstream and the streams in use on them, read from the
//! snapshot in force when `/metrics` is scraped (so an upstream that leaves a pool
//! leaves no series behind, and the request path pays nothing).

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use super::Snapshot;

const LABELS: [&str; 2] = ["pool", "upstream"];

pub(super) struct H2Gauges {
    snapshot: Arc<ArcSwap<Snapshot>>,
    descs: Vec<Desc>,
}

fn gauges() -> (IntGaugeVec, IntGaugeVec) {
    let conns = IntGaugeVec::new(
        Opts::new(
            "ringway_upstream_h2_connections",
            "HTTP/2 connections open to the upstream now (pools speaking h2, h2c or auto).",
        ),
        &LABELS,
    )
    .expect("valid metric");
    let streams = IntGaugeVec::new(
        Opts::new(
            "ringway_upstream_h2_streams",
            "Streams in use now on the HTTP/2 connections to the upstream.",
        ),
        &LABELS,
    )
    .expect("valid metric");
    (conns, streams)
}

impl H2Gauges {
    pub(super) fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> H2Gauges {
        let (conns, streams) = gauges();
        let descs = conns
            .desc()
            .into_iter()
            .chain(streams.desc())
            .cloned()
            .collect();
        H2Gauges { snapshot, descs }
    }
}

impl Collector for H2Gauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (conns, streams) = gauges();
        let snapshot = self.snapshot.load();
        for pool in snapshot.pools.iter().filter(|p| p.may_refuse_streams()) {
            for up in &pool.upstreams {
                let (c, s) = up.h2_usage();
                let labels = [&*pool.name, &*up.id];
                conns.with_label_values(&labels).set(c as i64);
                streams.with_label_values(&labels).set(s as i64);
            }
        }
        let mut out = conns.collect();
        out.extend(streams.collect());
        out
    }
}
