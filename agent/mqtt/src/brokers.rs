//! Broker addresses, as every Bramble client is given them: `mqtt://host[:port]` for one broker,
//! or a comma-separated list `mqtt://a:1883,mqtt://b:1883` for a cluster with more than one
//! (standby brokers, or a pair of bridged brokers).
//!
//! [`BrokerAddr`] is one broker; [`Brokers`] a non-empty list of them in the order they are tried.
//! A [`crate::Session`] connects to the first and moves on to the next one whenever a connection
//! attempt fails or an established connection drops (see there). [`Brokers`]'s `Display` is the
//! comma list it parses from, so a list is handed on (e.g. to tasks in `BRAMBLE_BROKER`) as text.
//! Every parse error is a [`BrokerError`] naming the URL and why it was refused.

use core::fmt;
use core::str::FromStr;

/// The default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;

/// Why a broker URL or list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The URL does not start with `mqtt://`.
    NotMqtt {
        /// The URL.
        url: String,
    },
    /// The port is not a number from 0 to 65535.
    BadPort {
        /// The URL.
        url: String,
        /// The port as written.
        port: String,
    },
    /// The URL names no host (or a host with a path).
    NoHost {
        /// The URL.
        url: String,
    },
    /// A list names no broker, or has an empty entry (`mqtt://a,,mqtt://b`).
    Empty {
        /// The list as written.
        list: String,
    },
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::NotMqtt { url } => write!(
                f,
                "`{url}` is not an mqtt:// URL (e.g. mqtt://192.168.1.10:1883)"
            ),
            BrokerError::BadPort { url, port } => write!(f, "bad port `{port}` in `{url}`"),
            BrokerError::NoHost { url } => write!(f, "no host in `{url}`"),
            BrokerError::Empty { list } => write!(
                f,
                "`{list}` names no broker, or has an empty entry (e.g. mqtt://a:1883,mqtt://b:1883)"
            ),
        }
    }
}

impl std::error::Error for BrokerError {}

/// One broker's host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerAddr {
    /// The broker at `host`:`port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        BrokerAddr {
            host: host.into(),
            port,
        }
    }

    /// Parses `mqtt://host[:port]` (port 1883 when left out; IPv6 hosts in brackets).
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| BrokerError::NotMqtt {
                url: url.to_owned(),
            })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                if h.starts_with('[') && !h.ends_with(']') {
                    // An IPv6 address without a port: `[::1]`.
                    (rest, DEFAULT_PORT)
                } else {
                    let port = p.parse::<u16>().map_err(|_| BrokerError::BadPort {
                        url: url.to_owned(),
                        port: p.to_owned(),
                    })?;
                    (h, port)
                }
            }
            _ => (rest, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(BrokerError::NoHost {
                url: url.to_owned(),
            });
        }
        Ok(BrokerAddr::new(host, port))
    }
}

impl FromStr for BrokerAddr {
    type Err = BrokerError;

    fn from_str(url: &str) -> Result<Self, BrokerError> {
        Self::parse(url)
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

/// A non-empty list of brokers, in the order a client tries them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Brokers(Vec<BrokerAddr>);

impl Brokers {
    /// Parses one URL or a comma-separated list of them (`mqtt://a:1883,mqtt://b`); blanks
    /// around each URL are ignored.
    pub fn parse(list: &str) -> Result<Self, BrokerError> {
        Self::from_urls(list.split(',')).map_err(|e| match e {
            BrokerError::Empty { .. } => BrokerError::Empty {
                list: list.to_owned(),
            },
            other => other,
        })
    }

    /// Parses each of `urls` as one `mqtt://host[:port]` (e.g. the entries of a TOML array).
    pub fn from_urls<S: AsRef<str>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<Self, BrokerError> {
        let mut list = Vec::new();
        let mut seen = Vec::new();
        for url in urls {
            let url = url.as_ref().trim();
            seen.push(url.to_owned());
            if url.is_empty() {
                return Err(BrokerError::Empty {
                    list: seen.join(","),
                });
            }
            list.push(BrokerAddr::parse(url)?);
        }
        Self::new(list).ok_or(BrokerError::Empty {
            list: String::new(),
        })
    }

    /// The list of `addrs`, or `None` if it is empty.
    pub fn new(addrs: Vec<BrokerAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Brokers(addrs))
    }

    /// The first broker, the one a client tries first.
    pub fn first(&self) -> &BrokerAddr {
        &self.0[0]
    }

    /// The broker at `index`, counted round the list (`index % len`).
    pub fn get(&self, index: usize) -> &BrokerAddr {
        &self.0[index % self.0.len()]
    }

    /// How many brokers there are (at least one).
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The brokers, in order.
    pub fn iter(&self) -> core::slice::Iter<'_, BrokerAddr> {
        self.0.iter()
    }
}

