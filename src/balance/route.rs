//! Pool selection: the most specific host pattern, then the longest path prefix.
//!
//! Host patterns rank exact names above `*.suffix` wildcards (a longer suffix above a
//! shorter one) above `*`. Among pools whose host pattern matches, the one with the
//! longest matching `path_prefix` wins; a prefix matches whole path segments, so
//! `/api` matches `/api` and `/api/x` but not `/apix` (a prefix ending in `/` matches
//! anything under it).

use std::fmt;

use http::header::HOST;
use http::{HeaderMap, Uri};

/// One entry of a pool's `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host, including none.
    Any,
    /// `*.example.com`, stored as `.example.com`: any name ending in it.
    Suffix(String),
    /// An exact name, stored lowercase.
    Exact(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let valid = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b))
        };
        if s == "*" {
            Ok(HostPattern::Any)
        } else if let Some(suffix) = s.strip_prefix("*.") {
            if !valid(suffix) || suffix.contains(':') {
                return Err(format!("must be a name, *.suffix or *, got {s:?}"));
            }
            Ok(HostPattern::Suffix(format!(
                ".{}",
                suffix.to_ascii_lowercase()
            )))
        } else if valid(s) && !s.contains('*') {
            Ok(HostPattern::Exact(s.to_ascii_lowercase()))
        } else {
            Err(format!("must be a name, *.suffix or *, got {s:?}"))
        }
    }

    /// How specifically this pattern matches `host` (higher is more specific), or
    /// `None` when it does not match.
    fn rank(&self, host: Option<&str>) -> Option<(u8, usize)> {
        match (self, host) {
            (HostPattern::Any, _) => Some((0, 0)),
            (HostPattern::Suffix(sfx), Some(h)) => {
                let tail = h.len().checked_sub(sfx.len()).map(|at| &h[at..]);
                (h.len() > sfx.len() && tail.is_some_and(|t| t.eq_ignore_ascii_case(sfx)))
                    .then_some((1, sfx.len()))
            }
            (HostPattern::Exact(name), Some(h)) => name.eq_ignore_ascii_case(h).then_some((2, 0)),
            (_, None) => None,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Exact(s) => f.write_str(s),
        }
    }
}

/// The request's host name without port: the `Host` header, or the HTTP/2 authority.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match headers.get(HOST) {
        Some(v) => v.to_str().ok()?,
        None => uri.authority()?.as_str(),
    };
    let host = match raw.strip_prefix('[') {
        Some(v6) => &v6[..v6.find(']')?],
        None => match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        },
    };
    (!host.is_empty()).then_some(host)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

#[derive(Debug, Clone)]
struct Route {
    hosts: Vec<HostPattern>,
    prefix: String,
}

/// Picks a pool (by index) for a host and path.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds a router over `(hosts, path_prefix)` of each pool, in pool order.
    pub fn new<'a>(pools: impl IntoIterator<Item = (&'a [HostPattern], &'a str)>) -> Router {
        let routes = pools
            .into_iter()
            .map(|(hosts, prefix)| Route {
                hosts: hosts.to_vec(),
                prefix: prefix.to_owned(),
            })
            .collect();
        Router { routes }
    }

    /// The index of the pool serving `host` and `path`; the first listed wins a tie.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let mut best: Option<((u8, usize, usize), usize)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            if !prefix_matches(&r.prefix, path) {
                continue;
            }
            let Some((rank, len)) = r.hosts.iter().filter_map(|h| h.rank(host)).max() else {
                continue;
            };
            let score = (rank, len, r.prefix.len());
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(specs: &[(&[&str], &str)]) -> Router {
        let owned: Vec<(Vec<HostPattern>, String)> = specs
            .iter()
            .map(|(hosts, prefix)| {
                let hosts = hosts
                    .iter()
                    .map(|h| HostPattern::parse(h).unwrap())
                    .collect();
                (hosts, prefix.to_string())
            })
            .collect();
        Router::new(owned.iter().map(|(h, p)| (h.as_slice(), p.as_str())))
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let r = router(&[
            (&["*"], "/"),
            (&["*"], "/api"),
            (&["*.example.com"], "/"),
            (&["*.shop.example.com"], "/"),
            (&["www.example.com"], "/"),
            (&["www.example.com"], "/api/"),
        ]);
        let cases = [
            (None, "/", Some(0)),
            (None, "/api", Some(1)),
            (None, "/api/v1", Some(1)),
            (None, "/apix", Some(0)),
            (Some("a.example.com"), "/api", Some(2)),
            (Some("example.com"), "/", Some(0)),
            (Some("x.shop.example.com"), "/", Some(3)),
            (Some("WWW.Example.com"), "/x", Some(4)),
            (Some("www.example.com"), "/api/x", Some(5)),
            (Some("www.example.com"), "/api", Some(4)),
        ];
        for (host, path, want) in cases {
            assert_eq!(r.route(host, path), want, "{host:?} {path}");
        }
    }

    #[test]
    fn no_match_is_none() {
        let r = router(&[(&["a.test"], "/"), (&["*"], "/only")]);
        assert_eq!(r.route(Some("b.test"), "/x"), None);
    }

    #[test]
    fn host_is_taken_without_port() {
        let uri: Uri = "/".parse().unwrap();
        let mut h = HeaderMap::new();
        for (raw, want) in [
            ("a.test:8080", Some("a.test")),
            ("[::1]:80", Some("::1")),
            ("a.test", Some("a.test")),
            (":80", None),
        ] {
            h.insert(HOST, raw.parse().unwrap());
            assert_eq!(request_host(&uri, &h), want, "{raw}");
        }
        let h2: Uri = "https://b.test:443/x".parse().unwrap();
        assert_eq!(request_host(&h2, &HeaderMap::new()), Some("b.test"));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in ["", "a*b", "*.", "**", "a b", "*.x:80"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
