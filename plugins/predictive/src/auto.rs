//! `method = "auto"` (the default): three forecasters of the demand's peak `horizon` ahead —
//! the demand now (the reactive answer), the Holt-Winters model and the same minutes a season
//! ago — are scored on every step by the error they made `horizon` ago. A candidate answer is a
//! forecast plus the `coverage` quantile of its recent errors (an empirical prediction interval,
//! as split-conformal forecasting builds one), the errors measured relative to the forecast or
//! to its root; the demand now may also be floored by the Holt-Winters forecast. The group
//! follows the candidate with the least pinball loss over the learning span. The head-room is
//! learned from the group's own demand: where it is calm, little; where it jumps, what the jumps
//! were; where the season foretells them, the season's forecast.

use crate::holt_winters::Model;
use crate::Params;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The forecasters, in the order of [`Auto::forecasts`].
pub const FORECASTERS: [&str; 3] = ["demand now", "Holt-Winters", "last season"];
const N: usize = FORECASTERS.len();

/// Errors kept before the learned head-room is trusted; until then 25 % of the root scale.
pub const MIN_ERRORS: usize = 30;
const UNTRAINED_HEADROOM: f64 = 0.25;

/// A candidate answer: (forecaster, scale, floored by Holt-Winters).
type Candidate = (usize, usize, bool);
/// The choice is redone every this many answers: it moves slowly, and scoring every candidate
/// over the learning span is most of an answer's work.
const RECHOOSE_EVERY: u32 = 15;

/// The candidate followed, at which coverage, and the answers since it was chosen.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Chosen {
    candidate: Candidate,
    coverage: f64,
    answers: u32,
}

/// The learned state of one group. Histories are `f32` (demand needs no more digits), kept as
/// plain arrays: about 70 KB of state per group at a 1-minute period and a 1-day season.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Auto {
    pub hw: Model,
    /// The last season of observations (+ the horizon), oldest first.
    values: VecDeque<f32>,
    /// The peak each forecaster expected over the horizon, made at each of the last `horizon`
    /// steps, oldest first.
    made: VecDeque<[f32; N]>,
    /// Over the learning span, oldest first: the peak that came after each scored step, and
    /// what each forecaster had expected of it.
    peaks: VecDeque<f32>,
    forecasts: [VecDeque<f32>; N],
    chosen: Option<Chosen>,
}

/// What `auto` recommends and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The demand to provision for.
    pub need: f64,
    /// Which of [`FORECASTERS`] it followed.
    pub forecaster: usize,
    /// Its forecast of the horizon's peak.
    pub forecast: f64,
}

/// The scales an error is measured in, for a forecast `f` (at least one unit's capacity):
/// relative to the forecast — jumps that grow with the level, as a flash crowd's — or to its
/// root — counts whose noise grows as the root of their level, so a quiet night does not
/// borrow a busy day's head-room.
const SCALES: usize = 2;
fn scale(kind: usize, f: f64, capacity_per_unit: f64) -> f64 {
    let f = f.max(capacity_per_unit);
    match kind {
        0 => (f * capacity_per_unit).sqrt(),
        _ => f,
    }
}

impl Auto {
    pub fn new(season_len: usize) -> Auto {
        Auto {
            hw: Model::new(season_len),
            values: VecDeque::new(),
            made: VecDeque::new(),
            peaks: VecDeque::new(),
            forecasts: std::array::from_fn(|_| VecDeque::new()),
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
        self.values.push_back(y as f32);
        while self.values.len() > season + horizon {
            self.values.pop_front();
        }
        // A shorter horizon than the forecasts were made for (a reload): drop the older ones.
        while self.made.len() > horizon {
            self.made.pop_front();
        }
        if let (true, Some(made)) = (self.made.len() == horizon, self.made.front().copied()) {
            self.made.pop_front();
            let peak = self.values.iter().rev().take(horizon).copied().fold(f32::MIN, f32::max);
            self.peaks.push_back(peak);
            for (i, forecasts) in self.forecasts.iter_mut().enumerate() {
                forecasts.push_back(made[i]);
            }
            while self.peaks.len() > learn {
                self.peaks.pop_front();
                for f in &mut self.forecasts {
                    f.pop_front();
                }
            }
        }
        self.hw.observe(step, y, p);
        let hw_peak = (1..=horizon as i64).map(|h| self.hw.forecast(h)).fold(f64::MIN, f64::max);
        // The horizon's minutes a season ago (the newest value is this step's), once seen.
        let n = self.values.len();
        let last_season = match n > season {
            true => {
                self.values.range(n - season..(n - season + horizon).min(n)).copied().fold(y as f32, f32::max)
            }
            false => y as f32,
        };
        self.made.push_back([y as f32, hw_peak as f32, last_season]);
    }

    /// Forecaster `i`'s errors over the learning span, in scale `s`.
    fn errors(&self, i: usize, s: usize, p: &Params) -> impl Iterator<Item = f64> + '_ {
        let cap = p.capacity_per_unit;
        self.forecasts[i].iter().zip(&self.peaks).map(move |(f, y)| {
            let f = f64::from(*f);
            (f64::from(*y) - f) / scale(s, f, cap)
        })
    }

