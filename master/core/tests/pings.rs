//! The health check's pings on simulated time: spread over the ping interval, never one burst to
//! every agent, each silent agent pinged once an interval, round robin.

use std::collections::BTreeMap;

use agent_nostd_core::wire::{AgentMsg, MasterMsg, ResourceReport};
use agent_nostd_core::Resources;
use bramble_master_core::{Config, MasterCore, Outgoing};

mod support;
use support::{agent_info as info, send_agent};

/// The agents pinged in what the core sent since the last call, by topic's agent id.
fn pinged(core: &mut MasterCore) -> Vec<String> {
    std::iter::from_fn(|| core.poll_transmit())
        .filter_map(|t| match t.message {
            Outgoing::Agent(m) if matches!(m.msg, MasterMsg::Ping { .. }) => {
                Some(t.topic.split('/').nth(3).unwrap().to_owned())
            }
            _ => None,
        })
        .collect()
}

/// A master with `n` agents registered at 0.
fn with_agents(config: Config, n: usize) -> MasterCore {
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    for i in 0..n {
        send_agent(
            &mut core,
            0,
            &format!("pi-{i}"),
            &AgentMsg::Register(info(&format!("pi-{i}"))),
        );
    }
    pinged(&mut core);
    core
}

/// Runs the core's timers until `end` (simulated ms), calling `on_tick` before each; returns the
/// pings of each timer call, by time.
fn run_until(
    core: &mut MasterCore,
    end: u64,
    mut on_tick: impl FnMut(&mut MasterCore, u64),
) -> Vec<(u64, Vec<String>)> {
    let mut ticks = Vec::new();
    while let Some(at) = core.poll_timeout().filter(|at| *at <= end) {
        on_tick(core, at);
        core.handle_timeout(at);
        ticks.push((at, pinged(core)));
    }
    ticks
}

#[test]
fn the_pings_of_a_thousand_silent_agents_are_spread_over_the_ping_interval() {
    let config = Config::default();
    assert_eq!((config.ping_interval_ms, config.ping_spread), (5_000, 10));
    let mut core = with_agents(config, 1_000);
    let ticks = run_until(&mut core, 14_999, |_, _| {});

    let most = ticks.iter().map(|(_, p)| p.len()).max().unwrap();
    assert_eq!(most, 100, "a check pings at most a tenth of the agents");
    let mut times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (at, agents) in &ticks {
        for a in agents {
            times.entry(a.clone()).or_default().push(*at);
        }
    }
    assert_eq!(times.len(), 1_000, "every silent agent is pinged");
    for (agent, at) in &times {
        assert!(
            (5_000..10_000).contains(&at[0]),
            "{agent} first pinged at {at:?}"
        );
        assert!(
            at.windows(2).all(|w| w[1] - w[0] >= 5_000),
            "{agent} pinged again within an interval: {at:?}"
        );
    }
    assert_eq!(core.stats().agents_lost, 0);
}

#[test]
fn agents_that_report_are_not_pinged_and_a_silent_one_is_pinged_within_a_check_of_its_due_time() {
    let mut core = with_agents(Config::default(), 20);
    let report = AgentMsg::Report(ResourceReport {
        free: Resources::new(4_000, 4_096, 0),
        running_tasks: 0,
        soc_temp_decidegrees: agent_nostd_core::wire::NO_TEMPERATURE,
        throttled: 0,
    });
    // Every agent but pi-7 reports every 2 s; pi-7 last spoke at 1,234.
    send_agent(&mut core, 1_234, "pi-7", &report);
    let mut next_report = 2_000;
    let ticks = run_until(&mut core, 14_000, |core, at| {
        while next_report <= at {
            for i in (0..20).filter(|i| *i != 7) {
                send_agent(core, next_report, &format!("pi-{i}"), &report);
            }
            next_report += 2_000;
        }
    });
    let pings: Vec<(u64, &String)> = ticks
        .iter()
        .flat_map(|(at, agents)| agents.iter().map(move |a| (*at, a)))
        .collect();
    assert!(pings.iter().all(|(_, a)| *a == "pi-7"), "{pings:?}");
    let first = pings.first().expect("pi-7 is pinged").0;
    assert!(
        (6_234..=6_234 + 500).contains(&first),
        "pi-7 is due at 6,234 and the checks are 500 ms apart; pinged at {first}"
    );
    assert_eq!(pings.len(), 2, "again after an interval: {pings:?}");
}

#[test]
fn a_ping_spread_of_one_pings_every_due_agent_in_one_check_as_before() {
    let config = Config {
        ping_spread: 1,
        ..Config::default()
    };
    let mut core = with_agents(config, 300);
    let ticks = run_until(&mut core, 9_999, |_, _| {});
    let bursts: Vec<(u64, usize)> = ticks
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(at, p)| (*at, p.len()))
        .collect();
    assert_eq!(bursts, [(5_000, 300)]);
}

#[test]
fn a_ping_spread_of_zero_or_finer_than_a_millisecond_is_refused() {
    for spread in [0, 5_001] {
        let config = Config {
            ping_spread: spread,
            ..Config::default()
        };
        let e = MasterCore::new(config, 9, 0).unwrap_err();
        assert_eq!(e.field, "ping_spread");
    }
}
