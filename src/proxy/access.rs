//! The access log: one record per request ([`AccessLog`]), made only when a line will
//! be written, and written when the response ends or is dropped, in the format the
//! file's `access_log` section picks.
//!
//! `text` lines go through the process log (target `ringway::access`), so `RUST_LOG`
//! and `--log-format` apply to them as to every other line. `json` and `combined`
//! lines go to standard output through a bounded queue and a writer thread of their
//! own: a slow or blocked stdout drops lines (counted and reported) rather than make a
//! request wait. Every format is off when `access_log.enabled` is false or `RUST_LOG`
//! turns `ringway::access` off, and then no record is made at all.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::{header, HeaderValue, Method, Uri, Version};

use crate::config::access_log::{AccessField, AccessFormat, AccessLog as Spec};

/// Lines waiting for the writer thread. A busy instance writes some tens of thousands
/// of lines a second; this holds a fraction of a second of them (a few MiB at most),
/// enough to ride out a slow write without making the queue a memory sink.
pub const ACCESS_QUEUE_LINES: usize = 16 * 1024;
/// Bytes gathered before one write to stdout: many lines per system call.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Dropped lines are reported at most this often, so an overloaded stdout does not
/// flood the process log too.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a shutdown waits for queued lines to reach stdout: a full queue writes in
/// well under a second; a stdout that is blocked must not hold the exit.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// True when a request's line would be written: the file enables the access log and
/// the process log's filter lets `ringway::access` through at INFO.
pub fn wanted(spec: &Spec) -> bool {
    spec.enabled && tracing::enabled!(target: "ringway::access", tracing::Level::INFO)
}

/// What one request did, written as one log line when its response ends.
#[derive(Debug)]
pub struct AccessLog {
    pub start: Instant,
    pub client_ip: IpAddr,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// `Host` (or the HTTP/2 `:authority`) as the client sent it; kept only when a
    /// line carries it, as are the two headers below.
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub status: u16,
    pub pool: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub bytes_out: u64,
    pub failed: bool,
    pub request_id: Option<HeaderValue>,
    /// The `traceparent` sent upstream.
    pub traceparent: Option<HeaderValue>,
    /// Who failed, when ringway answered with an error: `client`, `upstream`, `proxy`.
    pub fault: Option<&'static str>,
    /// What failed (the error's metric label), when ringway answered with an error.
    pub error: Option<&'static str>,
    spec: Arc<Spec>,
}

impl AccessLog {
    /// Starts the record of a request from `client_ip`, written as `spec` says.
    pub fn new<B>(req: &http::Request<B>, client_ip: IpAddr, spec: Arc<Spec>) -> AccessLog {
        let headers = req.headers();
        let keep = |field, name| {
            spec.has(field)
                .then(|| headers.get(name).cloned())
                .flatten()
        };
        let host = spec.has(AccessField::Host).then(|| {
            headers.get(header::HOST).cloned().or_else(|| {
                let authority = req.uri().authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            })
        });
        AccessLog {
            start: Instant::now(),
            client_ip,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: host.flatten(),
            user_agent: keep(AccessField::UserAgent, header::USER_AGENT),
            referer: keep(AccessField::Referer, header::REFERER),
            status: 0,
            pool: None,
            upstream: None,
            bytes_out: 0,
            failed: false,
            request_id: None,
            traceparent: None,
            fault: None,
            error: None,
            spec,
        }
    }

    fn duration_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    fn trace_id(&self) -> &str {
        self.traceparent
            .as_ref()
            .map_or("-", super::headers::trace_id)
    }

    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// Writes the line through the process log: the fields the file lists, each a
    /// tracing field (absent ones are left out of the event).
    fn write_text(&self) {
        let spec = &*self.spec;
        let on = |f| spec.has(f);
        let text = |f, v: &'static str| on(f).then_some(v);
        tracing::info!(
            target: "ringway::access",
            client_ip = on(AccessField::ClientIp).then(|| display(self.client_ip)),
            method = on(AccessField::Method).then(|| display(&self.method)),
            host = on(AccessField::Host).then(|| header_text(&self.host)),
            path = on(AccessField::Path).then(|| self.uri.path()),
            query = on(AccessField::Query).then(|| self.uri.query().unwrap_or("-")),
            protocol = text(AccessField::Protocol, protocol(self.version)),
            status = on(AccessField::Status).then_some(self.status),
            pool = on(AccessField::Pool).then(|| self.pool.as_deref().unwrap_or("-")),
            upstream = on(AccessField::Upstream).then(|| self.upstream.as_deref().unwrap_or("-")),
            request_id = on(AccessField::RequestId).then(|| self.request_id()),
            trace_id = on(AccessField::TraceId).then(|| self.trace_id()),
            duration_ms = on(AccessField::Duration).then(|| self.duration_ms()),
            bytes = on(AccessField::Bytes).then_some(self.bytes_out),
            aborted = on(AccessField::Aborted).then_some(self.failed),
            fault = on(AccessField::Fault).then(|| self.fault.unwrap_or("-")),
            error = on(AccessField::Error).then(|| self.error.unwrap_or("-")),
            user_agent = on(AccessField::UserAgent).then(|| header_text(&self.user_agent)),
            referer = on(AccessField::Referer).then(|| header_text(&self.referer)),
        );
    }

