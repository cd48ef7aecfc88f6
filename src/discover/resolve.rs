//! One resolution of a discovered pool: the question sent over UDP to one resolver
//! (asked again over TCP when the answer comes truncated), SRV targets resolved when
//! the answer's additional section does not carry their addresses, all within one
//! deadline. Nothing is cached: the leader wants the resolver's answer of now.
//!
//! Every way a resolution fails is told apart ([`Failure`]), so the leader can keep
//! the pool as it is and say why; none of them is retried here (the next interval is
//! the retry).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::wire::{self, Record, Response, WireError};
use super::{Found, Target};
use crate::config::discover::{Discover, RecordType};

/// Largest UDP answer read. The query advertises [`wire::EDNS_UDP_PAYLOAD`]; a server
/// that ignores it still fits here, and one that sends more is cut and its answer
/// rejected as malformed.
pub const MAX_UDP_ANSWER_BYTES: usize = 4096;
/// Largest TCP answer: the two-byte length prefix of DNS over TCP cannot say more.
pub const MAX_TCP_ANSWER_BYTES: usize = 65_535;
/// Datagrams that are not the answer (another id, another question) skipped before
/// the resolution gives up: a few late answers to earlier questions are normal, a
/// stream of them is someone spoofing.
pub const MAX_STRAY_DATAGRAMS: usize = 16;
/// CNAMEs followed from the name asked: resolvers chain a few at most.
pub const MAX_CNAME_CHAIN: usize = 8;
/// SRV targets looked up one by one when the answer does not carry their addresses.
/// Beyond this the answer is refused: a pool's upstream bound is far above any real
/// SRV set, and this many sequential lookups already take most of a deadline.
pub const MAX_TARGET_LOOKUPS: usize = 256;
/// Largest `/etc/resolv.conf` read.
const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;
/// Where the system's resolver configuration is.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The resolver asked when `/etc/resolv.conf` names none (what the C library does).
pub const FALLBACK_RESOLVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

/// Why a resolution gave no usable answer. The leader keeps the pool as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no answer within the deadline")]
    Timeout,
    #[error("the name does not exist (NXDOMAIN)")]
    NxDomain,
    #[error("the resolver failed (SERVFAIL)")]
    ServFail,
    #[error("the resolver answered with response code {0}")]
    Rcode(u8),
    #[error("the answer holds no usable record")]
    Empty,
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("cannot reach the resolver: {0}")]
    Io(String),
    #[error("the answer cannot become the pool: {0}")]
    Unusable(String),
}

impl Failure {
    /// The `result` label of the discovery metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::NxDomain => "nxdomain",
            Failure::ServFail => "servfail",
            Failure::Rcode(_) => "rcode",
            Failure::Empty => "empty",
            Failure::Malformed(_) => "malformed",
            Failure::Io(_) => "io",
            Failure::Unusable(_) => "unusable",
        }
    }
}

/// A stub resolver asking one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolver {
    pub server: SocketAddr,
}

impl Resolver {
    /// Asks `server`, or the system's resolver when `None` ([`system_resolver`]).
    pub fn new(server: Option<SocketAddr>) -> Resolver {
        Resolver {
            server: server.unwrap_or_else(system_resolver),
        }
    }

    /// Resolves what `d` asks for within `d.timeout`.
    pub async fn discover(&self, d: &Discover) -> Result<Found, Failure> {
        let deadline = Instant::now() + d.timeout;
        match d.record {
            RecordType::A => self.addresses(&d.dns, wire::TYPE_A, deadline).await,
            RecordType::Aaaa => self.addresses(&d.dns, wire::TYPE_AAAA, deadline).await,
            RecordType::Srv => self.targets(&d.dns, deadline).await,
        }
        .inspect(|found| tracing::debug!(name = %d.dns, found = found.len(), "resolved"))
    }

