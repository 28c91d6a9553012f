//! `method = "auto"` (the default): two forecasters — the demand now (the reactive answer) and
//! the Holt-Winters model — are scored on every step by the error they made `horizon` ago, and
//! the group is provisioned for the one that has erred less lately, plus the `coverage`
//! quantile of its recent errors (an empirical prediction interval, as split-conformal
//! forecasting builds one). The head-room is learned from the group's own demand: where it is
//! calm, little; where it jumps, what the jumps were; where the season foretells them, the
//! season's forecast. Errors are relative to the forecast (at least one unit's capacity), so a
//! daily swing in level does not make the quiet hours pay for the busy ones.

use crate::holt_winters::Model;
use crate::Params;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The forecasters, in the order of [`Auto::made`]'s entries.
pub const FORECASTERS: [&str; 3] = ["demand now", "Holt-Winters", "last season"];
const N: usize = FORECASTERS.len();

/// Errors kept before the learned head-room is trusted; until then a fixed 25 %.
const MIN_ERRORS: usize = 30;
const UNTRAINED_HEADROOM: f64 = 0.25;

/// One forecast scored: what was expected and the peak that came.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
struct Scored {
    forecast: f64,
    peak: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Auto {
    pub hw: Model,
    /// The last season of observations (+ the horizon), oldest first.
    values: VecDeque<f64>,
    /// The peak each forecaster expected over the horizon, made at each of the last `horizon`
    /// steps, oldest first.
    made: VecDeque<[f64; N]>,
    /// Each forecaster's scored forecasts over the learning span, oldest first.
    scored: [VecDeque<Scored>; N],
    /// The candidate followed, and the steps since it was chosen (the choice is redone every
    /// [`RECHOOSE_EVERY`] steps: it moves slowly, and scoring every candidate over the learning
    /// span is most of a step's work).
    #[serde(default)]
    chosen: Option<(Candidate, u32)>,
}

/// A candidate answer: (forecaster, scale, floored by Holt-Winters).
type Candidate = (usize, usize, bool);
const RECHOOSE_EVERY: u32 = 15;

/// What `auto` recommends and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The demand to provision for.
    pub need: f64,
    /// Which of [`FORECASTERS`] it followed.
    pub forecaster: usize,
    /// Its forecast of the horizon's peak, and the head-room added (in its error's scale).
    pub forecast: f64,
    pub headroom: f64,
}

/// The scales an error is measured in, for a forecast `f` (at least one unit's capacity):
/// relative to the forecast — jumps that grow with the level, as a flash crowd's — or to its
/// root — counts whose noise grows as the root of their level, so a quiet night does not
/// borrow a busy day's head-room.
const SCALES: usize = 2;
fn scale(kind: usize, f: f64, p: &Params) -> f64 {
    let f = f.max(p.capacity_per_unit);
    match kind {
        0 => (f * p.capacity_per_unit).sqrt(),
        _ => f,
    }
}

impl Auto {
    pub fn new(season_len: usize) -> Auto {
        Auto {
            hw: Model::new(season_len),
            values: VecDeque::new(),
            made: VecDeque::new(),
            scored: std::array::from_fn(|_| VecDeque::new()),
            chosen: None,
        }
    }

    /// Takes observation `y` at model step `step` (a repeated step changes nothing): scores the
    /// forecasts made `horizon` steps ago against the peak since, then forecasts.
    pub fn observe(&mut self, step: i64, y: f64, horizon: usize, learn: usize, p: &Params) {
        if step == self.hw.last_step {
            return;
        }
        let season = self.hw.season.len();
        self.values.push_back(y);
        while self.values.len() > season + horizon {
            self.values.pop_front();
        }
        if self.made.len() >= horizon {
            let made = self.made.pop_front().unwrap_or_default();
            let peak = self.values.iter().rev().take(horizon).copied().fold(f64::MIN, f64::max);
            for (i, scored) in self.scored.iter_mut().enumerate() {
                scored.push_back(Scored { forecast: made[i], peak });
                while scored.len() > learn {
                    scored.pop_front();
                }
            }
        }
        self.hw.observe(step, y, p);
        let hw_peak = (1..=horizon as i64).map(|h| self.hw.forecast(h)).fold(f64::MIN, f64::max);
        // The same minutes a season ago, when a whole season has been seen.
        let n = self.values.len();
        let last_season = match n > season {
            true => self
                .values
                .range(n - 1 - season..(n - 1 - season + horizon).min(n))
                .copied()
                .fold(y, f64::max),
            false => y,
        };
        self.made.push_back([y, hw_peak, last_season]);
    }

