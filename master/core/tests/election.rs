//! The election on simulated time: masters exchanging heartbeats and wills through a tiny broker,
//! dying, falling silent and contending.

use bramble_master_core::election::{
    Election, ElectionConfig, ElectionEvent, PeerRole, PEERS_PREFIX,
};
use proptest::prelude::*;

/// A broker delivering every publish to every other connected master after `LATENCY_MS`.
struct Lab {
    now: u64,
    masters: Vec<Node>,
    in_flight: Vec<(u64, usize, String, Vec<u8>)>,
    /// Every epoch any master was told to lead under, in order.
    leads: Vec<(u64, usize, u64)>,
    /// The newest epoch the agents obey: a leader below it hears so when they re-register.
    fence: u64,
    /// Whether there are agents to report the fence.
    agents: bool,
}

struct Node {
    election: Election,
    up: bool,
    /// Connected, but its messages are lost (a stalled process or a one-way partition).
    silent: bool,
}

const LATENCY_MS: u64 = 5;

impl Lab {
    fn new(specs: &[(&str, bool)]) -> Lab {
        let masters = specs
            .iter()
            .map(|(name, standby)| Node {
                election: Election::new(ElectionConfig::default(), name, *standby),
                up: false,
                silent: false,
            })
            .collect();
        Lab {
            now: 0,
            masters,
            in_flight: Vec::new(),
            leads: Vec::new(),
            fence: 0,
            agents: true,
        }
    }

    fn start(&mut self, i: usize) {
        self.masters[i].up = true;
        self.masters[i].silent = false;
        self.masters[i].election.handle_connected(self.now);
        self.pump();
    }

    /// SIGKILL: the broker publishes its will.
    fn kill(&mut self, i: usize) {
        self.masters[i].up = false;
        let will = self.masters[i].election.last_will();
        self.in_flight
            .push((self.now + LATENCY_MS, i, will.topic, will.payload));
    }

    /// Restarts master `i` as a new process (fresh state, same name and standby flag).
    fn restart(&mut self, i: usize, standby: bool) {
        let name = self.masters[i].election.name().to_owned();
        self.masters[i].election = Election::new(ElectionConfig::default(), &name, standby);
        self.start(i);
    }

    fn leaders(&self) -> Vec<(usize, u64)> {
        self.masters
            .iter()
            .enumerate()
            .filter(|(_, n)| n.up)
            .filter_map(|(i, n)| n.election.leading().map(|e| (i, e)))
            .collect()
    }

    /// Sends what each live master has to send and collects its events.
    fn pump(&mut self) {
        for i in 0..self.masters.len() {
            if !self.masters[i].up {
                continue;
            }
            while let Some(t) = self.masters[i].election.poll_transmit(self.now) {
                if !self.masters[i].silent {
                    self.in_flight
                        .push((self.now + LATENCY_MS, i, t.topic, t.payload));
                }
            }
            while let Some(ev) = self.masters[i].election.poll_event() {
                if let ElectionEvent::Lead { epoch } = ev {
                    self.leads.push((self.now, i, epoch));
                    self.fence = self.fence.max(epoch);
                }
            }
        }
    }

    fn next_time(&self) -> Option<u64> {
        let deliveries = self.in_flight.iter().map(|(t, ..)| *t);
        let timers = self
            .masters
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.election.poll_timeout(self.now));
        deliveries.chain(timers).min()
    }

    /// Runs until `until`, checking after every step that no two live leaders share an epoch.
    fn run_until(&mut self, until: u64) {
        while let Some(t) = self.next_time() {
            if t > until {
                break;
            }
            self.now = t.max(self.now);
            let due: Vec<_> = {
                let now = self.now;
                let (due, later) = std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .partition(|(at, ..)| *at <= now);
                self.in_flight = later;
                due
            };
            for (_, from, topic, payload) in due {
                for j in 0..self.masters.len() {
                    if j != from && self.masters[j].up {
                        self.masters[j]
                            .election
                            .handle_peer(self.now, &topic, &payload)
                            .expect("masters send valid heartbeats");
                    }
                }
            }
            for n in self.masters.iter_mut().filter(|n| n.up) {
                n.election.handle_timeout(self.now);
                if self.agents && n.election.leading().is_some_and(|e| e < self.fence) {
                    n.election.handle_newer_epoch(self.now, self.fence);
                }
            }
            self.pump();
            let leaders = self.leaders();
            for (a, ea) in &leaders {
                for (b, eb) in &leaders {
                    assert!(a == b || ea != eb, "two leaders share epoch {ea:#x}");
                }
            }
        }
        self.now = until;
    }
}

