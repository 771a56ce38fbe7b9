//! One allocation round of [`MasterCore`] at cluster sizes from the brief: 1,000 agents × 100
//! frameworks and 10,000 agents × 1,000 frameworks, every agent free and every framework wanting
//! offers. The target is ≤ 10 ms per round at the larger size on a 2-core machine.
//!
//! A plain bench binary (`harness = false`) that prints its figures:
//! `cargo bench -p bramble-master-core --bench allocation`. Each sample clones a prepared master (untimed),
//! then times `handle_timeout` running the round, which builds every offer event; draining those
//! events is timed apart. A last figure is the placement rate of the core alone: accepts of four
//! tasks on every offer of a 10,000-agent round.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use agent_nostd_core::auth::MessageKey;
use agent_nostd_core::frame::{encode_sealed, Binding, Direction};
use agent_nostd_core::ids::id;
use agent_nostd_core::wire::{AgentInfo, AgentMsg, Attribute, MasterMsg, MAX_UP_FRAME_LEN};
use agent_nostd_core::Resources;
use bramble_master_core::{Config, MasterCore, Outgoing};
use bramble_proto::{Accept, Call, Event, Register, TaskInfo};

fn prepared(agents: usize, frameworks: usize) -> MasterCore {
    let mut core = MasterCore::new(Config::default(), 1, 0).expect("default config is valid");
    for i in 0..agents {
        let name = format!("pi-{i}");
        let mut attributes = heapless::Vec::new();
        for (k, v) in [("sensor", "bme280"), ("model", "Pi 4")] {
            let _ = attributes.push(Attribute {
                key: heapless::String::try_from(k).expect("short"),
                value: heapless::String::try_from(v).expect("short"),
            });
        }
        let info = AgentInfo {
            agent_id: id(&name).expect("valid id"),
            hostname: heapless::String::try_from(format!("{name}.lan").as_str()).expect("short"),
            arch: heapless::String::try_from("aarch64").expect("short"),
            board: heapless::String::new(),
            total: Resources::new(4_000, 4_096, 32_768),
            attributes,
            connection: 0,
            boot: 1,
            seq: 1,
            to_epoch: core.epoch(),
        };
        let msg = AgentMsg::Register(info);
        let binding = Binding {
            direction: Direction::Up,
            agent_id: &name,
            boot: 1,
        };
        let mut frame = vec![0; MAX_UP_FRAME_LEN];
        let n =
            encode_sealed(&msg, &MessageKey::anonymous(), &binding, 1, &mut frame).expect("fits");
        core.handle_agent_bytes(0, &msg.topic(&name), &frame[..n])
            .expect("a genuine registration");
    }
    for j in 0..frameworks {
        let mut reg = Register::new(&format!("framework {j}"));
        reg.weight = 1.0 + (j % 3) as f64;
        support::fw_call(&mut core, 0, &format!("fw-{j}"), Call::Register(reg))
            .expect("a genuine registration");
    }
    while core.poll_transmit().is_some() {}
    core
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn run(agents: usize, frameworks: usize, samples: usize) {
    let base = prepared(agents, frameworks);
    let due = base.poll_timeout().expect("a round is due");
    let mut rounds = Vec::with_capacity(samples);
    let mut drains = Vec::with_capacity(samples);
    let mut offers = 0;
    for _ in 0..samples {
        let mut core = base.clone();
        let before = core.stats().offers_made;
        let start = Instant::now();
        core.handle_timeout(due);
        rounds.push(start.elapsed());
        offers = core.stats().offers_made - before;
        let start = Instant::now();
        let mut events = 0;
        while let Some(t) = core.poll_transmit() {
            black_box(&t);
            events += 1;
        }
        drains.push(start.elapsed());
        black_box(events);
        drop(black_box(core));
    }
    rounds.sort();
    drains.sort();
    println!(
        "allocation round, {agents} agents x {frameworks} frameworks: {offers} offers; \
         min {:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms \
         (draining the events: median {:.2} ms) over {samples} rounds",
        ms(rounds[0]),
        ms(percentile(&rounds, 0.5)),
        ms(percentile(&rounds, 0.9)),
        ms(rounds[rounds.len() - 1]),
        ms(percentile(&drains, 0.5)),
    );
    assert_eq!(offers, agents as u64, "every free agent is offered");
}

/// Placements through the core alone (no MQTT): every framework accepts each of its offers with four
/// one-core tasks; times the accepts, including the RunTask messages they queue.
fn placements(agents: usize, frameworks: usize) {
    let mut core = prepared(agents, frameworks);
    let due = core.poll_timeout().expect("a round is due");
    core.handle_timeout(due);
    let mut accepts = Vec::new();
    while let Some(t) = core.poll_transmit() {
        if let Outgoing::Framework {
            event: Event::Offers(offers),
            ..
        } = t.message
        {
            let client = t.topic.rsplit('/').next().unwrap_or_default().to_owned();
            for o in offers {
                let tasks = (0..4)
                    .map(|k| {
                        let tid = format!("t{}-{k}", o.offer_id);
                        TaskInfo::new(&tid, &["/usr/bin/work"], Resources::new(1_000, 512, 0))
                    })
                    .collect();
                let accept = Call::Accept(Accept {
                    offer_id: o.offer_id,
                    tasks,
                });
                accepts.push((client.clone(), accept));
            }
        }
    }
    let placed = accepts.len() * 4;
    // Sealed ahead, as the frameworks do: the time below is the master's (checking each frame
    // included).
    let frames: Vec<(String, Vec<u8>)> = accepts
        .iter()
        .map(|(client, call)| {
            let frame = support::framework_frame(&core, due, client, call);
            (bramble_proto::call_topic(client), frame)
        })
        .collect();
    // The driver encodes each transmit as it publishes it: RunTasks are sealed (and encrypted)
    // there. Timed apart, and taken out of the core's time.
    let (mut sealing, mut sealed, mut bytes) = (Duration::ZERO, 0usize, 0usize);
    let start = Instant::now();
    for (topic, frame) in frames {
        core.handle_framework_bytes(due, support::wall(due), &topic, &frame)
            .expect("a genuine call");
        while let Some(t) = core.poll_transmit() {
            if matches!(&t.message, Outgoing::Agent(m) if matches!(m.msg, MasterMsg::RunTask(_))) {
                let at = Instant::now();
                bytes += black_box(t.payload()).len();
                sealing += at.elapsed();
                sealed += 1;
            }
            black_box(&t);
        }
    }
    let took = start.elapsed() - sealing;
    assert_eq!(core.stats().tasks_launched as usize, placed);
    println!(
        "placements through MasterCore, {agents} agents x {frameworks} frameworks: {placed} tasks \
         in {:.1} ms = {:.0} placements/s",
        ms(took),
        placed as f64 / took.as_secs_f64()
    );
    println!(
        "their RunTask frames encoded and sealed by the driver: {sealed} frames ({} bytes on \
         average) in {:.1} ms = {:.0} frames/s",
        bytes / sealed.max(1),
        ms(sealing),
        sealed as f64 / sealing.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that run short.
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 30 } else { 2 };
    run(1_000, 100, samples);
    run(10_000, 1_000, samples);
    placements(10_000, 1_000);
}
