//! DNS discovery: a pool whose upstreams the cluster's leader finds in DNS and proposes
//! through Raft, so every instance changes its ring at the same log index.
//!
//! - [`wire`]: the DNS message bytes (a question out; A, AAAA, SRV, CNAME back).
//! - [`resolve`]: one resolution against the configured resolver, within a deadline,
//!   with every failure told apart ([`Failure`]).
//! - this module: what an answer means for a pool ([`wanted`]: upstream ids that
//!   survive address changes) and what the leader does with it ([`decide`]: propose,
//!   hold back, or keep). Both pure; the controller that runs them on the leader is
//!   `control::discover`.
//!
//! Upstream ids. An SRV answer names its targets: the target's host name is the id
//! (with `:port` when one target is listed on several ports), so a pod that comes back
//! at a new address keeps its id and its keys. An A or AAAA answer names nothing but
//! addresses, so its upstreams are *slots* `{id_prefix}{n}`: an address already in the
//! pool keeps its slot; addresses that left free their slots; new addresses take the
//! lowest free slots. A pod replaced at a new address in one answer therefore takes
//! over its predecessor's slot, ring points and keys, and the pool's ring depends only
//! on how many addresses it has. The replicated pool itself is the address-to-id table
//! (every instance holds it), so a new leader continues the same numbering.

pub mod resolve;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::cluster::state::{Command, UpstreamSpec};
use crate::config::bounds;
use crate::config::discover::Discover;
pub use resolve::{Failure, Resolver};

/// What one resolution found, before ids are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A or AAAA: the addresses, sorted, each once.
    Addresses(Vec<IpAddr>),
    /// SRV: the targets of the lowest priority that have an address, sorted.
    Targets(Vec<Target>),
}

/// One SRV target with the address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub name: wire::Name,
    pub port: u16,
    pub weight: u16,
    pub ip: IpAddr,
}