#[test]
fn a_lone_master_leads_after_settling_with_the_term_after_the_retained_hello() {
    let mut lab = Lab::new(&[("m1", false)]);
    lab.masters[0]
        .election
        .handle_hello(0, agent_nostd_core::wire::epoch(6, 9));
    lab.start(0);
    lab.run_until(499);
    assert!(lab.leaders().is_empty(), "it listens for 500 ms first");
    lab.run_until(600);
    let (_, epoch) = lab.leaders()[0];
    assert_eq!(agent_nostd_core::wire::epoch_term(epoch), 7);
}

#[test]
fn a_standby_never_claims_while_the_leader_heartbeats() {
    let mut lab = Lab::new(&[("m1", false), ("m2", true), ("m3", true)]);
    lab.start(0);
    lab.run_until(1_000);
    lab.start(1);
    lab.start(2);
    lab.run_until(120_000);
    assert_eq!(lab.leaders().len(), 1);
    assert_eq!(lab.leaders()[0].0, 0);
    assert_eq!(lab.leads.len(), 1, "{:?}", lab.leads);
    let peers: Vec<_> = lab.masters[1].election.peers(lab.now).collect();
    assert_eq!(peers.len(), 2, "m2 hears m1 and m3: {peers:?}");
}

#[test]
fn the_leader_lists_the_live_followers_with_their_standby_flag_and_forgets_a_dead_one() {
    let mut lab = Lab::new(&[("m1", false), ("m2", true), ("m3", false)]);
    lab.start(0);
    lab.run_until(1_000);
    lab.start(1);
    lab.start(2);
    lab.run_until(10_000);
    let followers: Vec<_> = lab.masters[0].election.followers(lab.now).collect();
    assert_eq!(followers, vec![("m2", true), ("m3", false)]);
    lab.kill(1);
    lab.run_until(20_000);
    let followers: Vec<_> = lab.masters[0].election.followers(lab.now).collect();
    assert_eq!(followers, vec![("m3", false)]);
}

#[test]
fn a_standby_takes_over_within_a_heartbeat_of_the_leaders_will_and_with_a_higher_epoch() {
    let mut lab = Lab::new(&[("m1", false), ("m2", true)]);
    lab.start(0);
    lab.run_until(1_000);
    lab.start(1);
    lab.run_until(10_000);
    let (_, old) = lab.leaders()[0];
    lab.kill(0);
    let killed_at = lab.now;
    lab.run_until(killed_at + 1_000);
    let leaders = lab.leaders();
    assert_eq!(leaders.len(), 1);
    assert_eq!(leaders[0].0, 1);
    assert!(leaders[0].1 > old, "the new epoch fences the old leader");
    let (took_over_at, ..) = *lab.leads.last().unwrap();
    assert!(
        took_over_at - killed_at <= 100,
        "{}",
        took_over_at - killed_at
    );
}

#[test]
fn a_standby_takes_over_after_the_lease_when_the_leader_falls_silent_without_a_will() {
    let mut lab = Lab::new(&[("m1", false), ("m2", true)]);
    lab.start(0);
    lab.run_until(1_000);
    lab.start(1);
    lab.run_until(10_000);
    lab.masters[0].silent = true;
    let stalled_at = lab.now;
    lab.run_until(stalled_at + 2_000);
    assert_eq!(lab.masters[1].election.leading(), None, "within the lease");
    lab.run_until(stalled_at + 5_000);
    assert!(lab.masters[1].election.leading().is_some());
    // The stalled leader comes back and hears its successor: it steps down.
    lab.masters[0].silent = false;
    lab.run_until(stalled_at + 8_000);
    assert_eq!(lab.leaders().len(), 1);
    assert_eq!(lab.leaders()[0].0, 1);
    assert_eq!(lab.masters[0].election.stats().step_downs, 1);
}

