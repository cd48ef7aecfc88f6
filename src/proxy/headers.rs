//! Header rules for forwarded messages: hop-by-hop headers removed (RFC 9110 §7.6.1),
//! `X-Forwarded-*` and `Via` added, `Host` preserved; `X-Request-Id` and W3C
//! `traceparent` kept when valid and made when not.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{request, Uri, Version};

use super::error::HeadFault;
use crate::config::HeaderWork;

/// The name ringway gives itself in `Via`.
pub const VIA_NAME: &str = "ringway";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The request id header: passed upstream and returned to the client.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Longest `X-Request-Id` kept from a client; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Length of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
const TRACEPARENT_LEN: usize = 55;

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

/// Where a client connection comes from, for the `X-Forwarded-*` headers, and the
/// header work its listener asks for. Made once per connection, so each request only
/// clones the address text.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_ip: IpAddr,
    /// `client_ip` as text (IPv4-mapped addresses as plain IPv4).
    pub client_ip_text: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    pub work: HeaderWork,
}

impl Origin {
    /// A connection from `client_ip`, with all the header work on.
    pub fn new(client_ip: IpAddr, proto: &'static str) -> Origin {
        Origin::with_work(client_ip, proto, HeaderWork::default())
    }

    pub fn with_work(client_ip: IpAddr, proto: &'static str, work: HeaderWork) -> Origin {
        let client_ip = client_ip.to_canonical();
        let client_ip_text = HeaderValue::from_str(&client_ip.to_string())
            .expect("an IP address is a valid header value");
        Origin {
            client_ip,
            client_ip_text,
            proto,
            work,
        }
    }
}

/// Refuses a request head whose meaning an upstream could read differently from
/// ringway: several `Host` headers (which one routed it?), an HTTP/1.1 request without
/// one (RFC 9112 §3.2), and a `Transfer-Encoding` other than a lone `chunked` (hyper
/// decodes the chunking; any other coding would reach the upstream unannounced).
/// The `TE` header (codings the client accepts in the response) is hop-by-hop: only
/// its `trailers` member goes on (see [`prepare_request`]).
pub fn check_request(parts: &request::Parts) -> Result<(), HeadFault> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(HeadFault::DuplicateHost),
        (None, None) if parts.version == Version::HTTP_11 => return Err(HeadFault::MissingHost),
        _ => {}
    }
    let mut codings = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(HeadFault::UnsupportedCoding(transfer_encoding_text(
            &parts.headers,
        ))),
    }
}

/// Every `Transfer-Encoding` value, joined, for an error message.
fn transfer_encoding_text(headers: &HeaderMap) -> String {
    let values: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    values.join(", ")
}

/// Rewrites a client's request head for an HTTP/1.1 upstream, with the header work
/// `origin`'s listener asks for.
pub fn prepare_request(parts: &mut request::Parts, origin: &Origin, upgrade: Option<HeaderValue>) {
    let work = origin.work;
    let via = via_value(parts.version);
    // HTTP/2 has no `Host`, only `:authority`: the upstream needs it as `Host`.
    let host = match (work.forwarded, parts.headers.contains_key(header::HOST)) {
        (true, _) | (false, false) => original_host(parts),
        (false, true) => None,
    };
    let headers = &mut parts.headers;
    let trailers = accepts_trailers(headers);
    strip_hop_by_hop(headers);
    if trailers {
        // ringway passes response trailers through, so it may say it accepts them:
        // gRPC servers require `te: trailers`.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    if work.forwarded {
        append_forwarded_for(headers, &origin.client_ip_text);
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(origin.proto),
        );
    }
    if let Some(host) = host {
        if work.forwarded {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        headers.entry(header::HOST).or_insert(host);
    }
    if work.via {
        append_via(headers, via);
    }
    if let Some(pq) = parts.uri.path_and_query() {
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = Uri::from(pq.clone());
        }
    }
    parts.version = Version::HTTP_11;
}

/// Whether the client's `TE` lists `trailers` (RFC 9110 §10.1.4).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|member| member.split(|&b| b == b';').next().unwrap_or_default())
        .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

/// Rewrites an upstream's response head for the client (adding `Via` when `via`). A
/// `101 Switching Protocols` keeps its `Connection` and `Upgrade` headers: they are the
/// switch.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool, via: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
    if via {
        append_via(headers, HeaderValue::from_static("1.1 ringway"));
    }
}

/// A request's id: the client's `X-Request-Id` when it sent exactly one that is 1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters, otherwise a new one (32 hex digits
/// of a random 128-bit number).
#[derive(Debug, Clone)]
pub enum RequestId {
    Kept(HeaderValue),
    /// Made into a header value each time one is needed: two small copies cost less
    /// than sharing one fresh value (which allocates its shared form anyway).
    Made([u8; 32]),
}

impl RequestId {
    pub fn of(headers: &HeaderMap) -> RequestId {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        match (sent.next(), sent.next()) {
            (Some(id), None) if valid_request_id(id.as_bytes()) => RequestId::Kept(id.clone()),
            _ => RequestId::Made(hex128(fastrand::u128(..))),
        }
    }

