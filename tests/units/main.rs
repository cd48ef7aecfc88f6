//! Tests of single parts without a network: the ring, the config and its errors,
//! health detection and breakers, slow start's ring steps, the value bounds, the
//! fuzz corpus and the Debian package, as one test binary. Run one file's tests with
//! `cargo test --test units ring_golden::` (or `config_errors::`, ...).

mod boundaries;
mod config_errors;
mod config_health;
mod fuzz_corpus;
mod health_breaker;
mod health_detector;
mod package;
mod ring_golden;
mod ring_props;
mod slow_start;
