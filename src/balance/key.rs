//! Hash keys: which part of a request is hashed onto the ring.
//!
//! A key is one part (`path`, `uri`, `host`, `method`, `client_ip`, `header:NAME`,
//! `cookie:NAME`, `query:NAME`) or a template joining parts with literal text, such as
//! `{header:x-tenant}/{path}`. The parts' bytes are fed straight into MD5, so a key
//! costs no allocation. A key is missing when any part it names is absent; the pool's
//! [`MissingKey`] policy decides what happens then.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;

use http::header::{HeaderName, COOKIE};
use http::{HeaderMap, Method, Uri};
use md5::{Digest, Md5};

use crate::ring;

/// What a request offers to key extraction.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// A parsed `hash_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashKey {
    parts: Vec<Part>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Path,
    Uri,
    Host,
    Method,
    ClientIp,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// What to do when a request lacks its pool's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Hash the client's IP address instead: the client stays sticky.
    #[default]
    ClientIp,
    /// Pick a ring position at random.
    Random,
    /// Answer 400 naming the missing key.
    Reject,
}

impl MissingKey {
    pub fn parse(s: &str) -> Result<MissingKey, String> {
        match s {
            "client_ip" => Ok(MissingKey::ClientIp),
            "random" => Ok(MissingKey::Random),
            "reject" => Ok(MissingKey::Reject),
            other => Err(format!(
                "must be one of client_ip, random, reject, got {other:?}"
            )),
        }
    }
}

impl fmt::Display for MissingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MissingKey::ClientIp => "client_ip",
            MissingKey::Random => "random",
            MissingKey::Reject => "reject",
        })
    }
}

