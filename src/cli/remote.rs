//! A running instance's admin API as the `cluster` and `route --live` commands reach
//! it: where it is (`--admin` or the file), whether it speaks TLS and whom to trust,
//! and what its answers look like to a person.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use super::encode;
use crate::admin::client::{bearer, Endpoint, Trust};
use crate::config::{parse_upstream_addr, Config};

/// `--admin`: `HOST:PORT`, `[IPV6]:PORT` or `http(s)://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAddr {
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None`: decided by the
    /// config file (`admin.tls`) or `--cacert`.
    pub https: Option<bool>,
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<AdminAddr, String> {
        let lower = s.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (Some(true), &s["https://".len()..])
        } else if lower.starts_with("http://") {
            (Some(false), &s["http://".len()..])
        } else {
            (None, s)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.contains("://") {
            return Err(format!(
                "must be HOST:PORT or http(s)://HOST[:PORT] with no path, got {s:?}"
            ));
        }
        let has_port = match rest.strip_prefix('[') {
            Some(v6) => v6.split_once(']').is_some_and(|(_, tail)| !tail.is_empty()),
            None => rest.contains(':'),
        };
        let with_port = match (has_port, https) {
            (true, _) => rest.to_owned(),
            (false, Some(true)) => format!("{rest}:443"),
            (false, Some(false)) => format!("{rest}:80"),
            (false, None) => {
                return Err(format!(
                    "needs a port: HOST:PORT, [IPV6]:PORT or http(s)://HOST[:PORT], got {s:?}"
                ))
            }
        };
        let addr = parse_upstream_addr(&with_port).map_err(|e| {
            if rest.matches(':').count() > 1 && !rest.starts_with('[') {
                format!("put an IPv6 address in brackets, as in [::1]:9480; got {s:?}")
            } else {
                e
            }
        })?;
        Ok(AdminAddr {
            https,
            host: addr.host,
            port: addr.port,
        })
    }
}

/// How the `cluster` and `route --live` commands were told to reach the admin API.
#[derive(Debug, Default, Clone)]
pub struct RemoteArgs<'a> {
    /// The config file, for `admin.address`, `admin.tls`, `admin.token_file` and the
    /// cluster CA.
    pub config: Option<&'a Config>,
    /// `--admin`.
    pub admin: Option<AdminAddr>,
    /// `--token-file`.
    pub token_file: Option<&'a Path>,
    /// `--cacert`.
    pub cacert: Option<&'a Path>,
}

/// A running instance's admin API.
pub struct Remote {
    pub endpoint: Endpoint,
    /// Bearer token for changes.
    pub token: Option<String>,
}

impl Remote {
    /// Where to reach the instance: `--admin` or the file's `admin.address`. HTTPS when
    /// `--admin` says `https://`, or without a scheme when the file has `admin.tls` or
    /// `--cacert` is given. Trusted for HTTPS: `--cacert`, else the file's
    /// `cluster.tls.ca_file`, else the system's trust store. The token comes from
    /// `--token-file` or the file's `admin.token_file`.
    pub fn from_args(args: RemoteArgs<'_>) -> Result<Remote, String> {
        let file_admin = args.config.and_then(|c| c.admin.as_ref());
        let addr =
            match (args.admin, file_admin) {
                (Some(addr), _) => addr,
                (None, Some(a)) => AdminAddr {
                    https: None,
                    host: a.address.ip().to_string(),
                    port: a.address.port(),
                },
                (None, None) => return Err(
                    "no admin address: give --admin ADDR or a config file with an admin section"
                        .into(),
                ),
            };
        let file_tls = file_admin.is_some_and(|a| a.tls.is_some());
        let https = addr.https.unwrap_or(file_tls || args.cacert.is_some());
        if !https && args.cacert.is_some() {
            return Err("--cacert is for https, but --admin says http://".into());
        }
        let trust = https.then(|| trust(args.config, args.cacert));
        let endpoint = Endpoint::new(&addr.host, addr.port, trust)?;
        let token_file = args
            .token_file
            .or(file_admin.and_then(|a| a.token_file.as_deref()));
        let token = token_file.map(crate::control::read_token).transpose()?;
        Ok(Remote { endpoint, token })
    }

    async fn call(
        &self,
        conn: &mut crate::admin::client::Connection,
        method: http::Method,
        path: &str,
        body: String,
    ) -> Result<Value, String> {
        let mut headers = Vec::new();
        if method != http::Method::GET {
            let token = self
                .token
                .as_deref()
                .ok_or("changes need the admin token: give --token-file or a config file with admin.token_file")?;
            headers.push(bearer(token)?);
        }
        let (parts, bytes) = conn.call(method, path, &headers, body.into()).await?;
        let url = self.endpoint.url();
        let text = String::from_utf8_lossy(&bytes);
        if !parts.status.is_success() {
            return Err(format!("{url} answered {}: {}", parts.status, text.trim()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{url}: the answer is not JSON ({e}): {}", text.trim()))
    }

    async fn one(&self, method: http::Method, path: &str, body: String) -> Result<Value, String> {
        let mut conn = self.endpoint.connect().await?;
        self.call(&mut conn, method, path, body).await
    }

    /// `GET /api/cluster`.
    pub async fn status(&self) -> Result<Value, String> {
        self.one(http::Method::GET, "/api/cluster", String::new())
            .await
    }

    /// Adds a member; answers once it is a voter (a learner with `learner`).
    pub async fn add_node(
        &self,
        name: &str,
        peer_address: &str,
        learner: bool,
    ) -> Result<String, String> {
        let role = if learner { "learner" } else { "voter" };
        let body = serde_json::json!({ "address": peer_address, "role": role }).to_string();
        let path = format!("/api/cluster/nodes/{}", encode(name));
        let v = self.one(http::Method::PUT, &path, body).await?;
        Ok(format!("{v:#}\n"))
    }

    /// Promotes a member to `voter` or demotes it to `learner`.
    pub async fn set_role(&self, name: &str, role: &str) -> Result<String, String> {
        let body = serde_json::json!({ "role": role }).to_string();
        let path = format!("/api/cluster/nodes/{}", encode(name));
        let v = self.one(http::Method::PUT, &path, body).await?;
        Ok(format!("{v:#}\n"))
    }

    /// Removes a member.
    pub async fn remove_node(&self, name: &str) -> Result<String, String> {
        let path = format!("/api/cluster/nodes/{}", encode(name));
        let v = self.one(http::Method::DELETE, &path, String::new()).await?;
        Ok(format!("{v:#}\n"))
    }

    /// `KEY<TAB>UPSTREAM_ID` lines as the running instance routes them now (from the
    /// cluster's committed state, not the file), asked on one connection.
    pub async fn route(&self, pool: &str, keys: &[String]) -> Result<String, String> {
        let mut conn = self.endpoint.connect().await?;
        let mut out = String::new();
        for key in keys {
            let path = format!("/api/route?pool={}&key={}", encode(pool), encode(key));
            let v = self
                .call(&mut conn, http::Method::GET, &path, String::new())
                .await?;
            let id = v["upstream"].as_str().map_or("-".into(), printable);
            let _ = writeln!(out, "{key}\t{id}");
        }
        Ok(out)
    }
}

/// Whom to trust for the admin API's certificate: `--cacert`, else the cluster CA of
/// the file (instances of a cluster usually hold certificates from it), else the
/// system's trust store.
fn trust(config: Option<&Config>, cacert: Option<&Path>) -> Trust {
    let cluster_ca = config
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.tls.as_ref())
        .map(|t| t.ca_file.clone());
    match cacert.map(PathBuf::from).or(cluster_ca) {
        Some(path) => Trust::CaFile(path),
        None => Trust::System,
    }
}

/// A string from the network made safe for a terminal: control characters escaped.
fn printable(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_owned()
    }
}