#[test]
fn of_several_standbys_exactly_one_takes_over() {
    let mut lab = Lab::new(&[("m1", false), ("m2", true), ("m3", true), ("m4", true)]);
    lab.start(0);
    lab.run_until(1_000);
    for i in 1..4 {
        lab.start(i);
    }
    lab.run_until(10_000);
    lab.kill(0);
    lab.run_until(30_000);
    assert_eq!(lab.leaders(), vec![(1, lab.leads.last().unwrap().2)]);
    assert_eq!(lab.leads.len(), 2, "no second claim: {:?}", lab.leads);
}

#[test]
fn two_masters_started_together_converge_on_one_leader() {
    let mut lab = Lab::new(&[("m1", false), ("m2", false)]);
    lab.start(0);
    lab.start(1);
    lab.run_until(10_000);
    assert_eq!(lab.leaders().len(), 1, "{:?}", lab.leads);
}

#[test]
fn of_two_leaders_the_one_with_the_lower_epoch_steps_down() {
    let mut lab = Lab::new(&[("m1", false), ("m2", false)]);
    lab.agents = false; // no agent tells the lower leader about the higher one
    lab.start(0);
    lab.run_until(1_000);
    // m2 cannot hear m1 yet (say, m1's heartbeats are delayed): both lead for a moment.
    lab.masters[0].silent = true;
    lab.start(1);
    lab.run_until(5_000);
    assert_eq!(lab.leaders().len(), 2);
    let newest = *lab.leaders().iter().max_by_key(|(_, e)| *e).unwrap();
    lab.masters[0].silent = false;
    lab.run_until(8_000);
    assert_eq!(lab.leaders(), vec![newest]);
}

#[test]
fn an_epoch_agents_obey_that_no_live_master_holds_is_led_above_and_a_live_ones_is_deferred_to() {
    let mut lab = Lab::new(&[("m1", false)]);
    lab.start(0);
    lab.run_until(1_000);
    let (_, epoch) = lab.leaders()[0];
    // The broker forgot a master of term 40 whose epoch the agents still obey.
    let forgotten = agent_nostd_core::wire::epoch(40, 3);
    lab.masters[0]
        .election
        .handle_newer_epoch(lab.now, forgotten);
    lab.pump();
    assert_eq!(
        lab.leaders()[0].1,
        epoch,
        "it waits a lease for that master's heartbeat"
    );
    let t = lab.now + 3_000;
    lab.run_until(t);
    let (_, raised) = lab.leaders()[0];
    assert!(raised > forgotten && raised > epoch);
    assert_eq!(agent_nostd_core::wire::epoch_term(raised), 41);

    // Now a live leader of a higher epoch: defer to it.
    let mut lab = Lab::new(&[("m1", false), ("m2", false)]);
    lab.start(0);
    lab.run_until(1_000);
    lab.masters[0].silent = true;
    // m2 starts from the retained hello of m1: its claim is a term above.
    let m1_epoch = lab.leaders()[0].1;
    lab.masters[1].election.handle_hello(lab.now, m1_epoch);
    lab.agents = false; // the report below stands for them
    lab.start(1);
    lab.run_until(4_000);
    let (_, m2_epoch) = *lab.leaders().iter().find(|(i, _)| *i == 1).unwrap();
    lab.masters[0].silent = false;
    lab.masters[0]
        .election
        .handle_newer_epoch(lab.now, m2_epoch);
    lab.pump();
    assert_eq!(lab.masters[0].election.leading(), None);
}

#[test]
fn bad_peer_payloads_are_counted_and_change_nothing() {
    let mut e = Election::new(ElectionConfig::default(), "m1", false);
    e.handle_connected(0);
    let topic = format!("{PEERS_PREFIX}m2");
    assert!(e.handle_peer(1, &topic, b"not json").is_err());
    assert!(e.handle_peer(1, &topic, &[b' '; 600]).is_err());
    let misnamed = br#"{"name":"m3","role":"leader","epoch":99999999,"standby":false}"#;
    assert!(e.handle_peer(1, &topic, misnamed).is_err());
    assert!(e
        .handle_peer(1, "bramble/v1/master/peers/", misnamed)
        .is_err());
    assert_eq!(e.stats().bad_peer_messages, 4);
    assert_eq!(e.peers(1).count(), 0);
    let good = br#"{"name":"m2","role":"follower","epoch":0,"standby":true}"#;
    e.handle_peer(1, &topic, good).unwrap();
    assert_eq!(
        e.peers(1).collect::<Vec<_>>(),
        vec![("m2", PeerRole::Follower, 0)]
    );
}

