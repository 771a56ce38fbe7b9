//! Broker addresses, as every Bramble client is given them: `mqtt://[user[:password]@]host[:port]`
//! (or `mqtts://…` for TLS, port 8883 by default) for one broker, or a comma-separated list
//! `mqtt://a:1883,mqtt://b:1883` for a cluster with more than one (standby brokers, or a pair of
//! bridged brokers).
//!
//! [`BrokerAddr`] is one broker; [`Brokers`] a non-empty list of them in the order they are tried.
//! A [`crate::Session`] connects to the first and moves on to the next one whenever a connection
//! attempt fails or an established connection drops (see there). [`Brokers`]'s `Display` is the
//! comma list it parses from, so a list is handed on (e.g. to tasks in `BRAMBLE_BROKER`) as text.
//! Every parse error is a [`BrokerError`] naming the URL and why it was refused.
//!
//! **Userinfo.** A URL may carry a login (`mqtt://user:pass@host`, percent-decoded; `user@host`
//! logs in with an empty password), kept as [`BrokerAddr::login`]. No `Display`, `Debug` or error
//! ever shows the password: they write `mqtt://user@host:port`. Hand tasks a list without logins
//! ([`Brokers::without_logins`]).

use core::fmt;
use core::hash::{Hash, Hasher};
use core::str::FromStr;

use crate::Login;

/// The default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;
/// The default MQTT-over-TLS port (`mqtts://`).
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// Why a broker URL or list was refused. The URLs it names never show a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The URL does not start with `mqtt://` or `mqtts://`.
    NotMqtt {
        /// The URL (its password left out).
        url: String,
    },
    /// The port is not a number from 0 to 65535.
    BadPort {
        /// The URL (its password left out).
        url: String,
        /// The port as written.
        port: String,
    },
    /// The URL names no host (or a host with a path).
    NoHost {
        /// The URL (its password left out).
        url: String,
    },
    /// A list names no broker, or has an empty entry (`mqtt://a,,mqtt://b`).
    Empty {
        /// The list as written (passwords left out).
        list: String,
    },
    /// An `mqtts://` URL, but this build has no TLS (the crate's `tls` feature).
    TlsNotBuilt {
        /// The URL (its password left out).
        url: String,
    },
    /// The userinfo is not valid percent-encoded UTF-8, or names no user.
    BadUserinfo {
        /// The URL (its password left out).
        url: String,
    },
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::NotMqtt { url } => write!(
                f,
                "`{url}` is not an mqtt:// or mqtts:// URL (e.g. mqtt://192.168.1.10:1883)"
            ),
            BrokerError::BadPort { url, port } => write!(f, "bad port `{port}` in `{url}`"),
            BrokerError::NoHost { url } => write!(f, "no host in `{url}`"),
            BrokerError::Empty { list } => write!(
                f,
                "`{list}` names no broker, or has an empty entry (e.g. mqtt://a:1883,mqtt://b:1883)"
            ),
            BrokerError::TlsNotBuilt { url } => write!(
                f,
                "`{url}` needs TLS, which this build lacks (use the TLS build, or an mqtt:// broker)"
            ),
            BrokerError::BadUserinfo { url } => write!(
                f,
                "bad user or password in `{url}` (expected mqtt://USER:PASSWORD@HOST, percent-encoded)"
            ),
        }
    }
}

impl std::error::Error for BrokerError {}

/// `url` with the password of its userinfo (if any) left out: `mqtt://user:pw@h` → `mqtt://user@h`.
/// Every message that quotes a broker URL goes through it.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}@{host}")
}

/// Whether `list` (one URL or a comma list) carries a password in any URL's userinfo: what a
/// command line must refuse, since argv is visible to everyone in `ps`.
pub fn has_password(list: &str) -> bool {
    list.split(',').any(|url| {
        url.split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// Percent-decodes `text` (`%40` → `@`), or `None` if an escape is bad or the result not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One broker: its host and port, whether it speaks TLS, and the login its URL carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection is TLS (`mqtts://`).
    pub tls: bool,
    /// The login this broker is presented (from the URL's userinfo, or settled by
    /// [`Brokers::with_login`]); `None`: the client's [`crate::ClientConfig::login`], if any.
    pub login: Option<Login>,
}

/// Equal addresses hash alike; the login is left out (it never tells two brokers apart).
impl Hash for BrokerAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.port.hash(state);
        self.tls.hash(state);
    }
}

