//! What a reader publishes: JSON [`Reading`]s and [`Alert`]s on dashboard topics, and a postcard
//! [`Summary`] to its scheduler as a framework message.
//!
//! | topic | direction | QoS | retain | payload |
//! |---|---|---|---|---|
//! | `bramble/v1/sensor/{agent_id}/reading` | reader → dashboards | 0 | no | JSON [`Reading`] |
//! | `bramble/v1/sensor/{agent_id}/alert` | reader → dashboards | 1 | no | JSON [`Alert`] |

use serde::{Deserialize, Serialize};

/// `bramble/v1/sensor/{agent_id}/reading`.
pub fn reading_topic(agent_id: &str) -> String {
    format!("bramble/v1/sensor/{agent_id}/reading")
}

/// `bramble/v1/sensor/{agent_id}/alert`.
pub fn alert_topic(agent_id: &str) -> String {
    format!("bramble/v1/sensor/{agent_id}/alert")
}

/// One reading, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The board.
    pub agent_id: String,
    /// The reader task.
    pub task_id: String,
    /// The reading's number, from 0.
    pub seq: u64,
    /// `thermal` or `simulated`.
    pub source: String,
    /// The value, in °C.
    pub celsius: f64,
    /// The window's mean before this reading.
    pub mean: f64,
    /// The window's standard deviation before this reading.
    pub stddev: f64,
    /// Whether it is an anomaly.
    pub anomaly: bool,
}

/// An anomaly, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The board.
    pub agent_id: String,
    /// The reader task.
    pub task_id: String,
    /// The reading's number.
    pub seq: u64,
    /// The value, in °C.
    pub celsius: f64,
    /// The window's mean.
    pub mean: f64,
    /// The window's standard deviation.
    pub stddev: f64,
    /// How many standard deviations away it is.
    pub deviations: f64,
}

/// A reader's summary, sent to its scheduler every few readings (postcard).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Readings taken.
    pub readings: u64,
    /// Anomalies flagged.
    pub anomalies: u64,
    /// The last reading, in °C.
    pub last: f64,
    /// The window's mean.
    pub mean: f64,
    /// The window's standard deviation.
    pub stddev: f64,
    /// The smallest reading.
    pub min: f64,
    /// The largest reading.
    pub max: f64,
}

impl Summary {
    /// The framework message data.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising integers and floats to a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes framework message data, refusing trailing bytes.
    pub fn decode(data: &[u8]) -> Option<Self> {
        match postcard::take_from_bytes::<Self>(data) {
            Ok((s, [])) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_topics_are_keyed_by_agent() {
        assert_eq!(reading_topic("pi4"), "bramble/v1/sensor/pi4/reading");
        assert_eq!(alert_topic("pi4"), "bramble/v1/sensor/pi4/alert");
    }

    #[test]
    fn summaries_round_trip_and_garbage_is_refused() {
        let s = Summary {
            readings: 10,
            anomalies: 1,
            last: 45.5,
            mean: 45.0,
            stddev: 0.3,
            min: 44.5,
            max: 55.0,
        };
        assert_eq!(Summary::decode(&s.encode()), Some(s));
        assert_eq!(Summary::decode(&[1]), None);
    }

    #[test]
    fn readings_are_json_with_named_fields() {
        let r = Reading {
            agent_id: "pi4".into(),
            task_id: "reader-1".into(),
            seq: 3,
            source: "simulated".into(),
            celsius: 45.25,
            mean: 45.0,
            stddev: 0.25,
            anomaly: false,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"celsius\":45.25"), "{json}");
        assert!(json.contains("\"anomaly\":false"), "{json}");
    }
}
