//! `pools[].cache`, every field checked with its path.

use super::super::cache::*;
use super::super::raw::RawCache;
use super::{join, Checker};

impl Checker {
    /// `None` when the pool has no `cache` section (the cache is off).
    pub(super) fn cache(&mut self, path: &str, raw: Option<RawCache>) -> Option<CacheSettings> {
        let raw = raw?;
        let d = CacheSettings::default();
        let p = join(path, "cache");
        self.unknown(&p, &raw.unknown);
        let max_bytes = self.opt_int(
            &join(&p, "max_bytes"),
            &raw.max_bytes,
            MIN_CACHE_MAX_BYTES,
            MAX_CACHE_MAX_BYTES,
            d.max_bytes,
        );
        let object_cap = max_bytes / MAX_OBJECT_SHARE;
        let object_path = join(&p, "max_object_bytes");
        let max_object_bytes = match &raw.max_object_bytes {
            Some(v) => self
                .int(&object_path, v, 1, MAX_CACHE_MAX_BYTES)
                .unwrap_or(1),
            None => d.max_object_bytes.min(object_cap),
        };
        if max_object_bytes > object_cap {
            self.error(
                object_path,
                format!(
                    "must be at most a quarter of max_bytes ({object_cap}), got {max_object_bytes}"
                ),
            );
        }
        let ms = self.opt_int(
            &join(&p, "coalesce_timeout_ms"),
            &raw.coalesce_timeout_ms,
            1,
            MAX_COALESCE_TIMEOUT_MS,
            d.coalesce_timeout.as_millis() as u64,
        );
        let key = raw.key.as_ref().and_then(|v| {
            let at = join(&p, "key");
            let text = self.string(&at, v)?;
            match crate::balance::HashKey::parse(&text) {
                Ok(key) => Some(key),
                Err(why) => {
                    self.error(at, why);
                    None
                }
            }
        });
        Some(CacheSettings {
            max_bytes,
            max_object_bytes,
            coalesce_timeout: std::time::Duration::from_millis(ms),
            key,
        })
    }
}