impl BrokerAddr {
    /// The broker at `host`:`port`, plain MQTT, no login of its own.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        BrokerAddr {
            host: host.into(),
            port,
            tls: false,
            login: None,
        }
    }

    /// The same broker, presenting `login`.
    pub fn with_login(mut self, login: Option<Login>) -> Self {
        self.login = login;
        self
    }

    /// Parses `mqtt://[user[:password]@]host[:port]` (port 1883 when left out; IPv6 hosts in
    /// brackets) or `mqtts://…` (TLS, port 8883 when left out). User and password are
    /// percent-decoded.
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let shown = || redact(url);
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(BrokerError::NotMqtt { url: shown() });
        };
        if tls && !crate::tls::BUILT {
            return Err(BrokerError::TlsNotBuilt { url: shown() });
        }
        let rest = rest.trim_end_matches('/');
        let (login, rest) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let bad = || BrokerError::BadUserinfo { url: shown() };
                let user = percent_decode(user).ok_or_else(bad)?;
                let pass = percent_decode(pass).ok_or_else(bad)?;
                if user.is_empty() {
                    return Err(bad());
                }
                (Some(Login::new(user, pass)), hostport)
            }
            None => (None, rest),
        };
        let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                if h.starts_with('[') && !h.ends_with(']') {
                    // An IPv6 address without a port: `[::1]`.
                    (rest, default_port)
                } else {
                    let port = p.parse::<u16>().map_err(|_| BrokerError::BadPort {
                        url: shown(),
                        port: p.to_owned(),
                    })?;
                    (h, port)
                }
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(BrokerError::NoHost { url: shown() });
        }
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
            tls,
            login,
        })
    }
}

impl FromStr for BrokerAddr {
    type Err = BrokerError;

    fn from_str(url: &str) -> Result<Self, BrokerError> {
        Self::parse(url)
    }
}

/// `mqtt[s]://[user@]host:port`: the URL without its password, so it can be logged and shown.
impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "mqtts://" } else { "mqtt://" })?;
        if let Some(login) = &self.login {
            write!(f, "{}@", PercentEncoded(&login.username))?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Writes a userinfo part percent-encoded where it must be (`@ : / % ,` and non-printables), so
/// what `Display` writes parses back.
struct PercentEncoded<'a>(&'a str);

