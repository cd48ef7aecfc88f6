//! The `access_log` section.

use serde_yaml::Value;

use super::{join, shown, Checker};
use crate::config::access_log::{AccessField, AccessFormat, AccessLog};
use crate::config::raw::RawAccessLog;

impl Checker {
    pub(super) fn access_log(&mut self, raw: Option<RawAccessLog>) -> AccessLog {
        let Some(raw) = raw else {
            return AccessLog::default();
        };
        let path = "access_log";
        self.unknown(path, &raw.unknown);
        let enabled = self.opt_bool(&join(path, "enabled"), &raw.enabled, true);
        let format = match &raw.format {
            None => AccessFormat::Text,
            Some(v) => {
                let field = join(path, "format");
                let format = self.string(&field, v).and_then(|s| {
                    let f = AccessFormat::parse(&s);
                    if f.is_none() {
                        let names = AccessFormat::NAMES;
                        self.error(&field, format!("must be {names}, got {s:?}"));
                    }
                    f
                });
                format.unwrap_or(AccessFormat::Text)
            }
        };
        let fields = match &raw.fields {
            None => AccessField::DEFAULT.to_vec(),
            Some(_) if format == AccessFormat::Combined => {
                self.error(
                    join(path, "fields"),
                    "the combined format has its own fields; list fields only for text or json",
                );
                Vec::new()
            }
            Some(v) => self.access_fields(&join(path, "fields"), v),
        };
        AccessLog::new(enabled, format, fields)
    }

    fn access_fields(&mut self, path: &str, v: &Value) -> Vec<AccessField> {
        let Value::Sequence(items) = v else {
            self.error(
                path,
                format!("must be a list of field names, got {}", shown(v)),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(path, "must list at least one field (or set enabled: false)");
        }
        let mut out: Vec<AccessField> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Some(name) = self.string(&at, item) else {
                continue;
            };
            match AccessField::parse(&name) {
                Some(f) if out.contains(&f) => self.error(&at, format!("{name} is listed twice")),
                Some(f) => out.push(f),
                None => {
                    let known: Vec<&str> = AccessField::ALL.iter().map(|f| f.name()).collect();
                    self.error(
                        &at,
                        format!("must be one of {}, got {name:?}", known.join(", ")),
                    );
                }
            }
        }
        out
    }
}