    async fn addresses(&self, name: &str, rtype: u16, deadline: Instant) -> Result<Found, Failure> {
        let r = self.ask(name, rtype, deadline).await?;
        let names = chain(name, &r.answers);
        let mut ips: Vec<IpAddr> = r
            .answers
            .iter()
            .filter(|rec| names.iter().any(|n| n == rec.owner()))
            .filter_map(Record::ip)
            .filter(|ip| {
                matches!(
                    (ip, rtype),
                    (IpAddr::V4(_), wire::TYPE_A) | (IpAddr::V6(_), wire::TYPE_AAAA)
                )
            })
            .collect();
        ips.sort();
        ips.dedup();
        match ips.is_empty() {
            true => Err(Failure::Empty),
            false => Ok(Found::Addresses(ips)),
        }
    }

    async fn targets(&self, name: &str, deadline: Instant) -> Result<Found, Failure> {
        let r = self.ask(name, wire::TYPE_SRV, deadline).await?;
        let names = chain(name, &r.answers);
        let mut srvs: Vec<&wire::Srv> = r
            .answers
            .iter()
            .filter(|rec| names.iter().any(|n| n == rec.owner()))
            .filter_map(|rec| match rec {
                Record::Srv { target, .. } if !target.target.is_empty() => Some(target),
                _ => None,
            })
            .collect();
        let Some(lowest) = srvs.iter().map(|s| s.priority).min() else {
            return Err(Failure::Empty);
        };
        srvs.retain(|s| s.priority == lowest);
        let mut out = Vec::with_capacity(srvs.len());
        let mut lookups = 0;
        for s in srvs {
            let ip = match additional_ip(&r.additional, &s.target) {
                Some(ip) => Some(ip),
                None => {
                    lookups += 1;
                    if lookups > MAX_TARGET_LOOKUPS {
                        return Err(Failure::Unusable(format!(
                            "more than {MAX_TARGET_LOOKUPS} SRV targets without addresses in the answer"
                        )));
                    }
                    self.target_ip(&s.target, deadline).await?
                }
            };
            // A target the DNS says has no address is not an upstream.
            if let Some(ip) = ip {
                out.push(Target {
                    name: s.target.clone(),
                    port: s.port,
                    weight: s.weight,
                    ip,
                });
            }
        }
        out.sort();
        out.dedup();
        match out.is_empty() {
            true => Err(Failure::Empty),
            false => Ok(Found::Targets(out)),
        }
    }

    /// A target's lowest address: its A records, else its AAAA records. `None` when
    /// the name has neither; a failure to find out fails the resolution.
    async fn target_ip(&self, target: &str, deadline: Instant) -> Result<Option<IpAddr>, Failure> {
        for rtype in [wire::TYPE_A, wire::TYPE_AAAA] {
            match self.addresses(target, rtype, deadline).await {
                Ok(Found::Addresses(ips)) => return Ok(ips.first().copied()),
                Ok(Found::Targets(_)) => return Ok(None),
                Err(Failure::Empty | Failure::NxDomain) => continue,
                Err(other) => return Err(other),
            }
        }
        Ok(None)
    }

