//! What the data plane knows of gRPC: which requests are gRPC calls, the deadline a
//! call carries (`grpc-timeout`), the status a response ends with, and the shape of
//! the errors ringway answers itself.
//!
//! A request is a gRPC call when its `content-type` is `application/grpc` or
//! `application/grpc+PROTO` / `application/grpc;...`. Its errors are *trailers-only*
//! responses: HTTP 200, `content-type: application/grpc`, `grpc-status` and a
//! percent-encoded `grpc-message` in the head, and no body. A call's status is read
//! from the response head (trailers-only, or an HTTP error status translated as a gRPC
//! client would) or, failing that, from the response trailers.
//!
//! `grpc-timeout` bounds how long ringway waits for the upstream's response head
//! (connects, failover and the upload included). A malformed one is the client's
//! error: the call is answered `INVALID_ARGUMENT` and never forwarded, since an
//! upstream would refuse it too and ignoring it would drop the client's deadline.

use std::fmt;
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

pub use crate::grpc_status::{Code, CodeSet};

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Longest deadline a `grpc-timeout` sets; longer ones are cut to it, never refused
/// (clients send very long deadlines to mean "none"). The deadline only ever
/// shortens the pool's own waits, which are each at most an hour, and this keeps the
/// arithmetic on it far from any overflow.
pub const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Most digits of a `grpc-timeout` value (the gRPC HTTP/2 specification's limit).
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Longest `grpc-message` ringway writes, in bytes before percent-encoding: error
/// texts can quote a request path, and a header should stay small whatever a client
/// sent (encoded, at most three times this).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 512;

/// True for a gRPC call: `content-type` `application/grpc`, or starting
/// `application/grpc+` or `application/grpc;` (case-insensitive).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let Some(head) = ct.get(..GRPC.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(GRPC) && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Why a `grpc-timeout` value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeoutError {
    /// Not one to eight ASCII digits followed by one unit letter.
    Malformed,
    /// More than eight digits.
    TooManyDigits,
    /// A unit other than `H`, `M`, `S`, `m`, `u`, `n`.
    Unit(char),
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed grpc-timeout: ")?;
        match self {
            TimeoutError::Malformed => {
                f.write_str("must be 1 to 8 ASCII digits and a unit (H, M, S, m, u, n)")
            }
            TimeoutError::TooManyDigits => f.write_str("more than 8 digits"),
            TimeoutError::Unit(u) => {
                write!(f, "unit {u:?} is none of H, M, S, m, u, n")
            }
        }
    }
}

impl std::error::Error for TimeoutError {}

/// The call's deadline from its `grpc-timeout` header: `None` when absent, at most
/// [`MAX_GRPC_TIMEOUT`]. A header given twice is malformed (which one holds?).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Result<Duration, TimeoutError>> {
    let mut values = headers.get_all(&GRPC_TIMEOUT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err(TimeoutError::Malformed));
    }
    Some(parse_timeout(value.as_bytes()))
}

fn parse_timeout(value: &[u8]) -> Result<Duration, TimeoutError> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err(TimeoutError::Malformed);
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TimeoutError::Malformed);
    }
    if digits.len() > MAX_TIMEOUT_DIGITS {
        return Err(TimeoutError::TooManyDigits);
    }
    // At most 99,999,999: every product below fits in a u64.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let timeout = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        other if other.is_ascii() => return Err(TimeoutError::Unit(char::from(other))),
        _ => return Err(TimeoutError::Malformed),
    };
    Ok(timeout.min(MAX_GRPC_TIMEOUT))
}