impl FromStr for Brokers {
    type Err = BrokerError;

    fn from_str(list: &str) -> Result<Self, BrokerError> {
        Self::parse(list)
    }
}

/// The comma list [`Brokers::parse`] reads: `mqtt://a:1883,mqtt://b:1883`.
impl fmt::Display for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

impl From<BrokerAddr> for Brokers {
    fn from(addr: BrokerAddr) -> Self {
        Brokers(vec![addr])
    }
}

impl From<&BrokerAddr> for Brokers {
    fn from(addr: &BrokerAddr) -> Self {
        Brokers(vec![addr.clone()])
    }
}

impl From<&Brokers> for Brokers {
    fn from(brokers: &Brokers) -> Self {
        brokers.clone()
    }
}

impl<'a> IntoIterator for &'a Brokers {
    type Item = &'a BrokerAddr;
    type IntoIter = core::slice::Iter<'a, BrokerAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
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
        let a = BrokerAddr::parse("mqtt://[::1]").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 1883));
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

    #[test]
    fn each_error_names_the_url_and_why() {
        assert_eq!(
            BrokerAddr::parse("http://x").unwrap_err(),
            BrokerError::NotMqtt {
                url: "http://x".into()
            }
        );
        let e = BrokerAddr::parse("mqtt://x:99999").unwrap_err();
        assert_eq!(
            e,
            BrokerError::BadPort {
                url: "mqtt://x:99999".into(),
                port: "99999".into()
            }
        );
        assert_eq!(e.to_string(), "bad port `99999` in `mqtt://x:99999`");
        assert_eq!(
            BrokerAddr::parse("mqtt://:1").unwrap_err().to_string(),
            "no host in `mqtt://:1`"
        );
    }

    #[test]
    fn a_comma_list_parses_in_order_and_prints_back_the_same() {
        let list = Brokers::parse("mqtt://a:1884, mqtt://b ,mqtt://[::1]:2").unwrap();
        let addrs: Vec<_> = list.iter().cloned().collect();
        assert_eq!(
            addrs,
            [
                BrokerAddr::new("a", 1884),
                BrokerAddr::new("b", 1883),
                BrokerAddr::new("::1", 2)
            ]
        );
        assert_eq!(list.len(), 3);
        assert_eq!(list.first(), &BrokerAddr::new("a", 1884));
        assert_eq!(list.get(4), &BrokerAddr::new("b", 1883), "counted round");
        assert_eq!(
            list.to_string(),
            "mqtt://a:1884,mqtt://b:1883,mqtt://[::1]:2"
        );
        assert_eq!(Brokers::parse(&list.to_string()).unwrap(), list);
    }

    #[test]
    fn a_single_url_is_a_list_of_one() {
        let list: Brokers = "mqtt://m".parse().unwrap();
        assert_eq!(list, Brokers::from(BrokerAddr::new("m", 1883)));
        assert_eq!(list.to_string(), "mqtt://m:1883");
    }

    #[test]
    fn a_list_with_a_bad_or_empty_entry_is_refused_naming_it() {
        assert_eq!(
            Brokers::parse("mqtt://a,http://b").unwrap_err(),
            BrokerError::NotMqtt {
                url: "http://b".into()
            }
        );
        for list in ["", " ", "mqtt://a,,mqtt://b", "mqtt://a,"] {
            assert_eq!(
                Brokers::parse(list).unwrap_err(),
                BrokerError::Empty { list: list.into() },
                "{list:?}"
            );
        }
        assert!(Brokers::from_urls(Vec::<String>::new()).is_err());
        assert!(Brokers::new(Vec::new()).is_none());
    }

    #[test]
    fn an_array_of_urls_parses_each_as_one_url() {
        let list = Brokers::from_urls(["mqtt://a", "mqtt://b:2"]).unwrap();
        assert_eq!(list.to_string(), "mqtt://a:1883,mqtt://b:2");
        assert!(Brokers::from_urls(["mqtt://a,mqtt://b"]).is_err());
    }
}