    /// One question, answered with NOERROR, within `deadline`.
    async fn ask(&self, name: &str, rtype: u16, deadline: Instant) -> Result<Response, Failure> {
        let id = fastrand::u16(..);
        let query = wire::encode_query(id, name, rtype);
        let exchange = async {
            let r = self.udp(&query, id, name, rtype).await?;
            match r.truncated {
                true => self.tcp(&query, id, name, rtype).await,
                false => Ok(r),
            }
        };
        let r = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| Failure::Timeout)??;
        match r.rcode {
            wire::RCODE_NOERROR => Ok(r),
            wire::RCODE_NXDOMAIN => Err(Failure::NxDomain),
            wire::RCODE_SERVFAIL => Err(Failure::ServFail),
            other => Err(Failure::Rcode(other)),
        }
    }

    async fn udp(
        &self,
        query: &[u8],
        id: u16,
        name: &str,
        rtype: u16,
    ) -> Result<Response, Failure> {
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let io = |e: std::io::Error| Failure::Io(format!("{}: {e}", self.server));
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        // Connected: the kernel drops datagrams from any other address.
        socket.connect(self.server).await.map_err(io)?;
        socket.send(query).await.map_err(io)?;
        let mut buf = vec![0u8; MAX_UDP_ANSWER_BYTES];
        for _ in 0..MAX_STRAY_DATAGRAMS {
            let n = socket.recv(&mut buf).await.map_err(io)?;
            match wire::decode_response(&buf[..n], id, name, rtype) {
                Ok(r) => return Ok(r),
                Err(WireError::IdMismatch { .. } | WireError::OtherQuestion(_)) => continue,
                Err(e) => return Err(Failure::Malformed(e.to_string())),
            }
        }
        Err(Failure::Malformed(format!(
            "{MAX_STRAY_DATAGRAMS} datagrams that answer another question"
        )))
    }

    async fn tcp(
        &self,
        query: &[u8],
        id: u16,
        name: &str,
        rtype: u16,
    ) -> Result<Response, Failure> {
        let io = |e: std::io::Error| Failure::Io(format!("{} over TCP: {e}", self.server));
        let mut stream = TcpStream::connect(self.server).await.map_err(io)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(io)?;
        let len = usize::from(stream.read_u16().await.map_err(io)?);
        let mut buf = vec![0u8; len.min(MAX_TCP_ANSWER_BYTES)];
        stream.read_exact(&mut buf).await.map_err(io)?;
        let r = wire::decode_response(&buf, id, name, rtype)
            .map_err(|e| Failure::Malformed(e.to_string()))?;
        match r.truncated {
            true => Err(Failure::Malformed("truncated over TCP".into())),
            false => Ok(r),
        }
    }
}

/// The name asked and the CNAMEs it leads to in `answers` (at most
/// [`MAX_CNAME_CHAIN`]).
fn chain(name: &str, answers: &[Record]) -> Vec<String> {
    let mut names = vec![wire::normalise(name)];
    for _ in 0..MAX_CNAME_CHAIN {
        let last = names.last().map(String::as_str).unwrap_or_default();
        let next = answers.iter().find_map(|r| match r {
            Record::Cname { owner, canonical } if owner == last => Some(canonical.clone()),
            _ => None,
        });
        match next {
            Some(n) if !names.contains(&n) => names.push(n),
            _ => break,
        }
    }
    names
}

/// The lowest address the additional section gives `target` (A before AAAA).
fn additional_ip(additional: &[Record], target: &str) -> Option<IpAddr> {
    let of = |v4: bool| {
        additional
            .iter()
            .filter(|r| r.owner() == target)
            .filter_map(Record::ip)
            .filter(|ip| ip.is_ipv4() == v4)
            .min()
    };
    of(true).or_else(|| of(false))
}

/// The first `nameserver` of `/etc/resolv.conf` on port 53, or [`FALLBACK_RESOLVER`].
pub fn system_resolver() -> SocketAddr {
    read_resolv_conf(Path::new(RESOLV_CONF))
        .as_deref()
        .and_then(first_nameserver)
        .unwrap_or(FALLBACK_RESOLVER)
}

fn read_resolv_conf(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_RESOLV_CONF_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The first `nameserver` line naming an IP address (a scoped IPv6 one is skipped).
pub fn first_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .find_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_its_first_usable_nameserver() {
        let text = "# comment\nsearch a.b\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(first_nameserver(text), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(first_nameserver("search x\n"), None);
        assert_eq!(
            first_nameserver("nameserver ::1"),
            Some("[::1]:53".parse().unwrap())
        );
    }

    #[test]
    fn cname_chains_are_followed_and_bounded() {
        let c = |o: &str, t: &str| Record::Cname {
            owner: o.into(),
            canonical: t.into(),
        };
        let answers = vec![c("a", "b"), c("b", "c"), c("c", "a")];
        assert_eq!(chain("A.", &answers), vec!["a", "b", "c"]);
    }
}
