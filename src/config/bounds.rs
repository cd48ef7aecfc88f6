//! The one set of bounds on every value that reaches the replicated state, and on the
//! config file itself.
//!
//! The file's build (`ringway check`, `run` and reload), the admin API's body parsers
//! and apply in [`crate::cluster::state`] all check these, so whatever a file or an
//! operator may write, the cluster applies, and whatever the cluster refuses, the file
//! and the admin API refuse first with a clear error.
//!
//! Ring points: an upstream of weight `w` in a pool of `vnodes` owns `vnodes * w`
//! points, so a pool's ring holds `vnodes * Σw` points. The replicated state knows the
//! weights but not `vnodes` (a pool's vnodes come from the file), so the bounds on
//! points are kept as bounds on weights, sized against the largest `vnodes`:
//! `vnodes <= MAX_VNODES` and `Σw <= MAX_POOL_WEIGHT` give a pool at most
//! [`MAX_POINTS_PER_POOL`] points whatever the admin API adds, and the cluster at most
//! [`MAX_TOTAL_POINTS`].
//!
//! Pure: no I/O.

use std::fmt;

/// Heaviest upstream. With the default 150 virtual nodes it owns 150,000 ring points,
/// far past any useful skew; larger is a typo.
pub const MAX_WEIGHT: u32 = 1000;
/// Most ring points per unit of weight. The reference ring uses 150 and ketama 160;
/// past a few hundred, a ring gets no smoother, only larger.
pub const MAX_VNODES: u32 = 400;
/// Most ring points one pool may hold: 16 MB of ring at [`BYTES_PER_POINT`] (twice
/// that while a new ring is built beside the one in use).
pub const MAX_POINTS_PER_POOL: u64 = 2_000_000;
/// Most ring points all pools together may hold: 32 MB of rings.
pub const MAX_TOTAL_POINTS: u64 = 4_000_000;
/// Memory of one ring point once built: a `u32` hash and a `u32` upstream index.
pub const BYTES_PER_POINT: u64 = 8;
/// Most weight (the sum of its upstreams' weights, draining ones included: they may
/// return) one pool may hold: [`MAX_POINTS_PER_POOL`] at [`MAX_VNODES`].
pub const MAX_POOL_WEIGHT: u64 = MAX_POINTS_PER_POOL / MAX_VNODES as u64;
/// Most weight all pools together may hold: [`MAX_TOTAL_POINTS`] at [`MAX_VNODES`].
pub const MAX_TOTAL_WEIGHT: u64 = MAX_TOTAL_POINTS / MAX_VNODES as u64;
/// Most upstreams one pool may hold. Every upstream weighs at least 1, so a pool of
/// more would be over [`MAX_POOL_WEIGHT`] anyway; counting them first refuses a huge
/// list before reading each entry.
pub const MAX_UPSTREAMS_PER_POOL: usize = MAX_POOL_WEIGHT as usize;
/// Most pools the cluster may hold.
pub const MAX_POOLS: usize = 1000;
/// Longest pool name or upstream id, in bytes. An upstream's id defaults to its
/// address, so a 253-byte DNS name with a port does not fit: give it a shorter `id`.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest node id, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// Largest encoded cluster change (one Raft entry): a bootstrap or a reload's batch
/// carries a whole file's upstreams. Each is written to disk and sent to every member,
/// so a few MB is a ceiling, not a target.
pub const MAX_COMMAND_BYTES: usize = 4 * 1024 * 1024;
/// What one file's pools may take as one cluster change: half of
/// [`MAX_COMMAND_BYTES`], because a reload's batch may remove every upstream of the old
/// file and add every one of the new.
pub const MAX_FILE_CHANGE_BYTES: usize = MAX_COMMAND_BYTES / 2;
/// Largest config file read, by `check`, `run` and reload alike. A config of the
/// largest cluster the bounds above allow is a few MB.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// Deepest nesting of YAML collections in a config file. ringway's own shape is about
/// 6 deep; the YAML parser's cost grows fast with depth (200 KB of `[` took 48 s).
pub const MAX_YAML_DEPTH: usize = 64;