    /// The demand to provision for at `coverage`, never below `now`: the chosen candidate's
    /// answer (see [`Auto::choose`]).
    pub fn answer(&mut self, now: f64, coverage: f64, p: &Params) -> Answer {
        if self.peaks.len() < MIN_ERRORS {
            let need = now + UNTRAINED_HEADROOM * scale(0, now, p.capacity_per_unit);
            return Answer { need, forecaster: 0, forecast: now };
        }
        let candidate = match self.chosen {
            Some(c) if c.answers < RECHOOSE_EVERY && c.coverage == coverage && self.allowed(c.candidate) => {
                c.candidate
            }
            _ => self.choose(coverage, p),
        };
        let answers = match self.chosen {
            Some(c) if c.candidate == candidate && c.coverage == coverage && c.answers < RECHOOSE_EVERY => {
                c.answers + 1
            }
            _ => 1,
        };
        self.chosen = Some(Chosen { candidate, coverage, answers });
        let (i, s, _) = candidate;
        let headroom = quantile(self.errors(i, s, p), coverage);
        let last = self.made.back().map_or([now; N], |m| m.map(f64::from));
        let (need, forecaster) = answer_of(candidate, headroom, &last, p);
        Answer { need: need.max(now), forecaster, forecast: last[forecaster] }
    }

    /// Whether the seasonal forecasters have seen a season.
    fn allowed(&self, (i, _, floored): Candidate) -> bool {
        (i == 0 && !floored) || self.hw.seen as usize >= self.hw.season.len()
    }

    /// Of the candidates — each forecaster in each of the [`SCALES`], and the demand now
    /// floored by Holt-Winters — the one with the least pinball loss at `coverage` over the
    /// learning span: the proper score of a quantile forecast, where a miss costs `coverage`
    /// and an excess `1 - coverage`, per unit of demand.
    fn choose(&self, coverage: f64, p: &Params) -> Candidate {
        let headroom: [[f64; SCALES]; N] =
            std::array::from_fn(|i| std::array::from_fn(|s| quantile(self.errors(i, s, p), coverage)));
        let loss = |c: Candidate| -> f64 {
            (0..self.peaks.len())
                .map(|k| {
                    let f: [f64; N] = std::array::from_fn(|i| f64::from(self.forecasts[i][k]));
                    let q = answer_of(c, headroom[c.0][c.1], &f, p).0;
                    let y = f64::from(self.peaks[k]);
                    if y > q {
                        coverage * (y - q)
                    } else {
                        (1.0 - coverage) * (q - y)
                    }
                })
                .sum()
        };
        (0..SCALES)
            .flat_map(|s| [(0, s, false), (1, s, false), (2, s, false), (0, s, true)])
            .filter(|c| self.allowed(*c))
            .map(|c| (loss(c), c))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map_or((0, 0, false), |(_, c)| c)
    }
}

/// A candidate's answer for forecasts `f` with `headroom` (in the candidate's scale), and the
/// forecaster it followed.
fn answer_of((i, s, floored): Candidate, headroom: f64, f: &[f64; N], p: &Params) -> (f64, usize) {
    let upper = f[i] + headroom * scale(s, f[i], p.capacity_per_unit);
    match floored && f[1] > upper {
        true => (f[1], 1),
        false => (upper, i),
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
        assert_eq!(back.peaks, auto.peaks);
        let (a, b) = (back.answer(99.0, 0.9, &p), auto.answer(99.0, 0.9, &p));
        assert_eq!(a.forecaster, b.forecaster);
        assert!((a.need - b.need).abs() < 1e-6, "{a:?} {b:?}");
        // About 70 KB for a day of minutes.
        let mut day = Auto::new(1440);
        for step in 0..3000 {
            day.observe(step, 1000.0 + (step % 97) as f64 * 3.7, 3, 1440, &p);
        }
        let bytes = serde_json::to_vec(&day).unwrap().len();
        assert!(bytes < 100_000, "{bytes} bytes");
    }
}
