//! The part of RFC 9111 the cache follows: what may be stored, for how long, and
//! what may be served stale. Pure functions of headers and times, so each directive
//! is tested on its own.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, StatusCode};

/// The longest lifetime or allowance read from a header: one year. Larger values
/// (and overflowing ones, which RFC 9111 §1.2.2 says to treat as the largest) are
/// cut to it.
pub const MAX_DELTA_SECONDS: u64 = 365 * 24 * 3600;

/// The directives of one `Cache-Control` (all of its field lines).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// Reads every `Cache-Control` line of `headers`. Unknown directives are
    /// ignored (§5.2.3); a known one with an unreadable argument counts as absent,
    /// except that a bad `max-age` makes the response stale (§4.2.1).
    pub fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for item in line.split(',') {
                d.read(item.trim());
            }
        }
        d
    }

    fn read(&mut self, item: &str) {
        let (name, arg) = match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (item, None),
        };
        let seconds = || arg.map(delta_seconds);
        match name.to_ascii_lowercase().as_str() {
            "max-age" => self.max_age = Some(seconds().flatten().unwrap_or(0)),
            "s-maxage" => self.s_maxage = Some(seconds().flatten().unwrap_or(0)),
            "no-store" => self.no_store = true,
            // `no-cache="field"` limits no-cache to fields; treating it as the bare
            // directive is the safe reading (§5.2.2.4).
            "no-cache" => self.no_cache = true,
            // Likewise `private="field"`: not stored at all.
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "stale-while-revalidate" => self.stale_while_revalidate = seconds().flatten(),
            "stale-if-error" => self.stale_if_error = seconds().flatten(),
            _ => {}
        }
    }

    /// Stale responses may not be served at all (§4.2.4): `must-revalidate`,
    /// `proxy-revalidate`, or `s-maxage` (which implies proxy-revalidate, §5.2.2.10).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

/// A `delta-seconds` argument: digits only; too large is [`MAX_DELTA_SECONDS`].
fn delta_seconds(arg: &str) -> Option<u64> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        arg.parse::<u64>()
            .unwrap_or(u64::MAX)
            .min(MAX_DELTA_SECONDS),
    )
}

/// Why a request is not answered from the cache, nor its response stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not GET or HEAD.
    Method,
    /// A `Range` request (partial content is not cached).
    Range,
    /// The client's `Cache-Control: no-store`.
    NoStore,
}

/// What the request itself says about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRules {
    /// `Authorization` or `Cookie`: only responses that say they may be shared
    /// (`public`, `s-maxage`) are stored for, or served to, such a request.
    pub credentialed: bool,
    /// The client asked for a response validated upstream (`no-cache`,
    /// `max-age=0`, `Pragma: no-cache`): no stored response is served without it.
    pub revalidate: bool,
}

/// How the cache may treat `method` with `headers`, or why it must stay out.
pub fn request_rules(method: &Method, headers: &HeaderMap) -> Result<RequestRules, Bypass> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Bypass::Method);
    }
    if headers.contains_key(header::RANGE) {
        return Err(Bypass::Range);
    }
    let d = Directives::of(headers);
    if d.no_store {
        return Err(Bypass::NoStore);
    }
    let pragma_no_cache = headers.get_all(header::PRAGMA).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
    });
    Ok(RequestRules {
        credentialed: headers.contains_key(header::AUTHORIZATION)
            || headers.contains_key(header::COOKIE),
        revalidate: d.no_cache || d.max_age == Some(0) || pragma_no_cache,
    })
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    /// A credentialed request and a response that does not say it may be shared.
    Credentialed,
    /// No explicit lifetime and nothing to revalidate with.
    NoLifetime,
    /// `Content-Length` above `max_object_bytes`.
    TooLarge,
}

/// Final statuses stored when the response gives a lifetime: those RFC 9110 §15.1
/// calls heuristically cacheable, which clients expect caches to keep.
fn storable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// How long a stored response stays fresh, and what it allows once stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// The freshness lifetime (§4.2.1); zero for `no-cache` (validate every use).
    pub fresh: Duration,
    /// The response's age when it arrived (§4.2.3: the larger of `Age` and the
    /// time since `Date`).
    pub initial_age: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Served to credentialed requests too (`public` or `s-maxage`).
    pub shared: bool,
}