// The derived bounds must not round down to nothing, and the upstream cap must allow
// a full pool of weight-1 upstreams.
const _: () = assert!(MAX_POOL_WEIGHT >= MAX_WEIGHT as u64);
const _: () = assert!(MAX_TOTAL_WEIGHT >= MAX_POOL_WEIGHT);

/// A character that must not appear in a name: control characters (they break log
/// lines and terminals) and the invisible bidirectional controls, which make a name
/// read differently from what it is (U+202E turns `abc` into `cba` on screen).
pub fn forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Checks a pool name or an upstream id: 1 to [`MAX_NAME_BYTES`] bytes, not blank, no
/// control or bidirectional control characters. The error says the rule and the value.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "must be 1 to {MAX_NAME_BYTES} bytes and not blank, got {} bytes: {name:?}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|&c| forbidden_in_name(c)) {
        return Err(format!(
            "must not hold control or bidirectional control characters, got U+{:04X} in {name:?}",
            c as u32
        ));
    }
    Ok(())
}

/// A node id: 1 to [`MAX_NODE_ID_BYTES`] letters, digits, '-', '_' or '.'.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Checks a node id; the error says the rule and the value.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if valid_node_id(id) {
        return Ok(());
    }
    Err(format!(
        "node id must be 1 to {MAX_NODE_ID_BYTES} letters, digits, '-', '_' or '.', got {id:?}"
    ))
}

/// Checks one upstream's weight.
pub fn check_weight(weight: u64) -> Result<(), String> {
    if (1..=MAX_WEIGHT as u64).contains(&weight) {
        return Ok(());
    }
    Err(format!(
        "weight must be from 1 to {MAX_WEIGHT}, got {weight}"
    ))
}

/// Checks a pool's `vnodes`.
pub fn check_vnodes(vnodes: u64) -> Result<(), String> {
    if (1..=MAX_VNODES as u64).contains(&vnodes) {
        return Ok(());
    }
    Err(format!(
        "vnodes must be from 1 to {MAX_VNODES}, got {vnodes}"
    ))
}

/// Checks the number of upstreams of one pool.
pub fn check_upstream_count(n: usize) -> Result<(), String> {
    if n <= MAX_UPSTREAMS_PER_POOL {
        return Ok(());
    }
    Err(format!(
        "a pool holds at most {MAX_UPSTREAMS_PER_POOL} upstreams, got {n}"
    ))
}

/// Checks the number of pools.
pub fn check_pool_count(n: usize) -> Result<(), String> {
    if n <= MAX_POOLS {
        return Ok(());
    }
    Err(format!(
        "the cluster holds at most {MAX_POOLS} pools, got {n}"
    ))
}

/// Checks the sum of one pool's weights.
pub fn check_pool_weight(sum: u64) -> Result<(), String> {
    if sum <= MAX_POOL_WEIGHT {
        return Ok(());
    }
    Err(format!(
        "a pool's weights add up to at most {MAX_POOL_WEIGHT} (at most {MAX_POINTS_PER_POOL} ring points at vnodes {MAX_VNODES}), got {sum}"
    ))
}

/// Checks the sum of every pool's weights.
pub fn check_total_weight(sum: u64) -> Result<(), String> {
    if sum <= MAX_TOTAL_WEIGHT {
        return Ok(());
    }
    Err(format!(
        "the weights of all pools add up to at most {MAX_TOTAL_WEIGHT} (at most {MAX_TOTAL_POINTS} ring points at vnodes {MAX_VNODES}), got {sum}"
    ))
}

