//! `pools[].health` and `pools[].hash_balance_factor`: defaults when left out, every
//! field read, every bad value reported at once with its path and the rule.

use std::time::Duration;

use ringway::config::health::{CheckKind, Health, DEFAULT_LOCAL_SUSPICION};
use ringway::config::Config;
use ringway::grpc_status::Code;
use ringway::health::breaker::Policy;

fn pool(extra: &str) -> String {
    format!(
        "node: {{id: a, data_dir: /tmp/a}}\nlisteners: [{{address: '127.0.0.1:1'}}]\npools:\n  - name: p\n    upstreams: [{{address: '127.0.0.1:2'}}]\n{extra}"
    )
}

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.field_errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn defaults_when_left_out() {
    let c = Config::parse(&pool("")).unwrap();
    let p = &c.pools[0];
    assert_eq!(p.health, Health::default());
    assert!(p.health.active.is_none(), "active checks are opt-in");
    assert_eq!(
        p.hash_balance_factor, None,
        "bounded load is off by default"
    );
    assert_eq!(p.health.passive.local_suspicion, DEFAULT_LOCAL_SUSPICION);
    assert_eq!(p.health.breaker, Policy::default());
    assert!(Policy::default().check().is_ok());
}

#[test]
fn every_field_is_read() {
    let text = pool(
        r#"    hash_balance_factor: 125
    health:
      passive:
        consecutive_failures: 7
        failure_rate_percent: 30
        window_ms: 20000
        min_requests: 50
        count: [connect, 5xx]
        local_suspicion_ms: 0
        count_grpc: [UNAVAILABLE, internal, 8]
      active:
        path: /healthz?deep=1
        interval_ms: 500
        timeout_ms: 200
        expected_statuses: [200, "300-302", "2xx"]
        rise: 4
        fall: 5
      breaker:
        base_ejection_ms: 2000
        max_ejection_ms: 60000
        jitter_percent: 0
        half_open_successes: 5
        probe_interval_ms: 250
        min_reporters: 2
        report_window_ms: 9000
        max_ejection_percent: 30
        panic_threshold_percent: 20
"#,
    );
    let c = Config::parse(&text).unwrap();
    let p = &c.pools[0];
    assert_eq!(p.hash_balance_factor, Some(125));
    let h = &p.health;
    assert_eq!(h.passive.consecutive_failures, 7);
    assert_eq!(h.passive.failure_rate_percent, 30);
    assert_eq!(h.passive.window, Duration::from_secs(20));
    assert_eq!(h.passive.min_requests, 50);
    let cl = h.passive.classes;
    assert!(cl.connect && cl.status_5xx && !cl.timeout && !cl.reset);
    assert_eq!(h.passive.local_suspicion, Duration::ZERO);
    let grpc: Vec<Code> = h.passive.grpc_failures.iter().collect();
    assert_eq!(
        grpc,
        [Code::ResourceExhausted, Code::Internal, Code::Unavailable]
    );
    let a = h.active.as_ref().unwrap();
    let CheckKind::Http { path, expected } = &a.kind else {
        panic!("an HTTP check: {a:?}");
    };
    assert_eq!(path, "/healthz?deep=1");
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_millis(500), Duration::from_millis(200))
    );
    assert_eq!(*expected, [(200, 200), (300, 302), (200, 299)]);
    assert!(a.expects(204) && a.expects(301) && !a.expects(303) && !a.expects(500));
    assert_eq!((a.rise, a.fall), (4, 5));
    assert_eq!(h.probe_interval, Duration::from_millis(250));
    assert_eq!(
        h.breaker,
        Policy {
            base_ejection_ms: 2000,
            max_ejection_ms: 60000,
            jitter_percent: 0,
            half_open_successes: 5,
            min_reporters: 2,
            report_window_ms: 9000,
            max_ejection_percent: 30,
            panic_threshold_percent: 20,
        }
    );
}

