//! Where readings come from: the SoC thermal zone on a real Pi, or a deterministic simulation.

use std::path::{Path, PathBuf};

use bramble_sdk::rng::SplitMix64;

/// The SoC temperature on a Raspberry Pi, in millidegrees Celsius.
pub const THERMAL_ZONE: &str = "/sys/class/thermal/thermal_zone0/temp";

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The thermal zone could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The thermal zone holds something that is not a number.
    #[error("{path} holds `{text}`, not millidegrees")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// The `--source` argument is not understood.
    #[error("unknown source `{0}` (auto, thermal, thermal:<path> or simulated:<seed>)")]
    Unknown(String),
}

/// A simulated temperature: 45 °C, a slow ±0.5 °C wave over 600 readings, and uniform noise of
/// ±0.5 °C from a seeded generator. Bounded noise keeps a 3σ rule quiet until something real happens.
#[derive(Debug, Clone)]
pub struct Simulated {
    rng: SplitMix64,
    t: u64,
}

impl Simulated {
    /// A simulation from `seed`; the same seed gives the same readings.
    pub fn new(seed: u64) -> Self {
        Simulated {
            rng: SplitMix64::new(seed),
            t: 0,
        }
    }

    /// The next reading, in °C.
    pub fn next_value(&mut self) -> f64 {
        let wave = 0.5 * (std::f64::consts::TAU * self.t as f64 / 600.0).sin();
        self.t += 1;
        45.0 + wave + (self.rng.next_f64() - 0.5)
    }
}

/// A source of readings.
#[derive(Debug, Clone)]
pub enum Source {
    /// A thermal zone file (millidegrees Celsius).
    Thermal(PathBuf),
    /// A simulation.
    Simulated(Simulated),
}

impl Source {
    /// Parses `auto` (the thermal zone if it exists, else a simulation seeded from `seed`),
    /// `thermal`, `thermal:<path>` or `simulated:<seed>`.
    pub fn parse(spec: &str, seed: u64) -> Result<Self, SourceError> {
        match spec {
            "auto" if Path::new(THERMAL_ZONE).exists() => Ok(Source::Thermal(THERMAL_ZONE.into())),
            "auto" => Ok(Source::Simulated(Simulated::new(seed))),
            "thermal" => Ok(Source::Thermal(THERMAL_ZONE.into())),
            _ => {
                if let Some(path) = spec.strip_prefix("thermal:") {
                    Ok(Source::Thermal(path.into()))
                } else if let Some(s) = spec.strip_prefix("simulated:") {
                    let seed = s
                        .parse()
                        .map_err(|_| SourceError::Unknown(spec.to_owned()))?;
                    Ok(Source::Simulated(Simulated::new(seed)))
                } else if spec == "simulated" {
                    Ok(Source::Simulated(Simulated::new(seed)))
                } else {
                    Err(SourceError::Unknown(spec.to_owned()))
                }
            }
        }
    }

    /// `thermal` or `simulated`, for the published readings.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Thermal(_) => "thermal",
            Source::Simulated(_) => "simulated",
        }
    }

    /// The next reading, in °C.
    pub fn read(&mut self) -> Result<f64, SourceError> {
        match self {
            Source::Simulated(s) => Ok(s.next_value()),
            Source::Thermal(path) => {
                let text = std::fs::read_to_string(&*path).map_err(|source| SourceError::Read {
                    path: path.clone(),
                    source,
                })?;
                let milli: i64 = text.trim().parse().map_err(|_| SourceError::Parse {
                    path: path.clone(),
                    text: text.trim().chars().take(32).collect(),
                })?;
                Ok(milli as f64 / 1000.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thermal_zone_file_is_read_in_degrees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("temp");
        std::fs::write(&path, "52312\n").unwrap();
        let mut s = Source::parse(&format!("thermal:{}", path.display()), 0).unwrap();
        assert_eq!(s.kind(), "thermal");
        assert!((s.read().unwrap() - 52.312).abs() < 1e-9);
        std::fs::write(&path, "hot").unwrap();
        assert!(matches!(s.read(), Err(SourceError::Parse { .. })));
    }

    #[test]
    fn simulated_sources_repeat_for_the_same_seed() {
        let a: Vec<f64> = {
            let mut s = Simulated::new(3);
            (0..5).map(|_| s.next_value()).collect()
        };
        let mut s = Source::parse("simulated:3", 0).unwrap();
        let b: Vec<f64> = (0..5).map(|_| s.read().unwrap()).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| (44.0..46.0).contains(x)));
    }

    #[test]
    fn unknown_sources_are_refused() {
        assert!(Source::parse("camera", 0).is_err());
        assert!(Source::parse("simulated:x", 0).is_err());
    }
}