/// Whether a response to a request under `rules` may be stored, and for how long.
pub fn storable(
    rules: RequestRules,
    status: StatusCode,
    headers: &HeaderMap,
    max_object_bytes: u64,
    now: SystemTime,
) -> Result<Lifetime, NotStored> {
    if !storable_status(status) {
        return Err(NotStored::Status);
    }
    let d = Directives::of(headers);
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    // Storing without the cookie would hand other clients a response that was
    // meant to set one; storing with it would hand them the cookie.
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryStar);
    }
    let shared = d.public || d.s_maxage.is_some();
    // §3.5: a response to a request with credentials is stored only when it says
    // it may be shared (`must-revalidate` also allows it; it is not taken as enough
    // here, since it says nothing about other users).
    if rules.credentialed && !shared {
        return Err(NotStored::Credentialed);
    }
    if content_length(headers).is_some_and(|n| n > max_object_bytes) {
        return Err(NotStored::TooLarge);
    }
    let date = headers.get(header::DATE).and_then(http_date);
    let fresh = match (d.s_maxage, d.max_age, headers.get(header::EXPIRES)) {
        (Some(s), _, _) | (None, Some(s), _) => Some(Duration::from_secs(s)),
        (None, None, Some(expires)) => Some(match http_date(expires) {
            Some(at) => at
                .duration_since(date.unwrap_or(now))
                .unwrap_or(Duration::ZERO),
            // An invalid Expires (such as "0") means already expired (§5.3).
            None => Duration::ZERO,
        }),
        (None, None, None) => None,
    };
    let fresh = match (fresh, d.no_cache) {
        (_, true) => Duration::ZERO,
        (Some(f), false) => f,
        (None, false) => return Err(NotStored::NoLifetime),
    };
    if fresh.is_zero() && !has_validator(headers) {
        return Err(NotStored::NoLifetime);
    }
    let age_header = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(delta_seconds)
        .unwrap_or(0);
    let apparent = date
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    let initial_age = Duration::from_secs(age_header).max(apparent);
    let stale = |v: Option<u64>| match d.forbids_stale() {
        true => Duration::ZERO,
        false => Duration::from_secs(v.unwrap_or(0)),
    };
    Ok(Lifetime {
        fresh,
        initial_age,
        stale_while_revalidate: stale(d.stale_while_revalidate),
        stale_if_error: stale(d.stale_if_error),
        shared,
    })
}

/// The request header names a response varies on; `None` for `Vary: *` (never
/// stored: no later request could be shown to match).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<header::HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        let Ok(line) = line.to_str() else { return None };
        for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            // An unreadable name cannot be matched: as `*`.
            let name = header::HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// `ETag` or `Last-Modified`: a stale copy can be revalidated.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether a request's own validators match a stored response, so that a cache
/// answers `304 Not Modified` (RFC 9110 §13.2.2, §13.1.1, §13.1.3; only for a
/// stored 200): `If-None-Match` by weak comparison (or `*`), and only without it,
/// `If-Modified-Since` against the stored `Last-Modified`. A field that does not
/// parse counts as no match: the client gets the whole response.
pub fn not_modified(request: &HeaderMap, status: StatusCode, stored: &HeaderMap) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    let mut inm = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        let etag = stored
            .get(header::ETAG)
            .and_then(|v| opaque_tag(v.as_bytes()));
        return inm.any(|v| entity_tags_match(v.as_bytes(), etag));
    }
    let (Some(since), Some(modified)) = (
        request.get(header::IF_MODIFIED_SINCE).and_then(http_date),
        stored.get(header::LAST_MODIFIED).and_then(http_date),
    ) else {
        return false;
    };
    modified <= since
}

