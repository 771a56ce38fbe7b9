//! The embedded MQTT broker: rumqttd, started in the master's process on its own thread.
//!
//! rumqttd's sample configuration reserves about 1 GB per topic filter, and a zero in its router
//! settings panics. Here every limit is set explicitly and kept small for a Pi: each filter's log holds
//! about `segment_size × segment_count` bytes, packets are capped at [`bramble_mqtt::MAX_PACKET`]
//! (1 MiB; agent messages are under 6 KiB; an offers event for thousands of agents is the largest
//! payload), and connections are capped. The cap is what keeps one large message from taking a
//! client off the broker: no client takes in less, so none is handed what it cannot read, and
//! rumqttd disconnects a publisher that sends more (the message goes nowhere).
//!
//! rumqttd never sets `TCP_NODELAY` on the connections it accepts, so with Nagle's algorithm and
//! the clients' delayed ACKs a forwarded message could wait ~40 ms at each hop (accept → RUNNING
//! took ~130 ms). Linux copies `TCP_NODELAY` from a listening socket to the sockets it accepts, so
//! once rumqttd listens, [`start`] finds its listening socket among this process's descriptors and
//! sets the option there ([`set_listener_nodelay`]).
//!
//! **Logins.** With [`BrokerConfig::auth`] set, every CONNECT must carry a principal's username
//! and broker password and a client id of that principal's, bound to that password (rumqttd's
//! auth handler sees all three: [`crate::credentials::Authenticator`]); anonymous and wrong logins
//! are refused and counted.
//! Without it the broker lets anyone in, which [`start`] allows only on a loopback address unless
//! told it is insecure on purpose ([`Anonymous`]).
//!
//! rumqttd has no shutdown and no persistence: the broker lives as long as the process, and retained
//! messages (the master's `Hello`, the dashboard's status topics) are re-published by the master when
//! it starts.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who may connect without a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    /// Nobody, unless the broker listens on loopback only (`bramble up`).
    LoopbackOnly,
    /// Anybody, on any address (`--insecure-allow-anonymous`; logged loudly).
    Insecure,
}

/// Limits of the embedded broker, and who may log in.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where it listens (MQTT 3.1.1).
    pub listen: SocketAddr,
    /// The most client connections.
    pub max_connections: usize,
    /// The largest packet accepted (its remaining length), in bytes; a publisher sending more is
    /// disconnected. Keep it at most [`bramble_mqtt::MAX_PACKET`], the least every client takes.
    pub max_payload: usize,
    /// Bytes per log segment of a filter.
    pub segment_size: usize,
    /// Segments kept per filter.
    pub segment_count: usize,
    /// The logins it accepts; `None` lets every client in (see [`BrokerConfig::anonymous`]).
    pub auth: Option<Arc<crate::credentials::Authenticator>>,
    /// Where a broker without [`BrokerConfig::auth`] may listen.
    pub anonymous: Anonymous,
}

impl BrokerConfig {
    /// Small settings for `listen`: 10,240 connections, 1 MiB payloads, 4 × 64 KiB per filter.
    ///
    /// rumqttd keeps a log per subscription filter (each agent's command topic is one) that grows
    /// until its segments rotate, so the segments, not the payload cap, bound its memory: about
    /// 256 KiB per filter (a segment can still take one larger message).
    pub fn small(listen: SocketAddr) -> Self {
        BrokerConfig {
            listen,
            max_connections: 10_240,
            max_payload: bramble_mqtt::MAX_PACKET,
            segment_size: 64 * 1024,
            segment_count: 4,
            auth: None,
            anonymous: Anonymous::LoopbackOnly,
        }
    }