/// Bytes a JSON string takes (serde_json escapes `"` and `\\`; control characters,
/// which it would also escape, are refused in names).
fn json_str_len(s: &str) -> usize {
    s.len() + 2 + s.bytes().filter(|b| matches!(b, b'"' | b'\\')).count()
}

/// Bytes one upstream takes in the largest form a cluster change carries it in (an
/// upstream put of a batch), separator included. Bootstraps and pool replacements carry
/// it in fewer.
pub fn upstream_change_bytes(pool: &str, id: &str, address: &str, weight: u32) -> usize {
    const FIXED: &str = r#"{"op":"put_upstream","pool":,"upstream":{"id":,"address":,"weight":,"draining":false}},"#;
    FIXED.len()
        + json_str_len(pool)
        + json_str_len(id)
        + json_str_len(address)
        + weight.to_string().len()
}

/// Bytes one pool adds to a cluster change beyond its upstreams (its own entry in a
/// bootstrap, a replacement or a removal), and the envelope of the whole change.
pub fn pool_change_bytes(pool: &str) -> usize {
    const FIXED: &str = r#"{"op":"remove_pool","pool":,"upstreams":[]},"#;
    FIXED.len() + json_str_len(pool)
}

/// The versioned envelope around a change (`{"v":1,"body":{"op":"batch",...}}`).
pub const CHANGE_ENVELOPE_BYTES: usize = 64;

/// Checks the bytes a file's pools take as one cluster change.
pub fn check_file_change_bytes(bytes: usize) -> Result<(), String> {
    if bytes <= MAX_FILE_CHANGE_BYTES {
        return Ok(());
    }
    Err(format!(
        "the pools take {bytes} bytes as one cluster change, at most {MAX_FILE_CHANGE_BYTES}: use shorter names and ids or fewer upstreams"
    ))
}

/// A config file nested deeper than [`MAX_YAML_DEPTH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line where the bound was passed.
    pub line: usize,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: collections nested more than {MAX_YAML_DEPTH} deep",
            self.line
        )
    }
}

/// A cheap scan of YAML text, before any parsing, for collections nested deeper than
/// [`MAX_YAML_DEPTH`]: flow collections (`[`, `{`) plus block levels (indentation
/// and `- ` entries). Linear in the text; errs on the side of counting a level too
/// many, never on missing flow brackets that open a collection.
pub fn check_yaml_depth(text: &str) -> Result<(), TooDeep> {
    let mut scan = DepthScan::default();
    for (i, line) in text.lines().enumerate() {
        if scan.line(line) > MAX_YAML_DEPTH {
            return Err(TooDeep { line: i + 1 });
        }
    }
    Ok(())
}

/// State of [`check_yaml_depth`] carried from line to line.
#[derive(Default)]
struct DepthScan {
    /// Indentation of the open block levels, innermost last.
    indents: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<char>,
    /// Inside a block scalar (`|` or `>`) whose header line had this indentation.
    block_scalar: Option<usize>,
}