    pub fn value(&self) -> HeaderValue {
        match self {
            RequestId::Kept(v) => v.clone(),
            RequestId::Made(hex) => hex_value(hex),
        }
    }
}

fn valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// Sets the tracing headers of a request about to go upstream: `X-Request-Id` to `id`,
/// and the W3C trace context. A single valid `traceparent` passes untouched, with its
/// `tracestate`. Otherwise, absent or invalid, a new trace starts (a random trace-id
/// and parent-id, flags `00`: ringway records nothing, so it does not claim to have
/// sampled) and `tracestate` is removed, since it only means something beside the
/// `traceparent` it came with.
///
/// `id` is `None` when the listener makes no request ids, and `traceparent` false when
/// it starts no traces: what the client sent then passes untouched.
pub fn set_tracing(headers: &mut HeaderMap, id: Option<&RequestId>, traceparent: bool) {
    match id {
        Some(RequestId::Made(hex)) => {
            headers.insert(X_REQUEST_ID.clone(), hex_value(hex));
        }
        // The client's one valid header, in place unless its `Connection` named it.
        Some(RequestId::Kept(v)) => {
            headers.entry(&X_REQUEST_ID).or_insert_with(|| v.clone());
        }
        None => {}
    }
    if !traceparent {
        return;
    }
    match headers.entry(&TRACEPARENT) {
        Entry::Occupied(mut sent) => {
            let mut values = sent.iter();
            if let (Some(tp), None) = (values.next(), values.next()) {
                if valid_traceparent(tp.as_bytes()) {
                    return;
                }
            }
            sent.insert(new_traceparent());
        }
        Entry::Vacant(none) => {
            none.insert(new_traceparent());
        }
    }
    headers.remove(&TRACESTATE);
}

/// The `traceparent` a request carries, when it has one.
pub fn traceparent(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(&TRACEPARENT)
}

/// A `traceparent` as W3C Trace Context level 1 defines it: `VV-TRACEID-PARENTID-FF`
/// in lowercase hex, version not `ff`, ids not all zeros; version `00` exactly 55
/// characters, a later version at least that and followed by `-` if longer.
pub fn valid_traceparent(tp: &[u8]) -> bool {
    if tp.len() < TRACEPARENT_LEN {
        return false;
    }
    let hex =
        |r: std::ops::Range<usize>| tp[r].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |r: std::ops::Range<usize>| tp[r].iter().any(|&b| b != b'0');
    let dashes = tp[2] == b'-' && tp[35] == b'-' && tp[52] == b'-';
    let fields = hex(0..2) && hex(3..35) && hex(36..52) && hex(53..55);
    let version_ok = match &tp[0..2] {
        b"00" => tp.len() == TRACEPARENT_LEN,
        b"ff" => false,
        _ => tp.len() == TRACEPARENT_LEN || tp[TRACEPARENT_LEN] == b'-',
    };
    dashes && fields && version_ok && nonzero(3..35) && nonzero(36..52)
}

/// The trace-id of a valid `traceparent`.
pub fn trace_id(tp: &HeaderValue) -> &str {
    tp.to_str().ok().and_then(|s| s.get(3..35)).unwrap_or("-")
}

fn new_traceparent() -> HeaderValue {
    let mut tp = [0u8; TRACEPARENT_LEN];
    tp[..3].copy_from_slice(b"00-");
    tp[3..35].copy_from_slice(&hex128(fastrand::u128(1..)));
    tp[35] = b'-';
    let span = fastrand::u64(1..);
    tp[36..44].copy_from_slice(&hex32((span >> 32) as u32));
    tp[44..52].copy_from_slice(&hex32(span as u32));
    tp[52..].copy_from_slice(b"-00");
    hex_value(&tp)
}

/// `v` as 32 lowercase hex digits.
fn hex128(v: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&hex32((v >> (96 - 32 * i)) as u32));
    }
    out
}

