//! `pools[].protocol` and `pools[].http2`, every field checked with its path.

use serde_yaml::Value;

use super::super::http2::*;
use super::super::raw::RawHttp2;
use super::{join, Checker};

impl Checker {
    pub(super) fn protocol(
        &mut self,
        path: &str,
        raw: &Option<Value>,
        tls: bool,
    ) -> Option<UpstreamProtocol> {
        let Some(v) = raw else {
            return Some(UpstreamProtocol::default());
        };
        let p = join(path, "protocol");
        let s = self.string(&p, v)?;
        let protocol = UpstreamProtocol::parse(&s)
            .map_err(|why| self.error(&p, why))
            .ok()?;
        match (protocol, tls) {
            (UpstreamProtocol::H2, false) => {
                self.error(
                    &p,
                    "h2 is HTTP/2 over TLS and needs the pool's tls section (h2c is HTTP/2 in clear text)",
                );
                None
            }
            (UpstreamProtocol::H2c, true) => {
                self.error(
                    &p,
                    "h2c is HTTP/2 in clear text, but the pool has a tls section (use h2 or auto)",
                );
                None
            }
            _ => Some(protocol),
        }
    }

    pub(super) fn http2(
        &mut self,
        path: &str,
        raw: Option<RawHttp2>,
        protocol: Option<UpstreamProtocol>,
    ) -> Http2Settings {
        let d = Http2Settings::default();
        let Some(raw) = raw else {
            return d;
        };
        let p = join(path, "http2");
        if protocol == Some(UpstreamProtocol::Http1) {
            self.error(
                &p,
                "applies only to pools whose protocol is h2, h2c or auto (this pool speaks http1)",
            );
        }
        self.unknown(&p, &raw.unknown);
        let max_connections = self.opt_int(
            &join(&p, "max_connections_per_upstream"),
            &raw.max_connections_per_upstream,
            1,
            MAX_H2_MAX_CONNECTIONS,
            d.max_connections as u64,
        ) as usize;
        let max_streams = self.opt_int(
            &join(&p, "max_streams_per_connection"),
            &raw.max_streams_per_connection,
            1,
            MAX_H2_MAX_STREAMS,
            d.max_streams as u64,
        ) as usize;
        let keepalive_interval = self.millis(
            &join(&p, "keepalive_interval_ms"),
            &raw.keepalive_interval_ms,
            d.keepalive_interval,
        );
        let keepalive_timeout = self.millis(
            &join(&p, "keepalive_timeout_ms"),
            &raw.keepalive_timeout_ms,
            d.keepalive_timeout,
        );
        Http2Settings {
            max_connections,
            max_streams,
            keepalive_interval,
            keepalive_timeout,
        }
    }
}