impl DepthScan {
    /// Scans one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str) -> usize {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        let blank = rest.trim().is_empty() || rest.starts_with('#');
        if let Some(header) = self.block_scalar {
            if blank || indent > header {
                return 0;
            }
            self.block_scalar = None;
        }
        let mut block = self.indents.len();
        let mut deepest = block;
        let mut at_node = true;
        let mut rest = rest;
        if self.flow == 0 && self.quote.is_none() {
            if blank {
                return 0;
            }
            while self.indents.last().is_some_and(|&i| i >= indent) {
                self.indents.pop();
            }
            self.indents.push(indent);
            block = self.indents.len();
            deepest = block;
            rest = rest.strip_prefix("---").unwrap_or(rest);
        }
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i] as char;
            let next = bytes.get(i + 1).map(|&b| b as char);
            let spaced = next.is_none_or(|n| n == ' ' || n == '\t');
            if let Some(q) = self.quote {
                match c {
                    '\\' if q == '"' => i += 1,
                    '\'' if q == '\'' && next == Some('\'') => i += 1,
                    _ if c == q => {
                        self.quote = None;
                        at_node = false;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            match c {
                ' ' | '\t' => {}
                '#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t') => break,
                '[' | '{' if at_node || self.flow > 0 => {
                    self.flow += 1;
                    at_node = true;
                }
                ']' | '}' if self.flow > 0 => {
                    self.flow -= 1;
                    at_node = false;
                }
                ',' if self.flow > 0 => at_node = true,
                '"' | '\'' if at_node => self.quote = Some(c),
                '-' | '?' if at_node && self.flow == 0 && spaced => block += 1,
                ':' if spaced => {
                    at_node = true;
                    if self.flow == 0 {
                        block += 1;
                    }
                }
                '|' | '>' if at_node && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    break;
                }
                '!' | '&' | '*' if at_node => {
                    // A tag, anchor or alias: the node (if any) starts after it.
                    while i + 1 < bytes.len() && !matches!(bytes[i + 1], b' ' | b'\t') {
                        i += 1;
                    }
                }
                _ => at_node = false,
            }
            deepest = deepest.max(block + self.flow);
            i += 1;
        }
        deepest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_of_a_config_is_small() {
        let text = "pools:\n  - name: web\n    hosts: [\"a\", {x: [1]}]\n    upstreams:\n      - address: 127.0.0.1:1\n        weight: 2 # [[[[\n";
        let mut scan = DepthScan::default();
        let deepest = text.lines().map(|l| scan.line(l)).max().unwrap_or(0);
        assert!((4..=10).contains(&deepest), "depth {deepest}");
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let deep = "[".repeat(MAX_YAML_DEPTH * 2);
        let text = format!(
            "a: \"{deep}\"\nb: '{deep}'\nc: x{deep}\n# {deep}\nd: |\n  {deep}\ne: it's {deep}\n"
        );
        assert_eq!(check_yaml_depth(&text), Ok(()));
    }

    #[test]
    fn deep_flow_and_block_nesting_are_refused_with_the_line() {
        let flow = format!("a: 1\nb: {}", "[".repeat(MAX_YAML_DEPTH + 1));
        assert_eq!(check_yaml_depth(&flow), Err(TooDeep { line: 2 }));
        let tagged = format!("b: !!seq {}", "[".repeat(MAX_YAML_DEPTH + 1));
        assert_eq!(check_yaml_depth(&tagged), Err(TooDeep { line: 1 }));
        let dashes = "- ".repeat(MAX_YAML_DEPTH + 1) + "x";
        assert_eq!(check_yaml_depth(&dashes), Err(TooDeep { line: 1 }));
        let mut block = String::new();
        for d in 0..=MAX_YAML_DEPTH {
            block.push_str(&format!("{}k{d}:\n", " ".repeat(d)));
        }
        assert!(check_yaml_depth(&block).is_err());
        assert_eq!(
            check_yaml_depth(&format!("a: {}", "[".repeat(MAX_YAML_DEPTH - 2))),
            Ok(())
        );
    }

    #[test]
    fn names_refuse_controls_and_bidi() {
        assert_eq!(check_name("web-1:8080"), Ok(()));
        assert_eq!(check_name("café"), Ok(()));
        for bad in [
            "a\u{202E}b",
            "a\u{2066}",
            "\u{200F}",
            "a\u{061C}",
            "a\nb",
            "a\u{7F}",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("").is_err());
        assert!(check_name(" ").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn derived_bounds() {
        assert_eq!(MAX_POOL_WEIGHT, 5000);
        assert_eq!(MAX_TOTAL_WEIGHT, 10_000);
        assert!(MAX_POOL_WEIGHT * MAX_VNODES as u64 <= MAX_POINTS_PER_POOL);
        assert!(MAX_TOTAL_WEIGHT * MAX_VNODES as u64 <= MAX_TOTAL_POINTS);
    }
}
