//! The `tls` sections of the config: their shape (every error at its field, all at
//! once) and the files they name (`tls::check`: unreadable, not PEM, a key that is not
//! the certificate's), with certificates made at test time.

use crate::tlsutil;

use std::time::Duration;

use ringway::config::{Config, DEFAULT_TLS_HANDSHAKE_TIMEOUT};
use tlsutil::{yaml_path, Ca, Dir};

const HEAD: &str = "node: {id: a, data_dir: /tmp/a}\n";
const POOL: &str = "pools:\n  - name: p\n    upstreams: [{address: 'up.internal:443'}]\n";

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.field_errors().iter().map(|e| e.to_string()).collect(),
    }
}

fn with_listener_tls(tls: &str) -> String {
    format!("{HEAD}listeners:\n  - address: 127.0.0.1:1\n    tls: {tls}\n{POOL}")
}

fn with_pool_tls(tls: &str) -> String {
    format!("{HEAD}listeners: [{{address: 127.0.0.1:1}}]\n{POOL}    tls: {tls}\n")
}

#[test]
fn every_tls_section_is_read_with_its_defaults() {
    let text = format!(
        "{HEAD}listeners:\n  - address: 127.0.0.1:1\n    tls: {{certificates: [{{cert: a.crt, key: a.key}}, {{cert: b.crt, key: b.key}}]}}\n\
         admin: {{address: 127.0.0.1:2, tls: {{cert: adm.crt, key: adm.key}}}}\n\
         cluster: {{address: 127.0.0.1:3, peers: {{a: 127.0.0.1:3}}, tls: {{ca_file: ca.crt, cert: n.crt, key: n.key}}}}\n\
         {POOL}    tls: {{ca_file: up-ca.crt, server_name: up.test, client_cert: c.crt, client_key: c.key}}\n"
    );
    let c = Config::parse(&text).expect("valid");
    let l = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(l.certificates.len(), 2);
    assert_eq!(l.certificates[1].key.to_str(), Some("b.key"));
    assert_eq!(l.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(c.admin.unwrap().tls.unwrap().cert.to_str(), Some("adm.crt"));
    let cl = c.cluster.unwrap().tls.unwrap();
    assert_eq!(cl.ca_file.to_str(), Some("ca.crt"));
    assert_eq!(cl.identity.cert.to_str(), Some("n.crt"));
    let p = c.pools[0].tls.as_ref().unwrap();
    assert_eq!(p.server_name.as_deref(), Some("up.test"));
    assert_eq!(p.client_cert.as_ref().unwrap().key.to_str(), Some("c.key"));
    assert!(!p.insecure_skip_verify);
}

#[test]
fn sections_without_tls_have_none() {
    let c = Config::parse(&format!(
        "{HEAD}listeners: [{{address: 127.0.0.1:1}}]\n{POOL}"
    ))
    .unwrap();
    assert!(c.listeners[0].tls.is_none());
    assert!(c.pools[0].tls.is_none());
}

#[test]
fn handshake_timeout_is_read_in_milliseconds() {
    let c = Config::parse(&with_listener_tls(
        "{certificates: [{cert: a, key: b}], handshake_timeout_ms: 2500}",
    ))
    .unwrap();
    assert_eq!(
        c.listeners[0].tls.as_ref().unwrap().handshake_timeout,
        Duration::from_millis(2500)
    );
}

#[test]
fn listener_tls_shape_errors_are_all_reported_at_their_fields() {
    assert_eq!(
        errors(&with_listener_tls("{certificates: []}")),
        ["listeners[0].tls.certificates: must list at least one certificate (cert and key)"]
    );
    assert_eq!(
        errors(&with_listener_tls(
            "{certificates: [{cert: a}, {key: 3, cert: ''}], handshake_timeout_ms: 0, sni: x}"
        )),
        [
            "listeners[0].tls.sni: unknown field",
            "listeners[0].tls.handshake_timeout_ms: must be at least 1, got 0",
            "listeners[0].tls.certificates[0].key: is required",
            "listeners[0].tls.certificates[1].cert: must not be empty",
            "listeners[0].tls.certificates[1].key: must be a string, got 3",
        ]
    );
}

#[test]
fn pool_tls_shape_errors_are_all_reported_at_their_fields() {
    assert_eq!(
        errors(&with_pool_tls(
            "{insecure_skip_verify: yes please, server_name: 'bad name!'}"
        )),
        [
            "pools[0].tls.server_name: must be a DNS name or an IP address, got \"bad name!\"",
            "pools[0].tls.insecure_skip_verify: must be true or false, got \"yes please\"",
        ]
    );
    assert_eq!(
        errors(&with_pool_tls("{client_cert: c.crt}")),
        ["pools[0].tls.client_key: is required when client_cert is set"]
    );
    assert_eq!(
        errors(&with_pool_tls("{client_key: c.key}")),
        ["pools[0].tls.client_cert: is required when client_key is set"]
    );
    assert_eq!(
        errors(&with_pool_tls("{ca_file: ca.crt, insecure_skip_verify: true}")),
        ["pools[0].tls.insecure_skip_verify: contradicts ca_file: a CA bundle is pointless when certificates are not verified"]
    );
}

#[test]
fn cluster_and_admin_tls_need_every_file() {
    let text = format!(
        "{HEAD}listeners: [{{address: 127.0.0.1:1}}]\n\
         admin: {{address: 127.0.0.1:2, tls: {{cert: a.crt}}}}\n\
         cluster: {{address: 127.0.0.1:3, peers: {{a: 127.0.0.1:3}}, tls: {{cert: n.crt}}}}\n{POOL}"
    );
    assert_eq!(
        errors(&text),
        [
            "admin.tls.key: is required",
            "cluster.tls.ca_file: is required",
            "cluster.tls.key: is required",
        ]
    );
}

// ---------------------------------------------------------------------------------
// The files: tls::check
// ---------------------------------------------------------------------------------

fn check(text: &str) -> Vec<String> {
    let c = Config::parse(text).unwrap_or_else(|e| panic!("shape is valid: {e}"));
    ringway::tls::check(&c)
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn good_files_pass_the_check() {
    let ca = Ca::new("ca");
    let dir = Dir::new();
    let (c, k) = dir.leaf("a", &ca.issue(&["a.test"]));
    let ca_file = yaml_path(&dir.ca("ca", &ca));
    let text = format!(
        "{HEAD}listeners:\n  - address: 127.0.0.1:1\n    tls: {{certificates: [{{cert: {c}, key: {k}}}]}}\n\
         admin: {{address: 127.0.0.1:2, tls: {{cert: {c}, key: {k}}}}}\n\
         cluster: {{address: 127.0.0.1:3, peers: {{a: 127.0.0.1:3}}, tls: {{ca_file: {ca_file}, cert: {c}, key: {k}}}}}\n\
         {POOL}    tls: {{ca_file: {ca_file}, client_cert: {c}, client_key: {k}}}\n",
        c = yaml_path(&c),
        k = yaml_path(&k),
    );
    assert_eq!(check(&text), Vec::<String>::new());
}

#[test]
fn unusable_files_are_named_at_their_fields() {
    let ca = Ca::new("ca");
    let dir = Dir::new();
    let (good_c, good_k) = dir.leaf("a", &ca.issue(&["a.test"]));
    let (_, other_k) = dir.leaf("b", &ca.issue(&["b.test"]));
    let missing = dir.path.join("missing.pem");
    let garbage = dir.write("garbage.pem", "hello, not PEM\n");
    let text = format!(
        "{HEAD}listeners:\n  - address: 127.0.0.1:1\n    tls: {{certificates: [{{cert: {gc}, key: {gk}}}, {{cert: {gc}, key: {missing}}}]}}\n\
         admin: {{address: 127.0.0.1:2, tls: {{cert: {garbage}, key: {gk}}}}}\n\
         cluster: {{address: 127.0.0.1:3, peers: {{a: 127.0.0.1:3}}, tls: {{ca_file: {garbage}, cert: {gc}, key: {ok}}}}}\n\
         {POOL}    tls: {{ca_file: {missing}, client_cert: {gc}, client_key: {garbage}}}\n",
        gc = yaml_path(&good_c),
        gk = yaml_path(&good_k),
        ok = yaml_path(&other_k),
        missing = yaml_path(&missing),
        garbage = yaml_path(&garbage),
    );
    let (m, g, c, o) = (
        missing.display().to_string(),
        garbage.display().to_string(),
        good_c.display().to_string(),
        other_k.display().to_string(),
    );
    let errs = check(&text);
    let expect = [
        format!("listeners[0].tls.certificates[1].key: cannot read {m}: No such file or directory (os error 2)"),
        format!("admin.tls.cert: {g}: holds no PEM certificate (BEGIN CERTIFICATE)"),
        format!("pools[0].tls.ca_file: cannot read {m}: No such file or directory (os error 2)"),
        format!("pools[0].tls.client_key: {g}: holds no PEM private key (BEGIN PRIVATE KEY)"),
        format!("cluster.tls.ca_file: {g}: holds no PEM certificate (BEGIN CERTIFICATE)"),
        format!("cluster.tls.key: {o} is not the private key of the certificate in {c}"),
    ];
    assert_eq!(errs, expect);
}