    /// The same, accepting only the logins of `auth`.
    pub fn with_auth(self, auth: Arc<crate::credentials::Authenticator>) -> Self {
        BrokerConfig {
            auth: Some(auth),
            ..self
        }
    }
}

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A limit is zero (rumqttd would panic on it).
    #[error("broker setting `{0}` must be above 0")]
    Zero(&'static str),
    /// No logins were given and the address is not loopback.
    #[error("the embedded broker on {0} would let anyone in: it needs credentials off loopback (or --insecure-allow-anonymous)")]
    AnonymousOffLoopback(SocketAddr),
    /// The broker thread ended at once, e.g. because the port is taken.
    #[error("the embedded broker could not listen on {listen}: {reason}")]
    Start {
        /// The address.
        listen: SocketAddr,
        /// rumqttd's error, or what was seen.
        reason: String,
    },
}

/// Starts the broker on its own thread and returns once it accepts connections.
pub fn start(config: &BrokerConfig) -> Result<(), BrokerError> {
    for (name, value) in [
        ("max_connections", config.max_connections),
        ("max_payload", config.max_payload),
        ("segment_size", config.segment_size),
        ("segment_count", config.segment_count),
    ] {
        if value == 0 {
            return Err(BrokerError::Zero(name));
        }
    }
    match (&config.auth, config.anonymous) {
        (Some(_), _) => {}
        (None, Anonymous::LoopbackOnly) if config.listen.ip().is_loopback() => {}
        (None, Anonymous::LoopbackOnly) => {
            return Err(BrokerError::AnonymousOffLoopback(config.listen))
        }
        (None, Anonymous::Insecure) => tracing::warn!(
            listen = %config.listen,
            "INSECURE: the embedded broker lets anyone connect without a login \
             (--insecure-allow-anonymous); anyone who reaches it can run commands on every board"
        ),
    }
    // Fail early and clearly when the port is taken: rumqttd would only log it on its thread.
    if let Err(e) = std::net::TcpListener::bind(config.listen) {
        return Err(BrokerError::Start {
            listen: config.listen,
            reason: e.to_string(),
        });
    }
    let mut server = rumqttd::ServerSettings {
        name: "mqtt-v4".into(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: config.max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    if let Some(auth) = &config.auth {
        let auth = Arc::clone(auth);
        server.set_auth_handler(
            move |client_id: String, username: String, password: String| {
                std::future::ready(auth.check(&client_id, &username, &password))
            },
        );
    }
    let rumqttd_config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: config.segment_size,
            max_segment_count: config.segment_count,
            ..Default::default()
        },
        v4: Some(HashMap::from([("mqtt-v4".to_owned(), server)])),
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(rumqttd_config);
            let result = broker.start();
            let _ = tx.send(result.map_err(|e| e.to_string()));
        })
        .map_err(|e| BrokerError::Start {
            listen: config.listen,
            reason: e.to_string(),
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(result) = rx.try_recv() {
            return Err(BrokerError::Start {
                listen: config.listen,
                reason: result.err().unwrap_or_else(|| "it stopped".into()),
            });
        }
        if TcpStream::connect_timeout(&connect_addr(config.listen), Duration::from_millis(100))
            .is_ok()
        {
            match set_listener_nodelay(config.listen) {
                Ok(0) => tracing::warn!(
                    listen = %config.listen,
                    "cannot find the broker's listening socket: its connections keep Nagle's algorithm"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    listen = %config.listen,
                    "cannot set TCP_NODELAY on the broker's listening socket: {e}"
                ),
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::Start {
        listen: config.listen,
        reason: "it did not accept connections within 10 s".into(),
    })
}

/// Sets `TCP_NODELAY` on this process's listening TCP sockets bound to `listen`, so that every
/// connection they accept from now on inherits it (Linux copies the option on accept). Returns how
/// many sockets it set.
#[allow(unsafe_code)] // borrowing a descriptor by number; see the SAFETY note
pub fn set_listener_nodelay(listen: SocketAddr) -> std::io::Result<usize> {
    use nix::sys::socket::{getsockname, getsockopt, setsockopt, sockopt, SockaddrStorage};
    use std::os::fd::{AsRawFd as _, BorrowedFd};

    let mut set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue; // closed since the directory was read
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        // SAFETY: `fd` was open a moment ago and is only borrowed for the calls below; if another
        // thread closed and reused it meanwhile, the checks below fail or find another socket,
        // whose options are only read unless it is a listener on `listen`.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(local) = getsockname::<SockaddrStorage>(fd.as_raw_fd()) else {
            continue;
        };
        let local: Option<SocketAddr> = if let Some(v4) = local.as_sockaddr_in() {
            Some(SocketAddr::from((v4.ip(), v4.port())))
        } else {
            local
                .as_sockaddr_in6()
                .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
        };
        if local != Some(listen) || !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            continue;
        }
        setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(std::io::Error::from)?;
        set += 1;
    }
    Ok(set)
}