    /// One JSON object: `time` first, then the fields in the order the file lists
    /// them; a value the request did not have is `null`.
    pub fn json_line(&self, now: SystemTime) -> String {
        let mut line = String::with_capacity(256);
        line.push_str("{\"time\":\"");
        rfc3339(&mut line, now);
        line.push('"');
        for &field in &self.spec.fields {
            let _ = write!(line, ",\"{}\":", field.name());
            self.json_value(&mut line, field);
        }
        line.push('}');
        line
    }

    fn json_value(&self, out: &mut String, field: AccessField) {
        let text = |out: &mut String, s: Option<&str>| match s {
            Some(s) => json_string(out, s),
            None => out.push_str("null"),
        };
        let header = |out: &mut String, v: &Option<HeaderValue>| match v {
            Some(v) => json_string(out, &String::from_utf8_lossy(v.as_bytes())),
            None => out.push_str("null"),
        };
        match field {
            AccessField::ClientIp => json_string(out, &self.client_ip.to_string()),
            AccessField::Host => header(out, &self.host),
            AccessField::Method => json_string(out, self.method.as_str()),
            AccessField::Path => json_string(out, self.uri.path()),
            AccessField::Query => text(out, self.uri.query()),
            AccessField::Protocol => json_string(out, protocol(self.version)),
            AccessField::Status => {
                let _ = write!(out, "{}", self.status);
            }
            AccessField::Bytes => {
                let _ = write!(out, "{}", self.bytes_out);
            }
            AccessField::UserAgent => header(out, &self.user_agent),
            AccessField::Referer => header(out, &self.referer),
            AccessField::Pool => text(out, self.pool.as_deref()),
            AccessField::Upstream => text(out, self.upstream.as_deref()),
            AccessField::Duration => {
                let _ = write!(out, "{:.3}", self.duration_ms());
            }
            AccessField::RequestId => {
                text(out, self.request_id.as_ref().map(|_| self.request_id()))
            }
            AccessField::TraceId => text(out, self.traceparent.as_ref().map(|_| self.trace_id())),
            AccessField::Aborted => out.push_str(if self.failed { "true" } else { "false" }),
            AccessField::Fault => text(out, self.fault),
            AccessField::Error => text(out, self.error),
        }
    }

