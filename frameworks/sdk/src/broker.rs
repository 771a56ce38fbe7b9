//! Broker addresses: `mqtt://host[:port]`, as the agent hands them to tasks in `BRAMBLE_BROKER`.

use crate::error::SdkError;

/// The default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;

/// A broker's host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerAddr {
    /// Parses `mqtt://host[:port]` (port 1883 when left out; IPv6 hosts in brackets).
    pub fn parse(url: &str) -> Result<Self, SdkError> {
        let bad = |reason: &str| SdkError::BadBroker {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| bad("it must start with mqtt:// (e.g. mqtt://192.168.1.10:1883)"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                if h.starts_with('[') && !h.ends_with(']') {
                    // An IPv6 address without a port: `[::1]`.
                    (rest, DEFAULT_PORT)
                } else {
                    let port = p.parse::<u16>().map_err(|_| bad("bad port"))?;
                    (h, port)
                }
            }
            _ => (rest, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(bad("no host"));
        }
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl core::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_and_without_a_port() {
        let a = BrokerAddr::parse("mqtt://10.0.0.2:1884").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.0.2", 1884));
        let a = BrokerAddr::parse("mqtt://master.lan").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("master.lan", 1883));
        let a = BrokerAddr::parse("mqtt://[::1]:99").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 99));
        assert_eq!(a.to_string(), "mqtt://[::1]:99");
    }

    #[test]
    fn broker_urls_without_scheme_host_or_valid_port_are_refused() {
        for url in [
            "10.0.0.2:1883",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://x:99999",
            "http://x",
        ] {
            assert!(BrokerAddr::parse(url).is_err(), "{url}");
        }
    }
}
