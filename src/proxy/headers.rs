//! Header rules for forwarded messages: hop-by-hop headers removed (RFC 9110 §7.6.1),
//! `X-Forwarded-*` and `Via` added, `Host` preserved.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Uri, Version};

/// The name ringway gives itself in `Via`.
pub const VIA_NAME: &str = "ringway";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never the message.
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present marks which hop-by-hop names to remove: cheaper
    // than looking up all nine, and most messages carry none or only `Connection`.
    let hop = hop_by_hop();
    let mut present = [false; 9];
    for name in headers.keys() {
        if let Some(i) = hop.iter().position(|h| *h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        remove_connection_named(headers);
    }
    for (name, _) in hop.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*name);
    }
}

/// Removes the headers `Connection` names. The usual options (`close`, `keep-alive`,
/// `upgrade`) name no end-to-end header, so they cost no allocation.
fn remove_connection_named(headers: &mut HeaderMap) {
    const OPTIONS: [&str; 4] = ["close", "keep-alive", "upgrade", ""];
    let names: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|t| !OPTIONS.iter().any(|o| o.eq_ignore_ascii_case(t)))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// True when the request asks to switch protocols (`Connection: upgrade` with an
/// `Upgrade` header), as WebSocket does.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let proto = headers.get(header::UPGRADE)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| proto.clone())
}

/// Where a client connection comes from, for the `X-Forwarded-*` headers. Made once
/// per connection, so each request only clones the address text.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_ip: IpAddr,
    /// `client_ip` as text (IPv4-mapped addresses as plain IPv4).
    pub client_ip_text: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
}

impl Origin {
    pub fn new(client_ip: IpAddr, proto: &'static str) -> Origin {
        let client_ip = client_ip.to_canonical();
        let client_ip_text = HeaderValue::from_str(&client_ip.to_string())
            .expect("an IP address is a valid header value");
        Origin {
            client_ip,
            client_ip_text,
            proto,
        }
    }
}

/// Rewrites a client's request head for an HTTP/1.1 upstream.
pub fn prepare_request(parts: &mut request::Parts, origin: &Origin, upgrade: Option<HeaderValue>) {
    let host = original_host(parts);
    let via = via_value(parts.version);
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    append_forwarded_for(headers, &origin.client_ip_text);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(origin.proto),
    );
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        headers.entry(header::HOST).or_insert(host);
    }
    append_via(headers, via);
    if let Some(pq) = parts.uri.path_and_query() {
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = Uri::from(pq.clone());
        }
    }
    parts.version = Version::HTTP_11;
}

/// Rewrites an upstream's response head for the client. A `101 Switching Protocols`
/// keeps its `Connection` and `Upgrade` headers: they are the switch.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    append_via(headers, HeaderValue::from_static("1.1 ringway"));
}

/// The client's `Host`, or for HTTP/2 its `:authority`.
fn original_host(parts: &request::Parts) -> Option<HeaderValue> {
    if let Some(h) = parts.headers.get(header::HOST) {
        return Some(h.clone());
    }
    let authority = parts.uri.authority()?;
    HeaderValue::from_str(authority.as_str()).ok()
}

fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 ringway",
        Version::HTTP_2 => "2.0 ringway",
        _ => "1.1 ringway",
    })
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let mut prior = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    if prior.peek().is_none() {
        headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        return;
    }
    let mut value: Vec<&str> = prior.collect();
    let ip = ip.to_str().unwrap_or_default();
    value.push(ip);
    if let Ok(v) = HeaderValue::from_str(&value.join(", ")) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

fn append_via(headers: &mut HeaderMap, ours: HeaderValue) {
    headers.append(header::VIA, ours);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: Request<()>) -> request::Parts {
        req.into_parts().0
    }

    fn origin() -> Origin {
        Origin::new("10.0.0.9".parse().unwrap(), "http")
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut p = parts(
            Request::get("/x")
                .header("host", "a.test")
                .header("connection", "keep-alive, x-secret")
                .header("keep-alive", "timeout=5")
                .header("x-secret", "1")
                .header("te", "trailers")
                .header("proxy-authorization", "Basic Zm9v")
                .header("x-kept", "yes")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut p, &origin(), None);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "proxy-authorization",
        ] {
            assert!(!p.headers.contains_key(gone), "{gone} must be removed");
        }
        assert_eq!(p.headers["x-kept"], "yes");
        assert_eq!(p.headers["host"], "a.test");
        assert_eq!(p.headers["x-forwarded-host"], "a.test");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["x-forwarded-for"], "10.0.0.9");
        assert_eq!(p.headers["via"], "1.1 ringway");
    }

    #[test]
    fn forwarded_for_and_via_are_appended() {
        let mut p = parts(
            Request::get("/")
                .header("x-forwarded-for", "1.1.1.1")
                .header("x-forwarded-for", "2.2.2.2")
                .header("via", "1.0 edge")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut p, &origin(), None);
        assert_eq!(p.headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        let via: Vec<_> = p.headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.0 edge", "1.1 ringway"]);
    }

    #[test]
    fn http2_authority_becomes_host_and_uri_origin_form() {
        let mut p = parts(
            Request::get("http://b.test:8080/p?q=1")
                .version(Version::HTTP_2)
                .body(())
                .unwrap(),
        );
        prepare_request(&mut p, &origin(), None);
        assert_eq!(p.headers["host"], "b.test:8080");
        assert_eq!(p.uri, "/p?q=1");
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(p.headers["via"], "2.0 ringway");
    }

    #[test]
    fn upgrade_keeps_its_switch_headers() {
        let mut p = parts(
            Request::get("/ws")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(())
                .unwrap(),
        );
        let up = upgrade_requested(&p.headers);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        prepare_request(&mut p, &origin(), up);
        assert_eq!(p.headers["connection"], "upgrade");
        assert_eq!(p.headers["upgrade"], "websocket");
    }
}