    /// The Apache/nginx `combined` line:
    /// `IP - - [TIME] "METHOD TARGET PROTOCOL" STATUS BYTES "REFERER" "USER-AGENT"`.
    /// Quotes, backslashes and control bytes inside quoted fields are written `\xHH`,
    /// as nginx does, so a client cannot forge a field.
    pub fn combined_line(&self, now: SystemTime) -> String {
        let mut line = String::with_capacity(256);
        let _ = write!(line, "{} - - [", self.client_ip);
        clf_time(&mut line, now);
        line.push_str("] \"");
        escaped(&mut line, self.method.as_str().as_bytes());
        line.push(' ');
        let target = self
            .uri
            .path_and_query()
            .map_or(self.uri.path(), |pq| pq.as_str());
        escaped(&mut line, target.as_bytes());
        let _ = write!(line, " {}\" {} ", protocol(self.version), self.status);
        match self.bytes_out {
            0 => line.push('-'),
            n => {
                let _ = write!(line, "{n}");
            }
        }
        for v in [&self.referer, &self.user_agent] {
            line.push_str(" \"");
            match v {
                Some(v) => escaped(&mut line, v.as_bytes()),
                None => line.push('-'),
            }
            line.push('"');
        }
        line
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if !self.spec.enabled {
            return;
        }
        match self.spec.format {
            AccessFormat::Text => self.write_text(),
            AccessFormat::Json => stdout_line(self.json_line(SystemTime::now())),
            AccessFormat::Combined => stdout_line(self.combined_line(SystemTime::now())),
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

fn header_text(v: &Option<HeaderValue>) -> String {
    v.as_ref().map_or_else(
        || "-".to_owned(),
        |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
    )
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Printable ASCII as is; `"`, `\`, control bytes and bytes past ASCII as `\xHH`.
fn escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                let _ = write!(out, "\\x{b:02X}");
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day, hour, minute, second, millisecond) of `t` in UTC.
fn utc(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (y, m, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    (
        y,
        m,
        d,
        s / 3600,
        s / 60 % 60,
        s % 60,
        since.subsec_millis(),
    )
}

/// `2026-12-02T08:30:00.123Z`
fn rfc3339(out: &mut String, t: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = utc(t);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
}

/// `02/Dec/2026:08:30:00 +0000`, the common log format's time.
fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = utc(t);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    let _ = write!(out, "{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000");
}

/// Lines dropped because the queue was full (or the writer could not start) since
/// the last report.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not yet written.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Waits (at most [`FLUSH_TIMEOUT`]) until every queued line has been written: called
/// once the listeners have drained, so the last requests' lines are not lost at exit.
pub async fn flushed() {
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    while PENDING.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Queues a line for stdout; never waits. The writer thread starts with the first line.
fn stdout_line(line: String) {
    static QUEUE: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(start_writer);
    PENDING.fetch_add(1, Ordering::AcqRel);
    let sent = queue.as_ref().is_some_and(|q| q.try_send(line).is_ok());
    if !sent {
        PENDING.fetch_sub(1, Ordering::AcqRel);
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn start_writer() -> Option<SyncSender<String>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(ACCESS_QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("ringway-access-log".into())
        .spawn(move || write_lines(rx));
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the access-log writer; json and combined access-log lines are dropped");
            None
        }
    }
}

/// The writer thread: gathers what is queued into one buffer, writes it with one call,
/// and waits for more; ends when every sender is gone.
fn write_lines(rx: Receiver<String>) {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut lines = 0;
    let mut failed = false;
    let mut reported = Instant::now() - DROP_REPORT_INTERVAL;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next.take() {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            lines += 1;
            if buf.len() >= WRITE_BATCH_BYTES {
                flush(&mut buf, &mut failed);
                PENDING.fetch_sub(std::mem::take(&mut lines), Ordering::AcqRel);
            }
            next = rx.try_recv().ok();
        }
        flush(&mut buf, &mut failed);
        PENDING.fetch_sub(std::mem::take(&mut lines), Ordering::AcqRel);
        if reported.elapsed() >= DROP_REPORT_INTERVAL {
            let dropped = DROPPED.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                reported = Instant::now();
                tracing::warn!(
                    dropped,
                    "access-log lines dropped: standard output did not keep up"
                );
            }
        }
    }
}

fn flush(buf: &mut Vec<u8>, failed: &mut bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(buf).and_then(|()| out.flush());
    match written {
        Err(e) if !*failed => {
            *failed = true;
            tracing::error!(error = %e, "cannot write the access log to standard output");
        }
        Err(_) => {}
        Ok(()) => *failed = false,
    }
    buf.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of a finished request; its spec is disabled so that dropping it at
    /// the end of a test writes nothing.
    fn record(spec: Spec) -> AccessLog {
        let req = http::Request::get("/search?q=a%20b")
            .header(header::HOST, "shop.example:8080")
            .header(header::USER_AGENT, "curl/8.5 \"quoted\"")
            .header(header::REFERER, "https://example.org/")
            .body(())
            .unwrap();
        let mut log = AccessLog::new(&req, "192.0.2.7".parse().unwrap(), Arc::new(spec));
        log.status = 200;
        log.bytes_out = 42;
        log.pool = Some("web".into());
        log.upstream = Some("cache-1".into());
        log
    }

    /// 2026-12-02T08:30:05.250Z
    fn when() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_200_205_250)
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_789), (2026, 12, 2));
    }

    #[test]
    fn combined_lines_read_as_apache_writes_them() {
        let mut log = record(Spec::new(false, AccessFormat::Combined, Vec::new()));
        let line = log.combined_line(when());
        assert_eq!(
            line,
            "192.0.2.7 - - [02/Dec/2026:08:30:05 +0000] \"GET /search?q=a%20b HTTP/1.1\" 200 42 \
             \"https://example.org/\" \"curl/8.5 \\x22quoted\\x22\""
        );
        log.bytes_out = 0;
        log.referer = None;
        assert!(log
            .combined_line(when())
            .ends_with("200 - \"-\" \"curl/8.5 \\x22quoted\\x22\""));
    }

    #[test]
    fn json_lines_carry_the_listed_fields_in_order() {
        let fields = vec![
            AccessField::Status,
            AccessField::ClientIp,
            AccessField::Host,
            AccessField::Query,
            AccessField::UserAgent,
            AccessField::RequestId,
        ];
        let log = record(Spec::new(false, AccessFormat::Json, fields));
        let line = log.json_line(when());
        assert_eq!(
            line,
            "{\"time\":\"2026-12-02T08:30:05.250Z\",\"status\":200,\"client_ip\":\"192.0.2.7\",\
             \"host\":\"shop.example:8080\",\"query\":\"q=a%20b\",\
             \"user_agent\":\"curl/8.5 \\\"quoted\\\"\",\"request_id\":null}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user_agent"], "curl/8.5 \"quoted\"");
    }

    #[test]
    fn headers_not_logged_are_not_kept() {
        let log = record(Spec::new(
            false,
            AccessFormat::Json,
            vec![AccessField::Status],
        ));
        assert!(log.host.is_none() && log.user_agent.is_none() && log.referer.is_none());
    }
}
