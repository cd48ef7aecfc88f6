//! `pools[].discover`, every field checked with its path.

use std::time::Duration;

use serde_yaml::Value;

use super::super::bounds;
use super::super::discover::*;
use super::super::raw::RawDiscover;
use super::{is_dns_name, join, Checker};

impl Checker {
    /// `pools[i].discover`, for pool `pool` (its name, when it has a valid one).
    pub(super) fn discover(
        &mut self,
        path: &str,
        raw: RawDiscover,
        pool: Option<&str>,
    ) -> Option<Discover> {
        let p = join(path, "discover");
        self.unknown(&p, &raw.unknown);
        let dns = self.discover_name(&join(&p, "dns"), &raw.dns);
        let record = self.record_type(&join(&p, "type"), &raw.record);
        let port = self.discover_port(&p, &raw.port, record);
        let interval = self.discover_ms(
            &join(&p, "interval_ms"),
            &raw.interval_ms,
            (MIN_DISCOVER_INTERVAL, MAX_DISCOVER_INTERVAL),
            DEFAULT_DISCOVER_INTERVAL,
        );
        let timeout = self.discover_ms(
            &join(&p, "timeout_ms"),
            &raw.timeout_ms,
            (Duration::from_millis(1), MAX_DISCOVER_TIMEOUT),
            DEFAULT_DISCOVER_TIMEOUT.min(interval),
        );
        if timeout > interval {
            self.error(
                join(&p, "timeout_ms"),
                format!(
                    "must be at most interval_ms ({} ms), got {} ms",
                    interval.as_millis(),
                    timeout.as_millis()
                ),
            );
        }
        let resolver = raw
            .resolver
            .as_ref()
            .and_then(|v| self.socket_addr(&join(&p, "resolver"), v));
        let max_remove_percent = self.opt_int(
            &join(&p, "max_remove_percent"),
            &raw.max_remove_percent,
            0,
            100,
            DEFAULT_MAX_REMOVE_PERCENT.into(),
        ) as u32;
        let hold_down = self.opt_int(
            &join(&p, "hold_down"),
            &raw.hold_down,
            MIN_HOLD_DOWN.into(),
            MAX_HOLD_DOWN.into(),
            DEFAULT_HOLD_DOWN.into(),
        ) as u32;
        let weight = self.discover_weight(&p, &raw.weight, record);
        let id_prefix = self.id_prefix(&p, &raw.id_prefix, record, pool);
        Some(Discover {
            dns: dns?,
            record: record?,
            port: port?,
            interval,
            timeout,
            resolver,
            max_remove_percent,
            hold_down,
            weight,
            id_prefix: id_prefix?,
        })
    }

    fn discover_name(&mut self, path: &str, v: &Option<Value>) -> Option<String> {
        let s = self.required(path, v).and_then(|v| self.string(path, v))?;
        let name = normalise_dns_name(&s);
        if name.len() > MAX_DNS_NAME_CHARS || !is_dns_name(&name) {
            self.error(
                path,
                format!("must be a DNS name of at most 253 characters (labels of letters, digits, '-' and '_'), got {s:?}"),
            );
            return None;
        }
        Some(name)
    }

    fn record_type(&mut self, path: &str, v: &Option<Value>) -> Option<RecordType> {
        let s = self.required(path, v).and_then(|v| self.string(path, v))?;
        RecordType::parse(&s)
            .map_err(|why| self.error(path, why))
            .ok()
    }

    /// `Some(None)` for SRV (the answer carries the ports); `None` on an error.
    fn discover_port(
        &mut self,
        p: &str,
        v: &Option<Value>,
        record: Option<RecordType>,
    ) -> Option<Option<u16>> {
        let path = join(p, "port");
        match (record?, v) {
            (RecordType::Srv, None) => Some(None),
            (RecordType::Srv, Some(_)) => {
                self.error(
                    path,
                    "is not used with type SRV: each SRV record names its port",
                );
                None
            }
            (_, None) => {
                self.error(path, "is required with type A or AAAA");
                None
            }
            (_, Some(v)) => self.int(&path, v, 1, 65535).map(|n| Some(n as u16)),
        }
    }

    fn discover_ms(
        &mut self,
        path: &str,
        v: &Option<Value>,
        (min, max): (Duration, Duration),
        default: Duration,
    ) -> Duration {
        let ms = self.opt_int(
            path,
            v,
            min.as_millis() as u64,
            max.as_millis() as u64,
            default.as_millis() as u64,
        );
        Duration::from_millis(ms)
    }

    fn discover_weight(&mut self, p: &str, v: &Option<Value>, record: Option<RecordType>) -> u32 {
        let path = join(p, "weight");
        if record == Some(RecordType::Srv) && v.is_some() {
            self.error(
                path,
                "is not used with type SRV: each SRV record carries its weight",
            );
            return 1;
        }
        self.opt_int(&path, v, 1, bounds::MAX_WEIGHT.into(), 1) as u32
    }

