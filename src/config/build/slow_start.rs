//! `pools[].slow_start_ms` and `pools[].slow_start_steps`, checked with their paths.

use serde_yaml::Value;

use super::super::slow_start::*;
use super::{join, Checker};

impl Checker {
    pub(super) fn slow_start(
        &mut self,
        path: &str,
        ms: &Option<Value>,
        steps: &Option<Value>,
    ) -> SlowStart {
        let d = SlowStart::default();
        let ms_path = join(path, "slow_start_ms");
        let duration_ms = self.opt_int(&ms_path, ms, 0, MAX_SLOW_START_MS, d.duration_ms);
        let steps = self.opt_int(
            &join(path, "slow_start_steps"),
            steps,
            2,
            MAX_SLOW_START_STEPS.into(),
            d.steps.into(),
        ) as u32;
        let s = SlowStart { duration_ms, steps };
        if let Err(why) = s.check() {
            self.error(ms_path, why);
            return d;
        }
        s
    }
}
