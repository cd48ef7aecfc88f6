//! The gRPC status codes (`grpc-status`), their numbers and names, and a set of them.
//!
//! A vocabulary shared by the data plane (which answers, counts and reads statuses),
//! passive detection (which counts some as an upstream's failure) and the config
//! (which names them), so it sits below all three.

use std::fmt;

/// A gRPC status code, numbered as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code, indexed by its number.
pub const ALL: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// The names, indexed by number, as the gRPC specification spells them.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Longest `grpc-status` value read: codes have at most two digits; a few more allow
/// leading zeros without letting a hostile value make the parse long.
const MAX_STATUS_DIGITS: usize = 8;

impl Code {
    /// The number sent in `grpc-status`.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The specification's name (`UNAVAILABLE`), also the metric label.
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }

    pub fn from_number(n: u64) -> Option<Code> {
        usize::try_from(n).ok().and_then(|i| ALL.get(i).copied())
    }

    /// The code named `name` (case-insensitive: `unavailable` too).
    pub fn from_name(name: &str) -> Option<Code> {
        let i = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name))?;
        Some(ALL[i])
    }

    /// A `grpc-status` value as a client reads it: ASCII digits naming a known code;
    /// digits naming no code are `UNKNOWN` (the specification's rule for codes a
    /// client does not know); anything else is not a status (`None`).
    pub fn from_header(value: &[u8]) -> Option<Code> {
        let digits = value.trim_ascii();
        if digits.is_empty()
            || digits.len() > MAX_STATUS_DIGITS
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        Some(Code::from_number(n).unwrap_or(Code::Unknown))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of codes, one bit each: `Copy`, and a membership test is one AND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodeSet(u32);

impl CodeSet {
    pub const EMPTY: CodeSet = CodeSet(0);

    pub const fn of(codes: &[Code]) -> CodeSet {
        let mut bits = 0;
        let mut i = 0;
        while i < codes.len() {
            bits |= 1 << codes[i] as u32;
            i += 1;
        }
        CodeSet(bits)
    }

    pub fn contains(self, code: Code) -> bool {
        self.0 & (1 << code as u32) != 0
    }

    /// Adds `code`; false when it was already in.
    pub fn insert(&mut self, code: Code) -> bool {
        let had = self.contains(code);
        self.0 |= 1 << code as u32;
        !had
    }

    /// The codes in the set, by number.
    pub fn iter(self) -> impl Iterator<Item = Code> {
        ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_round_trip() {
        for (i, code) in ALL.iter().enumerate() {
            assert_eq!(usize::from(code.number()), i);
            assert_eq!(Code::from_number(i as u64), Some(*code));
            assert_eq!(Code::from_name(code.name()), Some(*code));
            assert_eq!(Code::from_name(&code.name().to_lowercase()), Some(*code));
        }
        assert_eq!(Code::Unavailable.number(), 14);
        assert_eq!(Code::Unavailable.to_string(), "UNAVAILABLE");
        assert_eq!(Code::from_number(17), None);
        assert_eq!(Code::from_name("UNAVAILBLE"), None);
    }

    #[test]
    fn header_values_read_like_a_client_reads_them() {
        assert_eq!(Code::from_header(b"14"), Some(Code::Unavailable));
        assert_eq!(Code::from_header(b" 0 "), Some(Code::Ok));
        assert_eq!(Code::from_header(b"0005"), Some(Code::NotFound));
        // A number no code has is UNKNOWN; so is one too large for any integer.
        assert_eq!(Code::from_header(b"99"), Some(Code::Unknown));
        assert_eq!(Code::from_header(b"99999999"), Some(Code::Unknown));
        for bad in [
            &b""[..],
            b"-1",
            b"1a",
            b"UNAVAILABLE",
            b"999999999",
            b"\xff",
        ] {
            assert_eq!(Code::from_header(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sets_hold_what_was_inserted() {
        let mut set = CodeSet::of(&[Code::Unavailable]);
        assert!(set.contains(Code::Unavailable));
        assert!(!set.contains(Code::Internal));
        assert!(set.insert(Code::Internal));
        assert!(!set.insert(Code::Internal));
        let codes: Vec<Code> = set.iter().collect();
        assert_eq!(codes, [Code::Internal, Code::Unavailable]);
        assert!(!CodeSet::EMPTY.contains(Code::Ok));
    }
}