impl Default for HashKey {
    /// The whole request target, path and query: what `hash $request_uri` keys on.
    fn default() -> Self {
        HashKey {
            parts: vec![Part::Uri],
            source: "uri".into(),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

const PART_NAMES: &str = "path, uri, host, method, client_ip, header:NAME, cookie:NAME, query:NAME";

fn parse_part(s: &str) -> Result<Part, String> {
    let named = |kind: &str, name: &str| -> Result<String, String> {
        if name.is_empty() {
            return Err(format!("{kind}: needs a name, as in {kind}:x-tenant"));
        }
        Ok(name.to_owned())
    };
    match s.split_once(':') {
        None => match s {
            "path" => Ok(Part::Path),
            "uri" => Ok(Part::Uri),
            "host" => Ok(Part::Host),
            "method" => Ok(Part::Method),
            "client_ip" => Ok(Part::ClientIp),
            other => Err(format!(
                "unknown key part {other:?}; expected one of {PART_NAMES}"
            )),
        },
        Some(("header", name)) => {
            let name = named("header", name)?;
            HeaderName::from_bytes(name.as_bytes())
                .map(Part::Header)
                .map_err(|_| format!("{name:?} is not a valid header name"))
        }
        Some(("cookie", name)) => named("cookie", name).map(Part::Cookie),
        Some(("query", name)) => named("query", name).map(Part::Query),
        Some((kind, _)) => Err(format!(
            "unknown key part {kind:?}; expected one of {PART_NAMES}"
        )),
    }
}

impl HashKey {
    /// Parses a key: one part name, or a template with parts in braces (`{{` and `}}`
    /// stand for literal braces).
    pub fn parse(s: &str) -> Result<HashKey, String> {
        let parts = if s.contains(['{', '}']) {
            parse_template(s)?
        } else {
            vec![parse_part(s)?]
        };
        Ok(HashKey {
            parts,
            source: s.to_owned(),
        })
    }

    /// The ring position of this request's key, or `None` when a part is missing.
    pub fn hash(&self, input: &KeyInput<'_>) -> Option<u32> {
        let mut md5 = Md5::new();
        for part in &self.parts {
            feed(&mut md5, part, input)?;
        }
        Some(ring::point_of(md5))
    }

    /// The key's bytes for this request, as they are hashed (for tools and tests).
    pub fn extract(&self, input: &KeyInput<'_>) -> Option<Vec<u8>> {
        let mut out = Recorder(Vec::new());
        for part in &self.parts {
            feed(&mut out, part, input)?;
        }
        Some(out.0)
    }
}

fn parse_template(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            literal.push(c);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in key template {s:?}"))?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(parse_part(&rest[1..end])?);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(format!(
                "unmatched '}}' in key template {s:?} (write '}}}}' for a literal brace)"
            ));
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.iter().any(|p| !matches!(p, Part::Literal(_))) {
        return Err(format!(
            "key template {s:?} names no request part; expected one of {PART_NAMES}"
        ));
    }
    Ok(parts)
}

/// Where key bytes go: MD5 on the request path, a buffer for tools.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Md5 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

struct Recorder(Vec<u8>);

impl Sink for Recorder {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

fn feed(sink: &mut impl Sink, part: &Part, input: &KeyInput<'_>) -> Option<()> {
    match part {
        Part::Literal(text) => sink.put(text.as_bytes()),
        Part::Path => sink.put(input.uri.path().as_bytes()),
        Part::Uri => match input.uri.path_and_query() {
            Some(pq) => sink.put(pq.as_str().as_bytes()),
            None => sink.put(b"/"),
        },
        Part::Method => sink.put(input.method.as_str().as_bytes()),
        Part::Host => put_lowercase(
            sink,
            super::request_host(input.uri, input.headers)?.as_bytes(),
        ),
        Part::ClientIp => put_ip(sink, input.client_ip),
        Part::Header(name) => sink.put(input.headers.get(name)?.as_bytes()),
        Part::Cookie(name) => sink.put(cookie(input.headers, name)?),
        Part::Query(name) => sink.put(query(input.uri, name)?),
    }
    Some(())
}

fn put_lowercase(sink: &mut impl Sink, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len()) {
        let out = &mut buf[..chunk.len()];
        out.copy_from_slice(chunk);
        out.make_ascii_lowercase();
        sink.put(out);
    }
}

fn put_ip(sink: &mut impl Sink, ip: IpAddr) {
    // The longest IPv6 text form is 45 bytes.
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{}", ip.to_canonical());
    let len = cursor.position() as usize;
    sink.put(&buf[..len]);
}

/// The value of cookie `name` from the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

/// The raw (not percent-decoded) value of query parameter `name`; `""` when it has no `=`.
fn query<'u>(uri: &'u Uri, name: &str) -> Option<&'u [u8]> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn input<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> KeyInput<'a> {
        KeyInput {
            method: &Method::GET,
            uri,
            headers,
            client_ip: "10.1.2.3".parse().unwrap(),
        }
    }

    fn extract(key: &str, uri: &str, headers: &[(&'static str, &str)]) -> Option<String> {
        let uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        let key = HashKey::parse(key).unwrap();
        let bytes = key.extract(&input(&uri, &map));
        let hash = key.hash(&input(&uri, &map));
        assert_eq!(
            hash,
            bytes.as_deref().map(ring::point),
            "hash agrees with extracted bytes"
        );
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'static str, &'a str)],
        Option<&'a str>,
    );

    #[test]
    fn single_parts() {
        let cases: &[Case] = &[
            ("path", "/a/b?x=1", &[], Some("/a/b")),
            ("uri", "/a/b?x=1", &[], Some("/a/b?x=1")),
            ("method", "/", &[], Some("GET")),
            ("client_ip", "/", &[], Some("10.1.2.3")),
            (
                "host",
                "/",
                &[("host", "Example.COM:8080")],
                Some("example.com"),
            ),
            ("host", "http://h2.example:443/x", &[], Some("h2.example")),
            ("host", "/", &[], None),
            (
                "header:x-tenant",
                "/",
                &[("x-tenant", "acme")],
                Some("acme"),
            ),
            ("header:x-tenant", "/", &[], None),
            (
                "cookie:sid",
                "/",
                &[("cookie", "a=1; sid=xyz ; b=2")],
                Some("xyz"),
            ),
            (
                "cookie:sid",
                "/",
                &[("cookie", "a=1"), ("cookie", "sid=2")],
                Some("2"),
            ),
            ("cookie:sid", "/", &[("cookie", "sidx=1")], None),
            ("query:u", "/p?a=1&u=42&u=43", &[], Some("42")),
            ("query:u", "/p?u", &[], Some("")),
            ("query:u", "/p?uu=1", &[], None),
            ("query:u", "/p", &[], None),
        ];
        for (key, uri, headers, want) in cases {
            assert_eq!(
                extract(key, uri, headers).as_deref(),
                *want,
                "key {key} on {uri} {headers:?}"
            );
        }
    }

    #[test]
    fn templates_join_parts_and_literals() {
        let h = [("x-tenant", "acme")];
        assert_eq!(
            extract("{header:x-tenant}/{path}", "/a?q", &h).as_deref(),
            Some("acme//a")
        );
        assert_eq!(
            extract("t={header:x-tenant};{{m}}={method}", "/", &h).as_deref(),
            Some("t=acme;{m}=GET")
        );
        assert_eq!(
            extract("{header:x-tenant}/{path}", "/a", &[]),
            None,
            "any missing part makes the key missing"
        );
    }

    #[test]
    fn bad_keys_are_rejected_with_a_reason() {
        for (key, needle) in [
            ("pathx", "unknown key part"),
            ("header:", "needs a name"),
            ("header:bad name", "not a valid header name"),
            ("{path", "unclosed"),
            ("path}", "unmatched"),
            ("literal {{only}}", "names no request part"),
            ("{nope}", "unknown key part"),
            ("", "unknown key part"),
        ] {
            let err = HashKey::parse(key).unwrap_err();
            assert!(err.contains(needle), "{key:?}: {err}");
        }
    }

    #[test]
    fn ipv4_mapped_client_is_its_ipv4_address() {
        let uri: Uri = "/".parse().unwrap();
        let headers = HeaderMap::new();
        let mut i = input(&uri, &headers);
        i.client_ip = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            HashKey::parse("client_ip").unwrap().extract(&i).unwrap(),
            b"10.1.2.3"
        );
    }
}