/// A value of the status answer as a table cell: `-` when absent or null.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => printable(s),
        other => printable(&other.to_string()),
    }
}

/// `GET /api/cluster` as a person reads it: this node's view, then one row per
/// member with its replication lag (known on the leader: commit index minus what
/// the member holds).
pub fn status_table(v: &Value) -> String {
    let mut out = String::new();
    let leader = v["leader"].as_str();
    let rows = [
        ("node", cell(&v["id"])),
        ("role", role(v)),
        ("leader", cell(&v["leader"])),
        ("term", cell(&v["term"])),
        ("commit", cell(&v["commit"])),
        ("applied", applied(v)),
        ("snapshot", cell(&v["snapshot_index"])),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<10}{value}");
    }
    if v["removed"] == Value::Bool(true) {
        let _ = writeln!(
            out,
            "warning   this node is no longer a member of the cluster"
        );
    }
    if v["lost_data"] == Value::Bool(true) {
        let _ = writeln!(out, "warning   this node lost data it had acknowledged");
    }
    out.push('\n');
    let commit = v["commit"].as_u64();
    let mut table = vec![[
        "MEMBER".to_owned(),
        "ROLE".into(),
        "LEADER".into(),
        "MATCHED".into(),
        "LAG".into(),
    ]];
    for m in v["members"].as_array().map_or(&[][..], |a| a.as_slice()) {
        let id = m["id"].as_str();
        let lag = match (commit, m["matched"].as_u64()) {
            (Some(c), Some(matched)) => c.saturating_sub(matched).to_string(),
            _ => "-".into(),
        };
        let is_leader = id.is_some() && id == leader;
        table.push([
            cell(&m["id"]),
            cell(&m["role"]),
            if is_leader { "*".into() } else { "".into() },
            cell(&m["matched"]),
            lag,
        ]);
    }
    if table.len() == 1 {
        out.push_str("no members (a node waiting to be added, or removed)\n");
        return out;
    }
    write_table(&mut out, &table);
    out
}

