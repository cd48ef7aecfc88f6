//! The `access_log` section: whether each request writes a line, in which format,
//! and with which fields.

use std::fmt;

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// Through the process log (target `ringway::access`, level INFO): `key=value`
    /// fields, or the `fields` object of each JSON line under `--log-format json`.
    Text,
    /// One JSON object per request on standard output, fields in the order listed.
    Json,
    /// The Apache/nginx `combined` format on standard output (fixed fields).
    Combined,
}

impl AccessFormat {
    pub const NAMES: &'static str = "text, json or combined";

    pub fn parse(s: &str) -> Option<AccessFormat> {
        Some(match s {
            "text" => AccessFormat::Text,
            "json" => AccessFormat::Json,
            "combined" => AccessFormat::Combined,
            _ => return None,
        })
    }
}

/// One field an access-log line can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessField {
    ClientIp,
    Host,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    Bytes,
    UserAgent,
    Referer,
    Pool,
    Upstream,
    Duration,
    RequestId,
    TraceId,
    Aborted,
    Fault,
    Error,
}

impl AccessField {
    /// Every field, in the order the text format writes them.
    pub const ALL: [AccessField; 18] = [
        AccessField::ClientIp,
        AccessField::Method,
        AccessField::Host,
        AccessField::Path,
        AccessField::Query,
        AccessField::Protocol,
        AccessField::Status,
        AccessField::Pool,
        AccessField::Upstream,
        AccessField::RequestId,
        AccessField::TraceId,
        AccessField::Duration,
        AccessField::Bytes,
        AccessField::Aborted,
        AccessField::Fault,
        AccessField::Error,
        AccessField::UserAgent,
        AccessField::Referer,
    ];

    /// The fields written when the file does not list any: who asked for what, how
    /// it went and where it went.
    pub const DEFAULT: [AccessField; 16] = [
        AccessField::ClientIp,
        AccessField::Method,
        AccessField::Host,
        AccessField::Path,
        AccessField::Query,
        AccessField::Status,
        AccessField::Pool,
        AccessField::Upstream,
        AccessField::RequestId,
        AccessField::TraceId,
        AccessField::Duration,
        AccessField::Bytes,
        AccessField::Aborted,
        AccessField::Fault,
        AccessField::Error,
        AccessField::UserAgent,
    ];

    /// The field's name in the file, and its key in text and JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            AccessField::ClientIp => "client_ip",
            AccessField::Host => "host",
            AccessField::Method => "method",
            AccessField::Path => "path",
            AccessField::Query => "query",
            AccessField::Protocol => "protocol",
            AccessField::Status => "status",
            AccessField::Bytes => "bytes",
            AccessField::UserAgent => "user_agent",
            AccessField::Referer => "referer",
            AccessField::Pool => "pool",
            AccessField::Upstream => "upstream",
            AccessField::Duration => "duration_ms",
            AccessField::RequestId => "request_id",
            AccessField::TraceId => "trace_id",
            AccessField::Aborted => "aborted",
            AccessField::Fault => "fault",
            AccessField::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<AccessField> {
        AccessField::ALL.into_iter().find(|f| f.name() == s)
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl fmt::Display for AccessField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the access log writes (`access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// `false`: no line, and no record made on the request path.
    pub enabled: bool,
    pub format: AccessFormat,
    /// The fields of a text or JSON line, in the order listed (the text format writes
    /// them in [`AccessField::ALL`]'s order). The combined format has its own.
    pub fields: Vec<AccessField>,
    /// `fields` as a bit set, for the request path's checks.
    mask: u32,
}

impl AccessLog {
    pub fn new(enabled: bool, format: AccessFormat, fields: Vec<AccessField>) -> AccessLog {
        let fields = match format {
            AccessFormat::Combined => vec![
                AccessField::ClientIp,
                AccessField::Method,
                AccessField::Path,
                AccessField::Query,
                AccessField::Protocol,
                AccessField::Status,
                AccessField::Bytes,
                AccessField::Referer,
                AccessField::UserAgent,
            ],
            _ => fields,
        };
        let mask = fields.iter().fold(0, |m, f| m | f.bit());
        AccessLog {
            enabled,
            format,
            fields,
            mask,
        }
    }

    /// True when lines carry `field`.
    pub fn has(&self, field: AccessField) -> bool {
        self.mask & field.bit() != 0
    }
}

impl Default for AccessLog {
    fn default() -> AccessLog {
        AccessLog::new(true, AccessFormat::Text, AccessField::DEFAULT.to_vec())
    }
}