    /// The demand to provision for at `coverage`, never below `now`. A candidate answer is a
    /// forecaster's forecast plus the `coverage` quantile of its errors in one of the
    /// [`SCALES`]; the demand now may also be floored by the Holt-Winters forecast. Of these,
    /// the one with the least pinball loss at `coverage` over the learning span is followed —
    /// the proper score of a quantile forecast: a miss costs `coverage`, an excess
    /// `1 - coverage`, per unit of demand.
    pub fn answer(&mut self, now: f64, coverage: f64, p: &Params) -> Answer {
        if self.scored[0].len() < MIN_ERRORS {
            let headroom = UNTRAINED_HEADROOM;
            return Answer {
                need: now + headroom * scale(0, now, p),
                forecaster: 0,
                forecast: now,
                headroom,
            };
        }
        let seasoned = self.hw.seen as usize >= self.hw.season.len() && self.scored[1].len() >= MIN_ERRORS;
        let headroom: [[f64; SCALES]; N] = std::array::from_fn(|i| {
            std::array::from_fn(|s| {
                let errors = self.scored[i].iter().map(|x| (x.peak - x.forecast) / scale(s, x.forecast, p));
                quantile(errors, coverage)
            })
        });
        // A candidate: (forecaster, scale, floored by Holt-Winters); its answer for forecasts `f`.
        let answer_of = |(i, s, floored): Candidate, f: &[f64; N]| -> (f64, usize) {
            let upper = f[i] + headroom[i][s] * scale(s, f[i], p);
            match floored && f[1] > upper {
                true => (f[1], 1),
                false => (upper, i),
            }
        };
        let loss = |c: Candidate| -> f64 {
            (0..self.scored[0].len())
                .map(|k| {
                    let q = answer_of(c, &std::array::from_fn(|i| self.scored[i][k].forecast)).0;
                    let y = self.scored[0][k].peak;
                    if y > q {
                        coverage * (y - q)
                    } else {
                        (1.0 - coverage) * (q - y)
                    }
                })
                .sum()
        };
        let candidates = (0..SCALES).flat_map(|s| {
            let seasonal = [(1, s, false), (2, s, false), (0, s, true)];
            std::iter::once((0, s, false)).chain(seasonal.into_iter().filter(|_| seasoned))
        });
        let best = match self.chosen {
            Some((c, since)) if since < RECHOOSE_EVERY && (seasoned || c.0 == 0 && !c.2) => c,
            _ => candidates
                .map(|c| (loss(c), c))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map_or((0, 0, false), |(_, c)| c),
        };
        let since = match self.chosen {
            Some((c, since)) if c == best && since < RECHOOSE_EVERY => since + 1,
            _ => 1,
        };
        self.chosen = Some((best, since));
        let last = self.made.back().copied().unwrap_or([now; N]);
        let (need, forecaster) = answer_of(best, &last);
        let headroom = if forecaster == best.0 { headroom[best.0][best.1] } else { 0.0 };
        Answer { need: need.max(now), forecaster, forecast: last[forecaster], headroom }
    }
}

/// The `q` quantile (nearest rank) of `values`; 0 when there are none.
pub fn quantile(values: impl Iterator<Item = f64>, q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64) as usize).min(sorted.len() - 1);
    *sorted.select_nth_unstable_by(rank, f64::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        elastic_sdk::parse_json(r#"{"capacity_per_unit": 10}"#, "test").unwrap()
    }

    #[test]
    fn calm_demand_gets_no_headroom_and_jumpy_demand_what_its_jumps_were() {
        let p = params();
        let (mut calm, mut jumpy) = (Auto::new(1440), Auto::new(1440));
        for step in 0..200 {
            calm.observe(step, 100.0, 3, 600, &p);
            // Every 10th step jumps to 150.
            jumpy.observe(step, if step % 10 == 0 { 150.0 } else { 100.0 }, 3, 600, &p);
        }
        let a = calm.answer(100.0, 0.9, &p);
        assert_eq!((a.need, a.forecaster), (100.0, 0));
        // 3 in 10 horizons held a jump of +50: the 60th percentile is calm, the 90th a jump.
        assert_eq!(jumpy.answer(100.0, 0.6, &p).need, 100.0);
        jumpy.chosen = None; // chosen at another coverage
        assert_eq!(jumpy.answer(100.0, 0.9, &p).need, 150.0);
    }

    #[test]
    fn the_season_is_followed_once_it_foretells_the_bursts() {
        let p = params();
        let season = 60;
        // A burst of 5 steps at the same time of every cycle: the demand now always misses it.
        let demand = |step: i64| if step % season < 5 { 400.0 } else { 100.0 };
        let mut auto = Auto::new(season as usize);
        for step in 0..season * 8 {
            auto.observe(step, demand(step), 3, 600, &p);
        }
        let before_burst = auto.answer(100.0, 0.9, &p);
        assert_ne!(before_burst.forecaster, 0, "{before_burst:?}");
        assert!(before_burst.need >= 300.0, "{before_burst:?}");
        // Mid-cycle, nothing is coming: no more than the demand now.
        auto.observe(season * 8, 100.0, 3, 600, &p);
        for step in season * 8 + 1..season * 8 + 30 {
            auto.observe(step, 100.0, 3, 600, &p);
        }
        let calm = auto.answer(100.0, 0.9, &p);
        assert!(calm.need < 110.0, "{calm:?}");
    }

    #[test]
    fn untrained_it_adds_a_quarter_of_its_scale_and_never_goes_below_now() {
        let p = params();
        let mut auto = Auto::new(1440);
        auto.observe(0, 90.0, 3, 600, &p);
        // sqrt(90 × 10) = 30: + 7.5.
        assert_eq!(auto.answer(90.0, 0.9, &p).need, 97.5);
        assert_eq!(quantile([3.0, 1.0, 2.0].into_iter(), 0.5), 2.0);
        assert_eq!(quantile(std::iter::empty(), 0.5), 0.0);
    }

    #[test]
    fn the_state_round_trips() {
        let p = params();
        let mut auto = Auto::new(60);
        for step in 0..100 {
            auto.observe(step, step as f64, 3, 50, &p);
        }
        let mut back: Auto = serde_json::from_slice(&serde_json::to_vec(&auto).unwrap()).unwrap();
        // JSON may round the last digit of a float: what it answers is what counts.
        let (a, b) = (back.answer(99.0, 0.9, &p), auto.answer(99.0, 0.9, &p));
        assert_eq!((a.forecaster, back.scored.len()), (b.forecaster, auto.scored.len()));
        assert!((a.need - b.need).abs() < 1e-9, "{a:?} {b:?}");
    }
}