#[test]
fn every_bad_value_is_reported_with_its_path() {
    let text = pool(
        r#"    hash_balance_factor: 99
    health:
      colour: red
      passive:
        consecutive_failures: -1
        failure_rate_percent: 101
        window_ms: 10
        min_requests: 0
        count: [connect, connect, 4xx]
        local_suspicion_ms: "soon"
        count_grpc: [UNAVAILBLE, OK, 14, UNAVAILABLE, 17, 2.5]
      active:
        interval_ms: 50
        timeout_ms: 5000
        expected_statuses: [700, "5xx-", "3xx"]
        rise: 0
        fall: 101
      breaker:
        base_ejection_ms: 5000
        max_ejection_ms: 1000
        jitter_percent: 150
        half_open_successes: 0
        min_reporters: 65
        max_ejection_percent: 200
        panic_threshold_percent: 101
        probe_interval_ms: 1
        extra: 1
"#,
    );
    let errs = errors(&text);
    let expect = [
        "pools[0].hash_balance_factor: must be at least 100, got 99",
        "pools[0].health.colour: unknown field",
        "pools[0].health.passive.consecutive_failures: must be at least 0, got -1",
        "pools[0].health.passive.failure_rate_percent: must be at most 100, got 101",
        "pools[0].health.passive.window_ms: must be at least 1000, got 10",
        "pools[0].health.passive.min_requests: must be at least 1, got 0",
        "pools[0].health.passive.count[1]: \"connect\" is listed twice",
        "pools[0].health.passive.count[2]: must be one of connect, timeout, reset, 5xx; got \"4xx\"",
        "pools[0].health.passive.local_suspicion_ms: must be a whole number, got \"soon\"",
        "pools[0].health.passive.count_grpc[0]: must be a gRPC status code other than OK, by name (UNAVAILABLE) or number (14); got \"UNAVAILBLE\"",
        "pools[0].health.passive.count_grpc[1]: must be a gRPC status code other than OK",
        "pools[0].health.passive.count_grpc[3]: UNAVAILABLE is listed twice",
        "pools[0].health.passive.count_grpc[4]: must be a gRPC status code other than OK, by name (UNAVAILABLE) or number (14); got 17",
        "pools[0].health.passive.count_grpc[5]: must be a gRPC status code other than OK",
        "pools[0].health.active.path: is required",
        "pools[0].health.active.interval_ms: must be at least 100, got 50",
        "pools[0].health.active.expected_statuses[0]: must be a status from 100 to 599",
        "pools[0].health.active.expected_statuses[1]: must be a status from 100 to 599",
        "pools[0].health.active.rise: must be at least 1, got 0",
        "pools[0].health.active.fall: must be at most 100, got 101",
        "pools[0].health.breaker.extra: unknown field",
        "pools[0].health.breaker.max_ejection_ms: must be at least base_ejection_ms (5000), got 1000",
        "pools[0].health.breaker.jitter_percent: must be at most 100, got 150",
        "pools[0].health.breaker.half_open_successes: must be at least 1, got 0",
        "pools[0].health.breaker.min_reporters: must be at most 64, got 65",
        "pools[0].health.breaker.max_ejection_percent: must be at most 100, got 200",
        "pools[0].health.breaker.panic_threshold_percent: must be at most 100, got 101",
        "pools[0].health.breaker.probe_interval_ms: must be at least 10, got 1",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in:\n{}",
            errs.join("\n")
        );
    }
}

#[test]
fn odd_shapes_are_errors_not_panics() {
    for health in [
        "    health: 3\n",
        "    health: {passive: []}\n",
        "    health: {active: {path: '/x', expected_statuses: []}}\n",
        "    health: {active: {path: 'no-slash'}}\n",
        "    health: {active: {path: '/a b'}}\n",
        "    health: {passive: {count: connect}}\n",
        "    health: {passive: {count_grpc: UNAVAILABLE}}\n",
        "    health: {passive: {count_grpc: [[14]]}}\n",
        "    health: {active: {path: /x, timeout_ms: 3000, interval_ms: 1000}}\n",
    ] {
        assert!(Config::parse(&pool(health)).is_err(), "{health}");
    }
}

#[test]
fn grpc_checks_read_their_service_and_need_http2() {
    let kind = |extra: &str| {
        let c = Config::parse(&pool(extra)).unwrap_or_else(|e| panic!("{e}\n{extra}"));
        c.pools[0].health.active.clone().expect("active").kind
    };
    let named = "    protocol: h2c\n    health:\n      active:\n        grpc: {service: pkg.Svc}\n";
    assert_eq!(
        kind(named),
        CheckKind::Grpc {
            service: "pkg.Svc".into()
        }
    );
    let overall = "    protocol: h2c\n    health:\n      active:\n        grpc: {}\n";
    assert_eq!(
        kind(overall),
        CheckKind::Grpc {
            service: String::new()
        }
    );
    let long = "x".repeat(513);
    let text = pool(&format!(
        r#"    health:
      active:
        path: /healthz
        expected_statuses: [200]
        grpc:
          service: "{long}"
          colour: red
"#
    ));
    let errs = errors(&text);
    let expect = [
        "pools[0].health.active.path: belongs to HTTP checks",
        "pools[0].health.active.expected_statuses: belongs to HTTP checks",
        "pools[0].health.active.grpc: the gRPC health protocol runs over HTTP/2: needs the pool's protocol to be h2 or h2c, got http1",
        "pools[0].health.active.grpc.colour: unknown field",
        "pools[0].health.active.grpc.service: must be a service name of at most 512 bytes",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in:\n{}",
            errs.join("\n")
        );
    }
    let auto = pool("    protocol: auto\n    health:\n      active:\n        grpc: {service: 7}\n");
    let errs = errors(&auto);
    assert!(
        errs.iter()
            .any(|e| e.contains("active.grpc: ") && e.ends_with("got auto")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("pools[0].health.active.grpc.service: ")),
        "a number is not a service name: {errs:?}"
    );
}

#[test]
fn a_grpc_check_dumps_and_reads_back_the_same() {
    for service in ["pkg.Svc", ""] {
        let text = pool(&format!(
            "    protocol: h2c\n    health:\n      active:\n        grpc: {{service: {service:?}}}\n        rise: 3\n"
        ));
        let c = Config::parse(&text).unwrap();
        let source = std::path::Path::new("/etc/ringway/ringway.yaml");
        let dumped = ringway::cli::dump::dump(&c, source).expect("dump");
        assert!(dumped.contains("grpc:"), "{dumped}");
        let again = Config::parse(&dumped).unwrap_or_else(|e| panic!("{e}\n{dumped}"));
        assert_eq!(again.pools[0].health, c.pools[0].health, "{dumped}");
    }
}
