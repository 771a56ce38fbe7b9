//! Rolling statistics over a window of readings, and the anomaly rule.
//!
//! A reading is an anomaly when at least `warmup` readings are in the window and it lies more than
//! `sigma` standard deviations (at least [`MIN_STDDEV`]) from the window's mean. Anomalies do not
//! enter the window, so a spike does not hide the next one; but after `warmup` anomalies in a row
//! the level has shifted for good, and the window restarts from the new readings.

use std::collections::VecDeque;

/// The smallest standard deviation the rule divides by, so a flat signal does not make every
/// rounding step an anomaly.
pub const MIN_STDDEV: f64 = 0.1;

/// What one reading turned out to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The reading.
    pub value: f64,
    /// The window's mean before it.
    pub mean: f64,
    /// The window's standard deviation before it.
    pub stddev: f64,
    /// Whether it is an anomaly.
    pub anomaly: bool,
}

/// The rolling window and the anomaly rule.
#[derive(Debug, Clone)]
pub struct Detector {
    window: VecDeque<f64>,
    capacity: usize,
    sigma: f64,
    warmup: usize,
    anomalies_in_a_row: usize,
    /// Readings observed.
    pub readings: u64,
    /// Anomalies flagged.
    pub anomalies: u64,
    /// The smallest reading.
    pub min: f64,
    /// The largest reading.
    pub max: f64,
}

impl Detector {
    /// A detector over `window` readings (at least 2), flagging beyond `sigma` σ after `warmup`
    /// readings (at least 2, at most `window`).
    pub fn new(window: usize, sigma: f64, warmup: usize) -> Self {
        let capacity = window.max(2);
        Detector {
            window: VecDeque::with_capacity(capacity),
            capacity,
            sigma,
            warmup: warmup.clamp(2, capacity),
            anomalies_in_a_row: 0,
            readings: 0,
            anomalies: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The window's mean and (population) standard deviation, or `None` when it is empty.
    pub fn mean_stddev(&self) -> Option<(f64, f64)> {
        if self.window.is_empty() {
            return None;
        }
        let n = self.window.len() as f64;
        let mean = self.window.iter().sum::<f64>() / n;
        let var = self.window.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Some((mean, var.sqrt()))
    }

    /// Takes one reading. Readings that are not finite are refused (`None`).
    pub fn observe(&mut self, value: f64) -> Option<Observation> {
        if !value.is_finite() {
            return None;
        }
        let (mean, stddev) = self.mean_stddev().unwrap_or((value, 0.0));
        let anomaly = self.window.len() >= self.warmup
            && (value - mean).abs() > self.sigma * stddev.max(MIN_STDDEV);
        self.readings += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if anomaly {
            self.anomalies += 1;
            self.anomalies_in_a_row += 1;
            if self.anomalies_in_a_row >= self.warmup {
                // The level moved: start over from here.
                self.window.clear();
                self.anomalies_in_a_row = 0;
            }
        } else {
            self.anomalies_in_a_row = 0;
            if self.window.len() == self.capacity {
                self.window.pop_front();
            }
            self.window.push_back(value);
        }
        Some(Observation {
            value,
            mean,
            stddev,
            anomaly,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Simulated;

    #[test]
    fn the_window_mean_and_stddev_are_those_of_its_readings() {
        let mut d = Detector::new(4, 3.0, 2);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            d.observe(x);
        }
        // The window holds 2, 3, 4, 5.
        let (mean, sd) = d.mean_stddev().unwrap();
        assert!((mean - 3.5).abs() < 1e-12);
        assert!((sd - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!((d.min, d.max, d.readings), (1.0, 5.0, 5));
    }

    #[test]
    fn a_simulated_source_raises_no_alarm_and_an_injected_spike_is_flagged() {
        let mut src = Simulated::new(7);
        let mut d = Detector::new(60, 3.0, 10);
        let mut flagged = Vec::new();
        for i in 0..2000 {
            let mut x = src.next_value();
            if i == 1000 {
                x += 10.0;
            }
            if d.observe(x).unwrap().anomaly {
                flagged.push(i);
            }
        }
        assert_eq!(flagged, vec![1000]);
        assert_eq!(d.anomalies, 1);
    }

    #[test]
    fn nothing_is_flagged_during_warm_up() {
        let mut d = Detector::new(60, 3.0, 10);
        for x in [40.0, 40.1, 90.0, 40.0] {
            assert!(!d.observe(x).unwrap().anomaly);
        }
    }

    #[test]
    fn a_lasting_level_shift_restarts_the_window_instead_of_alarming_forever() {
        let mut d = Detector::new(20, 3.0, 5);
        for i in 0..20 {
            d.observe(40.0 + f64::from(i % 2) * 0.2);
        }
        let flags: Vec<bool> = (0..20)
            .map(|i| d.observe(60.0 + f64::from(i % 2) * 0.2).unwrap().anomaly)
            .collect();
        assert!(flags[0]);
        assert!(flags[10..].iter().all(|f| !f), "{flags:?}");
    }

    #[test]
    fn readings_that_are_not_numbers_are_refused() {
        let mut d = Detector::new(10, 3.0, 2);
        assert_eq!(d.observe(f64::NAN), None);
        assert_eq!(d.readings, 0);
    }
}
