//! The client-facing limits in the config file: defaults, values read, and bounds
//! refused naming the field.

use std::time::Duration;

use ringway::config::{self, Config};

fn with_limits(lines: &str) -> String {
    format!(
        "node: {{id: t, data_dir: /nonexistent}}\nlisteners: [{{address: 127.0.0.1:0}}]\n\
         limits:\n{lines}pools:\n  - name: web\n    upstreams: [{{id: a, address: 127.0.0.1:1}}]\n"
    )
}

#[test]
fn body_and_keep_alive_timeouts_default_and_are_read() {
    let c = Config::parse(&with_limits("  max_connections: 5\n")).unwrap();
    assert_eq!(
        c.limits.request_body_timeout,
        config::DEFAULT_REQUEST_BODY_TIMEOUT
    );
    assert_eq!(
        c.limits.keep_alive_timeout,
        config::DEFAULT_KEEP_ALIVE_TIMEOUT
    );
    let c = Config::parse(&with_limits(
        "  request_body_timeout_ms: 1500\n  keep_alive_timeout_ms: 250\n",
    ))
    .unwrap();
    assert_eq!(c.limits.request_body_timeout, Duration::from_millis(1500));
    assert_eq!(c.limits.keep_alive_timeout, Duration::from_millis(250));
}

#[test]
fn body_and_keep_alive_timeouts_out_of_bounds_are_refused_naming_the_field() {
    for (line, field) in [
        (
            "request_body_timeout_ms: 0",
            "limits.request_body_timeout_ms",
        ),
        (
            "request_body_timeout_ms: 3600001",
            "limits.request_body_timeout_ms",
        ),
        (
            "request_body_timeout_ms: soon",
            "limits.request_body_timeout_ms",
        ),
        ("keep_alive_timeout_ms: 0", "limits.keep_alive_timeout_ms"),
        ("keep_alive_timeout_ms: -5", "limits.keep_alive_timeout_ms"),
    ] {
        let err = Config::parse(&with_limits(&format!("  {line}\n")))
            .expect_err(line)
            .to_string();
        assert!(err.contains(field), "{line}: {err}");
    }
}