impl Found {
    pub fn len(&self) -> usize {
        match self {
            Found::Addresses(a) => a.len(),
            Found::Targets(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A removal held back until answers repeat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The pool as the answer would make it (sorted by id).
    pub wanted: Vec<UpstreamSpec>,
    /// The ids it would remove.
    pub removes: Vec<String>,
    /// Answers in a row that gave it.
    pub seen: u32,
}

/// What the leader does with one resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The answer is the pool as the cluster holds it.
    Unchanged,
    /// Propose this change (a `SetPool` for a pool the cluster does not hold yet,
    /// else a `Batch` of deletes then puts).
    Propose(Command),
    /// The change removes too much at once; held until `needed` answers agree.
    Hold { seen: u32, needed: u32 },
    /// Fail static: the pool stays as it is, for this reason.
    Keep(Failure),
}

/// The decision on one resolution `answer` for `pool` (discovered by `d`), whose
/// upstreams in the cluster are `current` (`None`: the cluster has no such pool).
/// `held` carries a held-back removal from one resolution to the next: an answer that
/// repeats it counts towards `d.hold_down`, any other answer that changes the pool (or
/// one that changes nothing) forgets it, and a failed resolution leaves it as it is.
pub fn decide(
    pool: &str,
    d: &Discover,
    current: Option<&[UpstreamSpec]>,
    answer: Result<&Found, &Failure>,
    held: &mut Option<Held>,
) -> Decision {
    let found = match answer {
        Ok(found) if !found.is_empty() => found,
        Ok(_) => return Decision::Keep(Failure::Empty),
        Err(why) => return Decision::Keep(why.clone()),
    };
    let now = current.unwrap_or_default();
    let wanted = match wanted(d, now, found) {
        Ok(w) => w,
        Err(why) => return Decision::Keep(Failure::Unusable(why)),
    };
    let Some(current) = current else {
        *held = None;
        return Decision::Propose(Command::SetPool {
            pool: pool.to_owned(),
            upstreams: wanted,
        });
    };
    let changes = changes(pool, current, &wanted);
    if changes.is_empty() {
        *held = None;
        return Decision::Unchanged;
    }
    let removes: Vec<String> = current
        .iter()
        .filter(|c| !wanted.iter().any(|w| w.id == c.id))
        .map(|c| c.id.clone())
        .collect();
    let limit = u64::from(d.max_remove_percent) * current.len() as u64;
    if removes.len() as u64 * 100 <= limit {
        *held = None;
        return Decision::Propose(Command::Batch { commands: changes });
    }
    let seen = match held.take() {
        Some(h) if h.wanted == wanted => h.seen + 1,
        _ => 1,
    };
    if seen >= d.hold_down {
        return Decision::Propose(Command::Batch { commands: changes });
    }
    *held = Some(Held {
        wanted,
        removes,
        seen,
    });
    Decision::Hold {
        seen,
        needed: d.hold_down,
    }
}

/// The deletes, then the puts, that turn `current` into `wanted`.
fn changes(pool: &str, current: &[UpstreamSpec], wanted: &[UpstreamSpec]) -> Vec<Command> {
    let deletes = current
        .iter()
        .filter(|c| !wanted.iter().any(|w| w.id == c.id))
        .map(|c| Command::DeleteUpstream {
            pool: pool.to_owned(),
            id: c.id.clone(),
        });
    let puts = wanted
        .iter()
        .filter(|w| !current.contains(w))
        .map(|w| Command::PutUpstream {
            pool: pool.to_owned(),
            upstream: w.clone(),
        });
    deletes.chain(puts).collect()
}

/// The pool an answer means, sorted by id: ids as the module docs describe, an
/// upstream the cluster drains kept draining. An answer the cluster could not hold
/// (an id it refuses, too many upstreams, too much weight) is an error.
pub fn wanted(
    d: &Discover,
    current: &[UpstreamSpec],
    found: &Found,
) -> Result<Vec<UpstreamSpec>, String> {
    let mut out = match found {
        Found::Addresses(ips) => {
            let port = d.port.ok_or("A and AAAA answers need discover.port")?;
            slots(d, port, current, ips)
        }
        Found::Targets(targets) => by_target(targets),
    };
    bounds::check_upstream_count(out.len())?;
    for u in &mut out {
        bounds::check_name(&u.id).map_err(|why| format!("upstream id {why}"))?;
        u.draining = current
            .iter()
            .any(|c| c.id == u.id && c.address == u.address && c.draining);
    }
    let weight = out.iter().map(|u| u64::from(u.weight)).sum();
    bounds::check_pool_weight(weight)?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A and AAAA: addresses to slot ids.
fn slots(d: &Discover, port: u16, current: &[UpstreamSpec], ips: &[IpAddr]) -> Vec<UpstreamSpec> {
    let addresses: BTreeSet<String> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, port).to_string())
        .collect();
    let slot = |id: &str| -> Option<u32> { id.strip_prefix(&d.id_prefix)?.parse().ok() };
    let mut out = Vec::with_capacity(addresses.len());
    let mut free = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut kept = BTreeSet::new();
    for c in current {
        let stays = addresses.contains(&c.address) && kept.insert(c.address.clone());
        match (stays, slot(&c.id)) {
            (true, n) => {
                used.extend(n);
                out.push(spec(c.id.clone(), c.address.clone(), d.weight));
            }
            (false, Some(n)) => {
                free.insert(n);
            }
            (false, None) => {}
        }
    }
    let new: Vec<&String> = addresses.difference(&kept).collect();
    let mut free = free.into_iter();
    let mut next = 0u32;
    for address in new {
        let n = free.next().unwrap_or_else(|| {
            while used.contains(&next) {
                next += 1;
            }
            next
        });
        used.insert(n);
        out.push(spec(
            format!("{}{n}", d.id_prefix),
            address.clone(),
            d.weight,
        ));
    }
    out
}

/// SRV: targets to ids by name (`name:port` where a name has several ports).
fn by_target(targets: &[Target]) -> Vec<UpstreamSpec> {
    let mut ports: BTreeMap<&str, usize> = BTreeMap::new();
    for t in targets {
        *ports.entry(&t.name).or_default() += 1;
    }
    let mut out: Vec<UpstreamSpec> = Vec::with_capacity(targets.len());
    for t in targets {
        let id = match ports[t.name.as_str()] {
            1 => t.name.clone(),
            _ => format!("{}:{}", t.name, t.port),
        };
        if out.iter().any(|u| u.id == id) {
            continue; // the same target and port listed twice
        }
        let weight = u32::from(t.weight).clamp(1, bounds::MAX_WEIGHT);
        out.push(spec(id, SocketAddr::new(t.ip, t.port).to_string(), weight));
    }
    out
}

fn spec(id: String, address: String, weight: u32) -> UpstreamSpec {
    UpstreamSpec {
        id,
        address,
        weight,
        draining: false,
    }
}

#[cfg(test)]
mod tests;