/// `message` as a `grpc-message` value: UTF-8, cut to [`MAX_GRPC_MESSAGE_BYTES`] on a
/// character boundary, then every byte outside printable ASCII, and `%` itself,
/// written `%XX` (the gRPC HTTP/2 specification's percent-encoding).
pub fn encode_message(message: &str) -> HeaderValue {
    let mut end = message.len().min(MAX_GRPC_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end);
    for &b in &message.as_bytes()[..end] {
        match b {
            b' '..=b'~' if b != b'%' => out.push(char::from(b)),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    // Only printable ASCII is left, which is always a valid header value.
    HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A trailers-only gRPC answer: HTTP 200 with the status and message in the head,
/// and `body` (an empty one).
pub fn trailers_only<B>(code: Code, message: &str, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(code.number())),
    );
    headers.insert(GRPC_MESSAGE.clone(), encode_message(message));
    resp
}

/// The status a response head settles for a gRPC call: its `grpc-status` when it
/// has one (a trailers-only answer), else for an HTTP status other than 200 the code
/// a gRPC client makes of it; `None` when the trailers will tell.
pub fn head_status(status: StatusCode, headers: &HeaderMap) -> Option<Code> {
    if let Some(code) = status_in(headers) {
        return Some(code);
    }
    (status != StatusCode::OK).then(|| from_http(status))
}

/// The `grpc-status` in `headers` (a head or trailers), if there is a readable one.
pub fn status_in(headers: &HeaderMap) -> Option<Code> {
    Code::from_header(headers.get(&GRPC_STATUS)?.as_bytes())
}

/// The code a gRPC client makes of an HTTP status without `grpc-status` (the gRPC
/// project's "HTTP to gRPC status code mapping").
pub fn from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn grpc_calls_are_known_by_their_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC+json",
        ] {
            assert!(is_grpc(&with("content-type", &[yes.as_bytes()])), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "application/json",
            "application/gr",
            "",
        ] {
            assert!(!is_grpc(&with("content-type", &[no.as_bytes()])), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    fn timeout(v: &[u8]) -> Option<Result<Duration, TimeoutError>> {
        grpc_timeout(&with("grpc-timeout", &[v]))
    }

    #[test]
    fn timeouts_in_every_unit() {
        let cases: [(&[u8], Duration); 7] = [
            (b"1H", Duration::from_secs(3600)),
            (b"2M", Duration::from_secs(120)),
            (b"3S", Duration::from_secs(3)),
            (b"250m", Duration::from_millis(250)),
            (b"1500u", Duration::from_micros(1500)),
            (b"99999999n", Duration::from_nanos(99_999_999)),
            (b"0m", Duration::ZERO),
        ];
        for (v, d) in cases {
            assert_eq!(timeout(v), Some(Ok(d)), "{v:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn long_timeouts_are_cut_to_the_bound_without_overflow() {
        assert_eq!(timeout(b"99999999H"), Some(Ok(MAX_GRPC_TIMEOUT)));
        assert_eq!(timeout(b"61M"), Some(Ok(MAX_GRPC_TIMEOUT)));
        assert_eq!(timeout(b"3600S"), Some(Ok(MAX_GRPC_TIMEOUT)));
    }

    #[test]
    fn hostile_timeouts_are_refused_with_the_reason() {
        use TimeoutError::*;
        let cases: [(&[u8], TimeoutError); 9] = [
            (b"", Malformed),
            (b"S", Malformed),
            (b"123456789S", TooManyDigits),
            (b"18446744073709551616n", TooManyDigits),
            (b"10s", Unit('s')),
            (b"10", Unit('0')),
            (b"-1S", Malformed),
            (b" 1S", Malformed),
            (b"1\xc3\xa9", Malformed),
        ];
        for (v, why) in cases {
            assert_eq!(timeout(v), Some(Err(why)), "{v:?}");
        }
        let twice = with("grpc-timeout", &[b"1S", b"2S"]);
        assert_eq!(grpc_timeout(&twice), Some(Err(Malformed)));
        assert!(Unit('x').to_string().contains("malformed grpc-timeout"));
    }

    #[test]
    fn messages_are_percent_encoded_and_bounded() {
        assert_eq!(encode_message("no pool serves /a b"), "no pool serves /a b");
        assert_eq!(encode_message("100% done"), "100%25 done");
        assert_eq!(encode_message("caf\u{e9}\n"), "caf%C3%A9%0A");
        assert_eq!(encode_message("\x7f\x1f"), "%7F%1F");
        let long = "\u{e9}".repeat(MAX_GRPC_MESSAGE_BYTES);
        let encoded = encode_message(&long);
        // Cut on a character boundary: whole two-byte characters only.
        assert_eq!(encoded.len(), MAX_GRPC_MESSAGE_BYTES * 3);
        assert!(encoded.to_str().unwrap().ends_with("%C3%A9"));
        let odd = format!("x{long}");
        assert_eq!(
            encode_message(&odd).len(),
            1 + (MAX_GRPC_MESSAGE_BYTES - 2) * 3
        );
    }

    #[test]
    fn trailers_only_answers_carry_status_and_message_in_the_head() {
        let resp = trailers_only(Code::Unavailable, "pool p has no upstreams", ());
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "pool p has no upstreams");
        assert_eq!(head_status(resp.status(), h), Some(Code::Unavailable));
    }

    #[test]
    fn a_head_settles_the_status_only_when_it_can() {
        let none = HeaderMap::new();
        assert_eq!(head_status(StatusCode::OK, &none), None);
        assert_eq!(
            head_status(StatusCode::SERVICE_UNAVAILABLE, &none),
            Some(Code::Unavailable)
        );
        assert_eq!(
            head_status(StatusCode::NOT_FOUND, &none),
            Some(Code::Unimplemented)
        );
        assert_eq!(
            head_status(StatusCode::INTERNAL_SERVER_ERROR, &none),
            Some(Code::Unknown)
        );
        let five = with("grpc-status", &[b"5"]);
        assert_eq!(head_status(StatusCode::OK, &five), Some(Code::NotFound));
        let junk = with("grpc-status", &[b"five"]);
        assert_eq!(status_in(&junk), None);
    }
}