/// The opaque tag of one entity tag (`"x"` or `W/"x"`), quotes included.
fn opaque_tag(v: &[u8]) -> Option<&[u8]> {
    let v = v.strip_prefix(b"W/").unwrap_or(v);
    (v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' && !v[1..v.len() - 1].contains(&b'"'))
        .then_some(v)
}

/// Whether one `If-None-Match` field value (`*`, or a list of entity tags, whose
/// tags may hold commas) matches `etag` by weak comparison.
fn entity_tags_match(list: &[u8], etag: Option<&[u8]>) -> bool {
    let trimmed = list.trim_ascii();
    if trimmed == b"*" {
        return true;
    }
    let Some(etag) = etag else {
        return false;
    };
    let mut rest = trimmed;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(r) = rest.strip_prefix(b",") {
            rest = r.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(close) = tag.iter().skip(1).position(|&b| b == b'"') else {
            return false;
        };
        let (this, after) = tag.split_at(close + 2);
        if this[0] != b'"' {
            return false;
        }
        if this == etag {
            return true;
        }
        rest = after;
    }
}

/// An HTTP-date (IMF-fixdate, the form servers send; the obsolete forms are read
/// as invalid).
pub fn http_date(v: &http::HeaderValue) -> Option<SystemTime> {
    let s = v.to_str().ok()?;
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let b = s.as_bytes();
    if b.len() != 29 || &s[25..] != " GMT" || b[3] != b',' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let day = num(5..7)?;
    let month = match s.get(8..11)? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year = num(12..16)?;
    let (h, m, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` as an IMF-fixdate.
pub fn fmt_http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const ANON: RequestRules = RequestRules {
        credentialed: false,
        revalidate: false,
    };

    #[test]
    fn dates_round_trip() {
        let v = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        let t = http_date(&v).unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert_eq!(fmt_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(&HeaderValue::from_static("0")), None);
    }

    #[test]
    fn conditional_requests_match_the_stored_response() {
        const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
        let stored = headers(&[("etag", "\"a,b\""), ("last-modified", LM)]);
        let weak = headers(&[("etag", "W/\"v1\"")]);
        let ok = StatusCode::OK;
        // (request fields, stored fields, status, 304?)
        type Row<'a> = (&'a [(&'a str, &'a str)], &'a HeaderMap, StatusCode, bool);
        let table: &[Row] = &[
            (&[("if-none-match", "\"a,b\"")], &stored, ok, true),
            (&[("if-none-match", "W/\"a,b\"")], &stored, ok, true),
            (&[("if-none-match", "\"x\", \"a,b\"")], &stored, ok, true),
            (
                &[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")],
                &stored,
                ok,
                true,
            ),
            (&[("if-none-match", "*")], &stored, ok, true),
            (&[("if-none-match", "\"a\"")], &stored, ok, false),
            (&[("if-none-match", "\"a,b")], &stored, ok, false),
            (&[("if-none-match", "a,b")], &stored, ok, false),
            (&[("if-none-match", "")], &stored, ok, false),
            (&[("if-none-match", "\"v1\"")], &weak, ok, true),
            (&[("if-none-match", "\"v1\"")], &headers(&[]), ok, false),
            (
                &[("if-none-match", "*")],
                &stored,
                StatusCode::NOT_FOUND,
                false,
            ),
            (
                &[("if-none-match", "\"a,b\"")],
                &stored,
                StatusCode::NOT_FOUND,
                false,
            ),
            (&[("if-modified-since", LM)], &stored, ok, true),
            (
                &[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")],
                &stored,
                ok,
                true,
            ),
            (
                &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
                &stored,
                ok,
                false,
            ),
            (&[("if-modified-since", "yesterday")], &stored, ok, false),
            (&[("if-modified-since", LM)], &weak, ok, false),
            // If-None-Match decides alone when present.
            (
                &[("if-none-match", "\"x\""), ("if-modified-since", LM)],
                &stored,
                ok,
                false,
            ),
            (&[], &stored, ok, false),
        ];
        for (i, (req, stored, status, want)) in table.iter().enumerate() {
            assert_eq!(
                not_modified(&headers(req), *status, stored),
                *want,
                "row {i}: {req:?}"
            );
        }
    }

    #[test]
    fn directive_table() {
        let now = SystemTime::now();
        let date = fmt_http_date(now);
        let later = fmt_http_date(now + Duration::from_secs(120));
        type Case<'a> = (Vec<(&'a str, &'a str)>, Result<u64, NotStored>);
        let cases: Vec<Case> = vec![
            (vec![("cache-control", "max-age=60")], Ok(60)),
            (vec![("cache-control", "max-age=60, s-maxage=30")], Ok(30)),
            (
                vec![("cache-control", "no-store, max-age=60")],
                Err(NotStored::NoStore),
            ),
            (
                vec![("cache-control", "private, max-age=60")],
                Err(NotStored::Private),
            ),
            (
                vec![("cache-control", "no-cache")],
                Err(NotStored::NoLifetime),
            ),
            (
                vec![("cache-control", "no-cache"), ("etag", "\"a\"")],
                Ok(0),
            ),
            (vec![("date", &date), ("expires", &later)], Ok(120)),
            (vec![("expires", "0"), ("etag", "\"a\"")], Ok(0)),
            (vec![], Err(NotStored::NoLifetime)),
            (
                vec![("cache-control", "max-age=60"), ("set-cookie", "a=b")],
                Err(NotStored::SetCookie),
            ),
            (
                vec![("cache-control", "max-age=60"), ("vary", "*")],
                Err(NotStored::VaryStar),
            ),
            (
                vec![("cache-control", "max-age=60"), ("content-length", "2000")],
                Err(NotStored::TooLarge),
            ),
        ];
        for (pairs, want) in cases {
            let got = storable(ANON, StatusCode::OK, &headers(&pairs), 1000, now)
                .map(|l| l.fresh.as_secs());
            assert_eq!(got, want, "{pairs:?}");
        }
    }

    #[test]
    fn credentials_need_a_shareable_response() {
        let now = SystemTime::now();
        let cred = RequestRules {
            credentialed: true,
            revalidate: false,
        };
        let plain = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(
            storable(cred, StatusCode::OK, &plain, 10, now),
            Err(NotStored::Credentialed)
        );
        let public = headers(&[("cache-control", "public, max-age=60")]);
        assert!(
            storable(cred, StatusCode::OK, &public, 10, now)
                .unwrap()
                .shared
        );
        let s = headers(&[("cache-control", "s-maxage=60")]);
        assert!(storable(cred, StatusCode::OK, &s, 10, now).is_ok());
    }

    #[test]
    fn stale_allowances_and_must_revalidate() {
        let now = SystemTime::now();
        let h = headers(&[(
            "cache-control",
            "max-age=1, stale-while-revalidate=30, stale-if-error=60",
        )]);
        let l = storable(ANON, StatusCode::OK, &h, 10, now).unwrap();
        assert_eq!(l.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(l.stale_if_error, Duration::from_secs(60));
        let h = headers(&[(
            "cache-control",
            "max-age=1, must-revalidate, stale-if-error=60",
        )]);
        let l = storable(ANON, StatusCode::OK, &h, 10, now).unwrap();
        assert_eq!(l.stale_if_error, Duration::ZERO);
        let h = headers(&[("cache-control", "max-age=10"), ("age", "4")]);
        assert_eq!(
            storable(ANON, StatusCode::OK, &h, 10, now)
                .unwrap()
                .initial_age,
            Duration::from_secs(4)
        );
    }

    #[test]
    fn statuses_and_requests() {
        let now = SystemTime::now();
        let h = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(
            storable(ANON, StatusCode::INTERNAL_SERVER_ERROR, &h, 10, now),
            Err(NotStored::Status)
        );
        assert!(storable(ANON, StatusCode::NOT_FOUND, &h, 10, now).is_ok());
        assert_eq!(
            request_rules(&Method::POST, &HeaderMap::new()),
            Err(Bypass::Method)
        );
        assert_eq!(
            request_rules(&Method::GET, &headers(&[("range", "bytes=0-1")])),
            Err(Bypass::Range)
        );
        assert_eq!(
            request_rules(&Method::GET, &headers(&[("cache-control", "no-store")])),
            Err(Bypass::NoStore)
        );
        let r = request_rules(
            &Method::HEAD,
            &headers(&[("cookie", "a=b"), ("pragma", "no-cache")]),
        )
        .unwrap();
        assert!(r.credentialed && r.revalidate);
        assert_eq!(
            vary_names(&headers(&[("vary", "Accept-Encoding, accept")]))
                .unwrap()
                .len(),
            2
        );
    }
}
