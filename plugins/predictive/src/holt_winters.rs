//! The additive Holt-Winters model: level, trend and one seasonal cycle, updated per step.

use crate::Params;
use serde::{Deserialize, Serialize};

/// Additive Holt-Winters state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Model {
    pub level: f64,
    pub trend: f64,
    pub season: Vec<f64>,
    /// Observations so far; the season is trusted after one full cycle.
    pub seen: u64,
    /// The step (time / period) of the last observation.
    pub last_step: i64,
}

impl Model {
    pub fn new(season_len: usize) -> Model {
        Model { level: 0.0, trend: 0.0, season: vec![0.0; season_len.max(1)], seen: 0, last_step: i64::MIN }
    }

    /// Takes observation `y` at model step `step` (repeats of a step are ignored). The first
    /// cycle only collects: then the level is its mean and each seasonal component its
    /// deviation from that mean (the usual Holt-Winters initialisation).
    pub fn observe(&mut self, step: i64, y: f64, p: &Params) {
        if step == self.last_step {
            return;
        }
        let len = self.season.len();
        let slot = step.rem_euclid(len as i64) as usize;
        self.last_step = step;
        self.seen += 1;
        if (self.seen as usize) <= len {
            self.season[slot] = y;
            self.level += (y - self.level) / self.seen as f64;
            if self.seen as usize == len {
                let mean = self.level;
                self.season.iter_mut().for_each(|s| *s -= mean);
            }
            return;
        }
        let level = p.alpha * (y - self.season[slot]) + (1.0 - p.alpha) * (self.level + self.trend);
        self.trend = p.beta * (level - self.level) + (1.0 - p.beta) * self.trend;
        self.level = level;
        self.season[slot] = p.gamma * (y - self.level) + (1.0 - p.gamma) * self.season[slot];
    }

    /// The demand expected `h` steps after the last observation.
    pub fn forecast(&self, h: i64) -> f64 {
        let slot = (self.last_step + h).rem_euclid(self.season.len() as i64) as usize;
        // Until a full cycle has been seen, the mean so far is the forecast.
        if (self.seen as usize) < self.season.len() {
            return self.level.max(0.0);
        }
        (self.level + h as f64 * self.trend + self.season[slot]).max(0.0)
    }
}
