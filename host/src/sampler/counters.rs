//! Turns cumulative counters into per-second rates. A counter seen for the first time, or one
//! that went backwards (a reset, a device replaced), yields nothing rather than a bogus rate.

use crate::store::{Sample, SeriesKey};
use std::collections::HashMap;

#[derive(Default)]
pub struct Counters {
    previous: HashMap<SeriesKey, (i64, u64)>,
}

impl Counters {
    /// The rate of `key` between its previous reading and `value` at `t_ms`, if there is one.
    pub fn rate(&mut self, key: SeriesKey, t_ms: i64, value: u64) -> Option<Sample> {
        let previous = self.previous.insert(key.clone(), (t_ms, value));
        let (t0, v0) = previous?;
        if t_ms <= t0 || value < v0 {
            return None;
        }
        let per_second = (value - v0) as f64 * 1000.0 / (t_ms - t0) as f64;
        Some(Sample { key, t_ms, value: per_second })
    }

    /// Forgets counters not seen since `t_ms` (an interface or process that went away).
    pub fn forget_older_than(&mut self, t_ms: i64) {
        self.previous.retain(|_, (t, _)| *t >= t_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Labels;

    #[test]
    fn first_reading_and_resets_give_no_rate() {
        let mut c = Counters::default();
        let key = SeriesKey::new("x", Labels::new());
        assert_eq!(c.rate(key.clone(), 1000, 100), None, "no previous reading");
        assert_eq!(c.rate(key.clone(), 3000, 300).unwrap().value, 100.0, "200 over 2 s");
        assert_eq!(c.rate(key.clone(), 4000, 50), None, "counter reset");
        assert_eq!(c.rate(key.clone(), 4500, 150).unwrap().value, 200.0);
        assert_eq!(c.rate(key, 4500, 160), None, "no time passed");
    }
}