/// Where a local client reaches a broker listening on `listen` (0.0.0.0 means loopback).
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn the_broker_starts_and_accepts_connections() {
        let addr = free_port();
        start(&BrokerConfig::small(addr)).unwrap();
        assert!(TcpStream::connect(addr).is_ok());
    }

    #[test]
    fn a_listener_set_to_nodelay_passes_it_to_the_connections_it_accepts() {
        use nix::sys::socket::{getsockopt, sockopt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(set_listener_nodelay(addr).unwrap(), 1);
        let _client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(getsockopt(&accepted, sockopt::TcpNoDelay).unwrap());
    }

    /// The embedded broker's side of a client connection (in this process) has `TCP_NODELAY`.
    #[test]
    #[allow(unsafe_code)]
    fn the_embedded_broker_accepts_connections_without_nagle() {
        use nix::sys::socket::{getpeername, getsockopt, sockopt, SockaddrStorage};
        use std::os::fd::{AsRawFd as _, BorrowedFd};
        let addr = free_port();
        start(&BrokerConfig::small(addr)).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let client_addr = client.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut found = None;
            for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
                let fd: i32 = entry
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                // SAFETY: only read from, while this test holds its own sockets open.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let Ok(peer) = getpeername::<SockaddrStorage>(fd.as_raw_fd()) else {
                    continue;
                };
                let peer = peer
                    .as_sockaddr_in()
                    .map(|v4| SocketAddr::from((v4.ip(), v4.port())));
                if peer == Some(client_addr) {
                    found = Some(getsockopt(&fd, sockopt::TcpNoDelay).unwrap());
                }
            }
            if let Some(nodelay) = found {
                assert!(nodelay, "the broker's socket keeps Nagle's algorithm");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the broker never accepted the connection"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn only_the_listener_on_the_given_address_is_changed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = free_port();
        assert_eq!(set_listener_nodelay(other).unwrap(), 0);
        drop(listener);
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = start(&BrokerConfig::small(addr)).unwrap_err();
        assert!(err.to_string().contains("could not listen"), "{err}");
    }

    #[test]
    fn a_zero_limit_is_refused_instead_of_panicking() {
        let mut config = BrokerConfig::small(free_port());
        config.segment_count = 0;
        assert!(matches!(
            start(&config),
            Err(BrokerError::Zero("segment_count"))
        ));
    }

    #[test]
    fn a_broker_without_logins_is_refused_off_loopback_unless_insecure_on_purpose() {
        let port = free_port().port();
        let lan = SocketAddr::from(([0, 0, 0, 0], port));
        assert!(matches!(
            start(&BrokerConfig::small(lan)),
            Err(BrokerError::AnonymousOffLoopback(addr)) if addr == lan
        ));
        assert!(
            TcpStream::connect(connect_addr(lan)).is_err(),
            "nothing listens"
        );
        let insecure = BrokerConfig {
            anonymous: Anonymous::Insecure,
            ..BrokerConfig::small(lan)
        };
        start(&insecure).unwrap();
        assert!(TcpStream::connect(connect_addr(lan)).is_ok());
    }
}