#[derive(Debug, Clone)]
enum Op {
    Wait(u16),
    Kill(usize),
    Restart(usize),
    Silence(usize),
    Speak(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..6_000).prop_map(Op::Wait),
        1 => (0usize..3).prop_map(Op::Kill),
        2 => (0usize..3).prop_map(Op::Restart),
        1 => (0usize..3).prop_map(Op::Silence),
        1 => (0usize..3).prop_map(Op::Speak),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever dies, restarts or stalls, no two leaders ever share an epoch, and once the
    /// weather is calm exactly one master leads, under the highest epoch ever given out.
    #[test]
    fn masters_that_die_restart_and_stall_converge_on_the_newest_leader(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let standby = [false, true, true];
        let mut lab = Lab::new(&[("m1", false), ("m2", true), ("m3", true)]);
        for i in 0..3 {
            lab.start(i);
        }
        for op in ops {
            match op {
                Op::Wait(ms) => { let t = lab.now + u64::from(ms); lab.run_until(t); }
                Op::Kill(i) if lab.masters[i].up => lab.kill(i),
                Op::Restart(i) => {
                    if lab.masters[i].up { lab.kill(i); }
                    lab.restart(i, standby[i]);
                }
                Op::Silence(i) => lab.masters[i].silent = true,
                Op::Speak(i) => lab.masters[i].silent = false,
                Op::Kill(_) => {}
            }
        }
        for (i, &sb) in standby.iter().enumerate() {
            lab.masters[i].silent = false;
            if !lab.masters[i].up {
                lab.restart(i, sb);
            }
        }
        let t = lab.now + 20_000;
        lab.run_until(t);
        let leaders = lab.leaders();
        prop_assert_eq!(leaders.len(), 1, "{:?}", lab.leads);
        let newest = lab.leads.iter().map(|(_, _, e)| *e).max().unwrap();
        prop_assert_eq!(leaders[0].1, newest);
    }
}

#[test]
fn the_peer_example_in_protocol_md_is_what_a_leading_m1_of_term_1_says() {
    let doc = include_str!("../../../PROTOCOL.md");
    let line = doc
        .lines()
        .find(|l| l.starts_with("| `bramble/v1/master/peers/{name}`"))
        .expect("the peers topic is in PROTOCOL.md");
    let json = line.split('`').find(|c| c.starts_with('{')).unwrap();
    let peer: bramble_master_core::election::Peer = serde_json::from_str(json).unwrap();
    let mut e = Election::new(ElectionConfig::default(), "m1", false);
    e.handle_connected(0);
    e.handle_timeout(1_000);
    let said: bramble_master_core::election::Peer =
        serde_json::from_slice(&e.poll_transmit(1_000).unwrap().payload).unwrap();
    assert_eq!(peer, said);
    assert_eq!(
        said.epoch,
        agent_nostd_core::wire::epoch(1, bramble_master_core::election::tiebreak("m1"))
    );
}

#[test]
fn heartbeats_of_ever_more_names_are_bounded_and_silent_masters_are_forgotten() {
    use bramble_master_core::election::MAX_PEERS;
    let mut e = Election::new(ElectionConfig::default(), "m0", false);
    e.handle_connected(0);
    for n in 0..MAX_PEERS + 10 {
        let name = format!("x{n}");
        let beat = format!(r#"{{"name":"{name}","role":"follower","epoch":0,"standby":true}}"#);
        e.handle_peer(1, &format!("{PEERS_PREFIX}{name}"), beat.as_bytes())
            .unwrap();
    }
    assert_eq!(e.peers(1).count(), MAX_PEERS);
    assert_eq!(e.stats().peers_over_limit, 10);
    // Ten leases later none of them has been heard again: all forgotten, room for new ones.
    e.handle_timeout(30_001);
    assert_eq!(e.peers(30_001).count(), 0);
    let beat = br#"{"name":"y","role":"follower","epoch":0,"standby":true}"#;
    e.handle_peer(30_002, &format!("{PEERS_PREFIX}y"), beat)
        .unwrap();
    assert_eq!(e.peers(30_002).count(), 1);
}