    fn id_prefix(
        &mut self,
        p: &str,
        v: &Option<Value>,
        record: Option<RecordType>,
        pool: Option<&str>,
    ) -> Option<String> {
        let path = join(p, "id_prefix");
        if record == Some(RecordType::Srv) && v.is_some() {
            self.error(
                path,
                "is not used with type SRV: upstream ids are the SRV targets' names",
            );
            return None;
        }
        let prefix = match v {
            Some(v) => self.string(&path, v)?,
            None => format!("{}-", pool.unwrap_or("")),
        };
        // Room for the slot number (at most MAX_UPSTREAMS_PER_POOL, 4 digits).
        const SLOT_DIGITS: usize = 4;
        let longest = format!("{prefix}{}", "9".repeat(SLOT_DIGITS));
        match bounds::check_name(&longest) {
            Ok(()) => Some(prefix),
            Err(why) => {
                self.error(path, format!("with a slot number appended, {why}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::discover::{Discover, RecordType};
    use crate::config::{Config, ParseError};

    fn parse(yaml: &str) -> Result<Config, Vec<String>> {
        Config::parse(yaml).map_err(|e| match e {
            ParseError::Invalid(es) => es.iter().map(|e| e.to_string()).collect(),
            ParseError::Syntax(s) => vec![s],
        })
    }

    fn pool(discover: &str) -> Result<Config, Vec<String>> {
        let yaml = format!(
            "node: {{id: n1, data_dir: /tmp/x}}\n\
             listeners: [{{address: \"127.0.0.1:8080\"}}]\n\
             pools:\n  - name: cache\n    discover: {discover}\n"
        );
        parse(&yaml)
    }

    fn errors(discover: &str) -> Vec<String> {
        pool(discover).expect_err("must be refused")
    }

    #[test]
    fn a_pool_from_a_records_takes_its_defaults() {
        let c = pool("{dns: Cache.Example.Internal., type: a, port: 8080}").unwrap();
        let d: &Discover = c.pools[0].discover.as_ref().unwrap();
        assert_eq!(d.dns, "cache.example.internal");
        assert_eq!(d.record, RecordType::A);
        assert_eq!(d.port, Some(8080));
        assert_eq!(d.interval.as_millis(), 5000);
        assert_eq!(d.timeout.as_millis(), 2000);
        assert_eq!(d.resolver, None);
        assert_eq!((d.max_remove_percent, d.hold_down, d.weight), (50, 3, 1));
        assert_eq!(d.id_prefix, "cache-");
        assert!(c.pools[0].upstreams.is_empty());
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let e = errors(
            "{dns: \"bad name!\", type: MX, interval_ms: 10, timeout_ms: 0, resolver: nowhere, \
             max_remove_percent: 101, hold_down: 1, surprise: 1}",
        );
        let want = [
            "pools[0].discover.surprise: unknown field",
            "pools[0].discover.dns: must be a DNS name",
            "pools[0].discover.type: must be A, AAAA or SRV, got \"MX\"",
            "pools[0].discover.interval_ms: must be at least 100, got 10",
            "pools[0].discover.timeout_ms: must be at least 1, got 0",
            "pools[0].discover.resolver: must be an IP address and port",
            "pools[0].discover.max_remove_percent: must be at most 100, got 101",
            "pools[0].discover.hold_down: must be at least 2, got 1",
        ];
        for w in want {
            assert!(e.iter().any(|x| x.starts_with(w)), "{w} not in {e:#?}");
        }
    }

    #[test]
    fn port_weight_and_id_prefix_follow_the_type() {
        let e = errors("{dns: a.b, type: SRV, port: 80, weight: 2, id_prefix: x}");
        for field in ["port", "weight", "id_prefix"] {
            let w = format!("pools[0].discover.{field}: is not used with type SRV");
            assert!(e.iter().any(|x| x.starts_with(&w)), "{w} not in {e:#?}");
        }
        let e = errors("{dns: a.b, type: AAAA}");
        assert!(e.contains(&"pools[0].discover.port: is required with type A or AAAA".into()));
        let e = errors("{dns: a.b, type: A, port: 80, interval_ms: 500, timeout_ms: 600}");
        assert!(e.contains(
            &"pools[0].discover.timeout_ms: must be at most interval_ms (500 ms), got 600 ms"
                .into()
        ));
    }

    #[test]
    fn upstreams_and_discover_exclude_each_other() {
        let yaml = "node: {id: n1, data_dir: /tmp/x}\n\
                    listeners: [{address: \"127.0.0.1:8080\"}]\n\
                    pools:\n  - name: cache\n    upstreams: [{address: \"127.0.0.1:1\"}]\n    \
                    discover: {dns: a.b, type: SRV}\n";
        let e = parse(yaml).unwrap_err();
        assert!(
            e.iter()
                .any(|x| x.starts_with("pools[0]: give either upstreams or discover")),
            "{e:#?}"
        );
    }
}
