//! Reading what an admin request asks for: percent-decoded path segments and query
//! components, and the JSON bodies of upstream, batch and member changes, checked
//! against the same bounds as the file and apply ([`crate::config::bounds`]).
//!
//! Pure: every function takes bytes or text and returns a command or the reason, in
//! words fit for a 400 answer.

use hyper::Method;

use crate::cluster::state::{Command, UpstreamSpec};
use crate::config::bounds;

/// The body of `POST /api/batch`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    changes: Vec<Command>,
}

/// `POST /api/batch`: pool and upstream changes applied together or not at all.
pub fn batch_command(body: &[u8]) -> Result<Command, String> {
    let b: BatchBody = serde_json::from_slice(body).map_err(|e| {
        format!("body must be JSON like {{\"changes\": [{{\"op\": \"delete_upstream\", \"pool\": \"web\", \"id\": \"a\"}}]}}: {e}")
    })?;
    let cmd = Command::Batch {
        commands: b.changes,
    };
    cmd.validate().map_err(|e| e.to_string())?;
    Ok(cmd)
}

/// What a member change asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// Make the node a member with this role: added if it is not one (its peer
    /// address is then required), promoted or demoted if it is. A given address is
    /// recorded first.
    Put {
        address: Option<String>,
        role: MemberRole,
    },
    Remove,
}

/// The role a member is asked to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Votes and may lead.
    Voter,
    /// Receives the log and serves from it, but never votes or campaigns.
    Learner,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        }
    }
}

/// The body of a member change.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    /// The member's peer address (`cluster.address`); `peer_address` is accepted too.
    #[serde(default, alias = "peer_address")]
    pub address: Option<String>,
    /// `voter` (the default) or `learner`.
    #[serde(default)]
    pub role: Option<MemberRole>,
}

/// `PUT` or `DELETE /api/cluster/nodes/NAME`.
pub fn node_change(method: &Method, name: &str, body: &[u8]) -> Result<NodeChange, String> {
    bounds::check_node_id(name)?;
    if method == Method::DELETE {
        return Ok(NodeChange::Remove);
    }
    let b: NodeBody = serde_json::from_slice(body).map_err(|e| {
        format!("body must be JSON like {{\"address\": \"10.0.0.4:7000\", \"role\": \"learner\"}} (the member's peer address, and voter or learner): {e}")
    })?;
    if let Some(address) = &b.address {
        address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("address must be IP:port, got {address:?}"))?;
    }
    Ok(NodeChange::Put {
        address: b.address,
        role: b.role.unwrap_or(MemberRole::Voter),
    })
}

/// The body of an upstream change.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBody {
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub draining: bool,
}

fn one() -> u32 {
    1
}

/// `PUT` or `DELETE /api/pools/POOL/upstreams/ID`, `pool` and `id` already decoded.
/// The command is checked on its own (names, address, weight); what depends on the
/// state (the pool's and the cluster's total weight) is checked where it applies.
pub fn command(method: &Method, pool: String, id: String, body: &[u8]) -> Result<Command, String> {
    let cmd = if method == Method::DELETE {
        Command::DeleteUpstream { pool, id }
    } else {
        let b: UpstreamBody = serde_json::from_slice(body).map_err(|e| {
            format!("body must be JSON like {{\"address\": \"10.0.0.7:80\", \"weight\": 1}}: {e}")
        })?;
        Command::PutUpstream {
            pool,
            upstream: UpstreamSpec {
                id,
                address: b.address,
                weight: b.weight,
                draining: b.draining,
            },
        }
    };
    cmd.validate().map_err(|e| e.to_string())?;
    Ok(cmd)
}

/// Percent-decodes one path segment (`+` stays a plus). Bytes that are not UTF-8 once
/// decoded are refused, naming the segment: `%FF` and `%FE` must not both become
/// U+FFFD and so name the same upstream.
pub fn decode_segment(segment: &str) -> Result<String, String> {
    decode_bytes(segment, false)
}

/// Percent-decodes one query component (`+` is a space), refusing what is not UTF-8.
pub fn decode(component: &str) -> Result<String, String> {
    decode_bytes(component, true)
}

fn decode_bytes(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 text once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(decode("%2Fuser%2F42").as_deref(), Ok("/user/42"));
        assert_eq!(decode("a+b").as_deref(), Ok("a b"));
        assert_eq!(decode("100%").as_deref(), Ok("100%"));
        assert_eq!(decode("%zz").as_deref(), Ok("%zz"));
        assert_eq!(decode("%4").as_deref(), Ok("%4"));
        assert_eq!(decode("%41").as_deref(), Ok("A"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Ok("café"));
    }

    #[test]
    fn segments_keep_plus_and_refuse_invalid_utf8() {
        assert_eq!(decode_segment("a+b").as_deref(), Ok("a+b"));
        let ff = decode_segment("up%FF").unwrap_err();
        assert!(ff.contains("up%FF"), "{ff}");
        assert!(decode_segment("up%FE").is_err());
        assert!(decode("%C3").is_err());
    }

    #[test]
    fn member_changes_take_an_address_and_a_role() {
        let put = |body: &str| node_change(&Method::PUT, "edge7", body.as_bytes());
        assert_eq!(
            put(r#"{"peer_address": "10.0.1.7:7946", "role": "learner"}"#),
            Ok(NodeChange::Put {
                address: Some("10.0.1.7:7946".into()),
                role: MemberRole::Learner,
            })
        );
        assert_eq!(
            put(r#"{"address": "10.0.1.7:7946"}"#),
            Ok(NodeChange::Put {
                address: Some("10.0.1.7:7946".into()),
                role: MemberRole::Voter,
            })
        );
        assert_eq!(
            put(r#"{"role": "voter"}"#),
            Ok(NodeChange::Put {
                address: None,
                role: MemberRole::Voter,
            })
        );
        for bad in [
            r#"{"role": "observer"}"#,
            r#"{"address": "nowhere"}"#,
            r#"{"address": "10.0.1.7:1", "peer_address": "10.0.1.7:1"}"#,
            r#"{"role": "learner", "extra": 1}"#,
        ] {
            assert!(put(bad).is_err(), "{bad}");
        }
    }
}