/// `v` as 8 lowercase hex digits, all at once: each nibble is spread into a byte of
/// its own, then `'0'` is added, and `'a' - '0' - 10` more where the nibble is 10 or
/// more.
fn hex32(v: u32) -> [u8; 8] {
    let x = u64::from(v);
    let mut n = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    n = ((n & 0x0000_ff00_0000_ff00) << 8) | (n & 0x0000_00ff_0000_00ff);
    n = ((n & 0x00f0_00f0_00f0_00f0) << 4) | (n & 0x000f_000f_000f_000f);
    let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (n + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

fn hex_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex digits and dashes are a valid header value")
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
    fn request_heads_with_ambiguous_host_or_codings_are_refused() {
        let check = |b: http::request::Builder| check_request(&parts(b.body(()).unwrap()));
        let get = || Request::get("/x").version(Version::HTTP_11);
        assert_eq!(check(get().header("host", "a")), Ok(()));
        assert_eq!(
            check(get().header("host", "a").header("host", "b")),
            Err(HeadFault::DuplicateHost)
        );
        assert_eq!(check(get()), Err(HeadFault::MissingHost));
        assert_eq!(check(get().version(Version::HTTP_10)), Ok(()));
        assert_eq!(check(get().version(Version::HTTP_2)), Ok(()));
        let te = |v: &str| check(get().header("host", "a").header("transfer-encoding", v));
        assert_eq!(te("chunked"), Ok(()));
        assert_eq!(te(" Chunked "), Ok(()));
        for bad in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked,identity",
        ] {
            assert_eq!(
                te(bad),
                Err(HeadFault::UnsupportedCoding(bad.into())),
                "{bad}"
            );
        }
        let two = get()
            .header("host", "a")
            .header("transfer-encoding", "gzip")
            .header("transfer-encoding", "chunked");
        assert_eq!(
            check(two),
            Err(HeadFault::UnsupportedCoding("gzip, chunked".into()))
        );
    }

    #[test]
    fn te_keeps_only_trailers() {
        for (te, kept) in [
            ("trailers", true),
            ("TRAILERS", true),
            ("gzip;q=0.5, trailers", true),
            ("trailers;q=1", true),
            ("gzip", false),
            ("trailersx", false),
            ("", false),
        ] {
            let mut p = parts(
                Request::post("/pkg.Svc/Call")
                    .header("host", "a.test")
                    .header("te", te)
                    .body(())
                    .unwrap(),
            );
            prepare_request(&mut p, &origin(), None);
            let got: Vec<_> = p.headers.get_all("te").iter().collect();
            match kept {
                true => assert_eq!(got, ["trailers"], "TE {te:?}"),
                false => assert!(got.is_empty(), "TE {te:?} gave {got:?}"),
            }
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut p = parts(
            Request::get("/x")
                .header("host", "a.test")
                .header("connection", "keep-alive, x-secret")
                .header("keep-alive", "timeout=5")
                .header("x-secret", "1")
                .header("te", "gzip;q=0.5")
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
    fn request_ids_are_kept_when_valid_and_made_otherwise() {
        let mut h = HeaderMap::new();
        let request_id = |h: &HeaderMap| RequestId::of(h).value();
        h.insert("x-request-id", HeaderValue::from_static("abc-123_XYZ~"));
        assert_eq!(request_id(&h), "abc-123_XYZ~");
        let long = "a".repeat(MAX_REQUEST_ID_LEN);
        h.insert("x-request-id", HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&h), long.as_str());
        for bad in [
            "",
            "has space",
            "tab\there",
            &"a".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            h.insert("x-request-id", HeaderValue::from_str(bad).unwrap());
            let made = request_id(&h);
            assert_ne!(made, bad);
            assert_eq!(made.len(), 32, "{made:?}");
        }
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(request_id(&h).len(), 32);
        h.insert("x-request-id", HeaderValue::from_static("one"));
        h.append("x-request-id", HeaderValue::from_static("two"));
        assert_eq!(request_id(&h).len(), 32, "two ids are no id");
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn hex_digits_match_the_formatter() {
        for v in [
            0u32,
            1,
            9,
            10,
            15,
            16,
            0xdead_beef,
            0x0123_4567,
            0x89ab_cdef,
            u32::MAX,
        ] {
            assert_eq!(hex32(v), format!("{v:08x}").as_bytes(), "{v:#x}");
        }
        for _ in 0..1000 {
            let v = fastrand::u128(..);
            assert_eq!(hex128(v), format!("{v:032x}").as_bytes());
        }
    }

    #[test]
    fn traceparent_validation_follows_w3c_level_1() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good.as_bytes()));
        assert!(valid_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        // A later version may carry more fields after a dash.
        assert!(valid_traceparent(
            b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(
                !valid_traceparent(bad.as_bytes()),
                "{bad:?} must be invalid"
            );
        }
    }

    #[test]
    fn tracing_headers_keep_a_valid_trace_and_restart_an_invalid_one() {
        let id = RequestId::Kept(HeaderValue::from_static("req-1"));
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        // A kept id is the client's own header, already in place.
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        h.insert("traceparent", HeaderValue::from_static(good));
        h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        set_tracing(&mut h, Some(&id), true);
        assert_eq!(h["traceparent"], good);
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(h["x-request-id"], "req-1");

        h.insert("traceparent", HeaderValue::from_static("00-xyz"));
        set_tracing(&mut h, Some(&id), true);
        let fresh = h["traceparent"].clone();
        assert!(valid_traceparent(fresh.as_bytes()), "{fresh:?}");
        assert!(fresh.to_str().unwrap().ends_with("-00"));
        assert!(!h.contains_key("tracestate"));
        assert_eq!(trace_id(&fresh).len(), 32);

        let mut none = HeaderMap::new();
        none.insert("tracestate", HeaderValue::from_static("orphan=1"));
        set_tracing(&mut none, Some(&id), true);
        let started = none["traceparent"].clone();
        assert!(valid_traceparent(started.as_bytes()));
        assert_ne!(trace_id(&started), trace_id(&fresh));
        assert!(!none.contains_key("tracestate"));
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