impl fmt::Display for PercentEncoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_graphic() && !matches!(b, b'@' | b':' | b'/' | b'%' | b',') {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
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
                list: list.split(',').map(redact).collect::<Vec<_>>().join(","),
            },
            other => other,
        })
    }

    /// Parses each of `urls` as one broker URL (e.g. the entries of a TOML array).
    pub fn from_urls<S: AsRef<str>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<Self, BrokerError> {
        let mut list = Vec::new();
        let mut seen = Vec::new();
        for url in urls {
            let url = url.as_ref().trim();
            seen.push(redact(url));
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

    /// The list with each broker's login settled, in order of precedence: `explicit` (a username
    /// and password the client was given) for every broker, else the broker URL's own userinfo,
    /// else `fallback` (e.g. a principal's credential).
    pub fn with_login(mut self, explicit: Option<&Login>, fallback: Option<&Login>) -> Brokers {
        for addr in &mut self.0 {
            if let Some(login) = explicit {
                addr.login = Some(login.clone());
            } else if addr.login.is_none() {
                addr.login = fallback.cloned();
            }
        }
        self
    }

    /// The same brokers without any login: what a client hands on (e.g. to tasks in
    /// `BRAMBLE_BROKER`), since a task logs in as its framework, not as the agent.
    pub fn without_logins(&self) -> Brokers {
        Brokers(self.0.iter().map(|a| a.clone().with_login(None)).collect())
    }

    /// Whether any broker has a login of its own.
    pub fn has_login(&self) -> bool {
        self.0.iter().any(|a| a.login.is_some())
    }

    /// Whether any broker speaks TLS (`mqtts://`).
    pub fn any_tls(&self) -> bool {
        self.0.iter().any(|a| a.tls)
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

    #[test]
    fn userinfo_is_kept_as_a_percent_decoded_login() {
        let a = BrokerAddr::parse("mqtt://agent-pi:s%40cr%3At@10.0.0.2:1884").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.0.2", 1884));
        let login = a.login.unwrap();
        assert_eq!(login.username, "agent-pi");
        assert_eq!(login.password.expose(), "s@cr:t");
        let a = BrokerAddr::parse("mqtt://only-user@[::1]").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 1883));
        assert_eq!(
            a.login.unwrap().password.expose(),
            "",
            "no password: an empty one"
        );
        assert!(BrokerAddr::parse("mqtt://h").unwrap().login.is_none());
    }

    #[test]
    fn a_url_with_a_password_never_shows_it_in_display_debug_or_errors() {
        let a = BrokerAddr::parse("mqtt://fw-pi:hunter2@m.lan:1883").unwrap();
        assert_eq!(a.to_string(), "mqtt://fw-pi@m.lan:1883");
        let list = Brokers::parse("mqtt://fw-pi:hunter2@a,mqtt://b").unwrap();
        assert_eq!(list.to_string(), "mqtt://fw-pi@a:1883,mqtt://b:1883");
        let shown = format!("{a:?} {list:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("fw-pi"),
            "{shown}"
        );
        for bad in [
            "mqtt://u:hunter2@h:99999",
            "mqtt://u:hunter2@",
            "mqtt://u:hunter2%zz@h",
            "mqtt://:hunter2@h",
            "tcp://u:hunter2@h",
            "mqtt://u:hunter2@h,,mqtt://b",
            "mqtt://a,mqtt://u:hunter2@h:x",
        ] {
            let e = Brokers::parse(bad).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter2"), "{bad}: {shown}");
            assert!(
                shown.contains("u@") || shown.contains("@h"),
                "{bad}: {shown}"
            );
        }
    }

    #[test]
    fn a_username_that_needs_escaping_prints_back_to_the_same_login() {
        let a = BrokerAddr::parse("mqtt://a%40b%3Ac:x@h").unwrap();
        assert_eq!(a.to_string(), "mqtt://a%40b%3Ac@h:1883");
        let back = BrokerAddr::parse(&a.to_string()).unwrap();
        assert_eq!(back.login.unwrap().username, "a@b:c");
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn mqtts_urls_are_refused_by_a_build_without_tls() {
        let e = BrokerAddr::parse("mqtts://u:hunter2@m.lan").unwrap_err();
        assert!(matches!(e, BrokerError::TlsNotBuilt { .. }));
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    #[cfg(feature = "tls")]
    fn mqtts_urls_are_tls_on_port_8883_by_default() {
        let a = BrokerAddr::parse("mqtts://m.lan").unwrap();
        assert!(a.tls);
        assert_eq!(a.port, 8883);
        assert_eq!(a.to_string(), "mqtts://m.lan:8883");
        assert!(!BrokerAddr::parse("mqtt://m.lan").unwrap().tls);
        assert!(Brokers::parse("mqtt://a,mqtts://b:1").unwrap().any_tls());
    }

    #[test]
    fn an_explicit_login_beats_the_urls_which_beats_the_fallback() {
        let list = Brokers::parse("mqtt://url-user:p@a,mqtt://b").unwrap();
        let explicit = Login::new("explicit", "e");
        let fallback = Login::new("agent-pi", "c");
        let users = |l: &Brokers| -> Vec<Option<String>> {
            l.iter()
                .map(|a| a.login.as_ref().map(|l| l.username.clone()))
                .collect()
        };
        let settled = list.clone().with_login(Some(&explicit), Some(&fallback));
        assert_eq!(
            users(&settled),
            [Some("explicit".into()), Some("explicit".into())]
        );
        let settled = list.clone().with_login(None, Some(&fallback));
        assert_eq!(
            users(&settled),
            [Some("url-user".into()), Some("agent-pi".into())]
        );
        let settled = list.clone().with_login(None, None);
        assert_eq!(users(&settled), [Some("url-user".into()), None]);
        assert!(!settled.without_logins().has_login());
        assert_eq!(
            settled.without_logins().to_string(),
            "mqtt://a:1883,mqtt://b:1883"
        );
    }

    #[test]
    fn a_password_in_a_list_is_found_wherever_it_is() {
        assert!(has_password("mqtt://u:p@h"));
        assert!(has_password("mqtt://a,mqtt://u:p@h"));
        assert!(!has_password("mqtt://u@h,mqtt://b"));
        assert!(!has_password("mqtt://h:1883"));
        assert_eq!(redact("mqtt://u:p@h:1"), "mqtt://u@h:1");
        assert_eq!(redact("mqtt://h:1"), "mqtt://h:1");
    }
}