/// The Raft role, with the member's kind when it is a learner (`follower (learner)`).
fn role(v: &Value) -> String {
    match v["membership"].as_str() {
        Some("learner") => format!("{} (learner)", cell(&v["role"])),
        _ => cell(&v["role"]),
    }
}

/// `applied`, with how far it trails this node's commit index.
fn applied(v: &Value) -> String {
    match (v["commit"].as_u64(), v["applied"].as_u64()) {
        (Some(c), Some(a)) => format!("{a} ({} behind commit)", c.saturating_sub(a)),
        _ => cell(&v["applied"]),
    }
}

/// Left-aligned columns two spaces apart, the last column unpadded.
fn write_table<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AdminAddr, String> {
        s.parse()
    }

    fn addr(https: Option<bool>, host: &str, port: u16) -> AdminAddr {
        AdminAddr {
            https,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn admin_addresses_take_names_brackets_and_schemes() {
        assert_eq!(parse("localhost:9480"), Ok(addr(None, "localhost", 9480)));
        assert_eq!(parse("127.0.0.1:9480"), Ok(addr(None, "127.0.0.1", 9480)));
        assert_eq!(parse("[::1]:9480"), Ok(addr(None, "::1", 9480)));
        assert_eq!(
            parse("https://admin.example:8443"),
            Ok(addr(Some(true), "admin.example", 8443))
        );
        assert_eq!(
            parse("HTTPS://Admin.Example/"),
            Ok(addr(Some(true), "admin.example", 443))
        );
        assert_eq!(parse("http://[::1]"), Ok(addr(Some(false), "::1", 80)));
    }

    #[test]
    fn bad_admin_addresses_say_what_is_wrong() {
        let cases = [
            ("localhost", "needs a port"),
            ("::1:9480", "in brackets"),
            ("https://h:1/api", "no path"),
            ("https://user@h:1", "no path"),
            ("h:0", "port must be a number"),
            ("h:http", "port must be a number"),
            ("bad host:1", "host must be"),
            ("ftp://h:1", "no path"),
            ("", "needs a port"),
        ];
        for (input, want) in cases {
            let e = parse(input).expect_err(input);
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn the_status_table_shows_members_leader_and_lag() {
        let v = serde_json::json!({
            "id": "n1", "role": "leader", "removed": false, "lost_data": false,
            "term": 7, "leader": "n1", "commit": 120, "applied": 118, "snapshot_index": 100,
            "members": [
                {"id": "n1", "role": "voter", "matched": 120},
                {"id": "n2", "role": "voter", "matched": 117},
                {"id": "n3\u{1b}[31m", "role": "learner", "matched": null},
            ],
        });
        let t = status_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "node      n1");
        assert_eq!(lines[1], "role      leader");
        assert_eq!(lines[3], "term      7");
        assert_eq!(lines[5], "applied   118 (2 behind commit)");
        let header: Vec<&str> = lines[8].split_whitespace().collect();
        assert_eq!(header, ["MEMBER", "ROLE", "LEADER", "MATCHED", "LAG"]);
        let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(row(9), ["n1", "voter", "*", "120", "0"]);
        assert_eq!(row(10), ["n2", "voter", "117", "3"]);
        assert_eq!(row(11), ["n3\\u{1b}[31m", "learner", "-", "-"]);
        assert!(!t.contains('\u{1b}'), "escape bytes from the network: {t}");
    }

    #[test]
    fn a_learner_says_so_beside_its_raft_role() {
        let v = serde_json::json!({"id": "edge7", "role": "follower", "membership": "learner"});
        assert!(status_table(&v).contains("role      follower (learner)\n"));
        let v = serde_json::json!({"id": "n2", "role": "follower", "membership": "voter"});
        assert!(status_table(&v).contains("role      follower\n"));
    }

    #[test]
    fn a_status_without_members_or_fields_still_prints() {
        let t = status_table(&serde_json::json!({"id": "n4", "removed": true}));
        assert!(t.contains("term      -"), "{t}");
        assert!(t.contains("no longer a member"), "{t}");
        assert!(t.contains("no members"), "{t}");
        let t = status_table(&serde_json::json!("not an object"));
        assert!(t.contains("node      -"), "{t}");
    }
}
