//! Home Assistant MQTT discovery configs (`<prefix>/<component>/<node_id>/<object_id>/config`).
//!
//! Per agent, sensors for CPU used, memory used, running tasks and SoC temperature on
//! `{prefix}/sensor/bramble_{agent}/{object}/config`, read from the agent's status topic (which
//! also gives their availability); and the cluster's totals on `{prefix}/sensor/bramble/{object}/config`,
//! read from `bramble/v1/status/cluster`. The publisher sends them when [`Config::ha_discovery`]
//! is on.
//!
//! [`Config::ha_discovery`]: crate::Config::ha_discovery

use serde::Serialize;

use super::topics::{agent_topic, CLUSTER_TOPIC, MASTER_TOPIC};

/// The Home Assistant node id of an agent (`bramble_` and the id with `.` as `_`).
pub fn ha_node_id(agent_id: &str) -> String {
    let safe: String = agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("bramble_{safe}")
}

/// The device an entity belongs to.
#[derive(Debug, Serialize)]
pub struct Device {
    /// Stable ids of the device.
    pub identifiers: Vec<String>,
    /// Its name in Home Assistant.
    pub name: String,
    /// Its model.
    pub model: String,
    /// Always `Bramble`.
    pub manufacturer: &'static str,
}

/// One sensor's discovery config.
#[derive(Debug, Serialize)]
pub struct SensorConfig {
    /// The entity's name (Home Assistant shows it after the device's name).
    pub name: &'static str,
    /// Unique across Home Assistant.
    pub unique_id: String,
    /// The status topic the value is read from.
    pub state_topic: String,
    /// Extracts the value from the status JSON.
    pub value_template: &'static str,
    /// The unit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<&'static str>,
    /// The device class, where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
    /// Always `measurement`.
    pub state_class: &'static str,
    /// Where availability is read from (the agent's status topic), if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_topic: Option<String>,
    /// Turns the status JSON into `online` or `offline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_template: Option<&'static str>,
    /// `online`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_available: Option<&'static str>,
    /// `offline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_not_available: Option<&'static str>,
    /// The device.
    pub device: Device,
}

/// One sensor: its object id, name, value template, unit and device class.
#[derive(Debug, Clone, Copy)]
pub struct Sensor {
    /// The object id (the topic's `{object}`).
    pub object: &'static str,
    /// The entity's name.
    pub name: &'static str,
    /// Extracts the value from the status JSON.
    pub template: &'static str,
    /// The unit, if any.
    pub unit: Option<&'static str>,
    /// The device class, if one applies.
    pub class: Option<&'static str>,
}

const fn sensor(
    object: &'static str,
    name: &'static str,
    template: &'static str,
    unit: Option<&'static str>,
    class: Option<&'static str>,
) -> Sensor {
    Sensor {
        object,
        name,
        template,
        unit,
        class,
    }
}

/// CPU and memory used, the same fields in an agent's topic and the cluster's.
const CPU_USED: Sensor = sensor(
    "cpu_used",
    "CPU used",
    "{{ (value_json.cpu_millis_used / 1000) | round(2) }}",
    Some("cores"),
    None,
);
const MEM_USED: Sensor = sensor(
    "mem_used",
    "Memory used",
    "{{ value_json.mem_mib_used }}",
    Some("MiB"),
    None,
);

/// Each agent's sensors, read from its status topic.
pub const AGENT_SENSORS: [Sensor; 4] = [
    CPU_USED,
    MEM_USED,
    sensor(
        "running_tasks",
        "Running tasks",
        "{{ value_json.running_tasks }}",
        None,
        None,
    ),
    sensor(
        "soc_temp",
        "SoC temperature",
        "{{ value_json.soc_temp_c }}",
        Some("°C"),
        Some("temperature"),
    ),
];

/// The cluster's sensors, read from `bramble/v1/status/cluster`.
pub const CLUSTER_SENSORS: [Sensor; 5] = [
    sensor(
        "agents_online",
        "Agents online",
        "{{ value_json.agents_online }}",
        None,
        None,
    ),
    sensor(
        "running_tasks",
        "Running tasks",
        "{{ value_json.tasks.running }}",
        None,
        None,
    ),
    CPU_USED,
    MEM_USED,
    sensor(
        "offers_outstanding",
        "Offers outstanding",
        "{{ value_json.offers_outstanding }}",
        None,
        None,
    ),
];

/// The config topic of one sensor.
pub fn config_topic(prefix: &str, node_id: &str, object_id: &str) -> String {
    format!("{prefix}/sensor/{node_id}/{object_id}/config")
}

/// The discovery configs of an agent's sensors, as (topic, config).
pub fn agent_configs(
    prefix: &str,
    agent_id: &str,
    hostname: &str,
    model: &str,
) -> Vec<(String, SensorConfig)> {
    let node = ha_node_id(agent_id);
    AGENT_SENSORS
        .iter()
        .map(|s| {
            (
                config_topic(prefix, &node, s.object),
                SensorConfig {
                    name: s.name,
                    unique_id: format!("{node}_{}", s.object),
                    state_topic: agent_topic(agent_id),
                    value_template: s.template,
                    unit_of_measurement: s.unit,
                    device_class: s.class,
                    state_class: "measurement",
                    availability_topic: Some(agent_topic(agent_id)),
                    availability_template: Some("{{ value_json.state }}"),
                    payload_available: Some("online"),
                    payload_not_available: Some("offline"),
                    device: Device {
                        identifiers: vec![node.clone()],
                        name: if hostname.is_empty() || hostname == agent_id {
                            format!("Bramble {agent_id}")
                        } else {
                            format!("Bramble {agent_id} ({hostname})")
                        },
                        model: model.to_owned(),
                        manufacturer: "Bramble",
                    },
                },
            )
        })
        .collect()
}

/// The discovery configs of the cluster's sensors (node id `bramble`), as (topic, config).
pub fn cluster_configs(prefix: &str) -> Vec<(String, SensorConfig)> {
    CLUSTER_SENSORS
        .iter()
        .map(|s| {
            (
                config_topic(prefix, "bramble", s.object),
                SensorConfig {
                    name: s.name,
                    unique_id: format!("bramble_cluster_{}", s.object),
                    state_topic: CLUSTER_TOPIC.to_owned(),
                    value_template: s.template,
                    unit_of_measurement: s.unit,
                    device_class: s.class,
                    state_class: "measurement",
                    // The master's availability: its last will makes them unavailable.
                    availability_topic: Some(MASTER_TOPIC.to_owned()),
                    availability_template: Some("{{ value_json.state }}"),
                    payload_available: Some("online"),
                    payload_not_available: Some("offline"),
                    device: Device {
                        identifiers: vec!["bramble_cluster".to_owned()],
                        name: "Bramble cluster".to_owned(),
                        model: "Bramble master".to_owned(),
                        manufacturer: "Bramble",
                    },
                },
            )
        })
        .collect()
}
