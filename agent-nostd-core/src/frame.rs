//! Authenticated frames: a message followed by its counter and tag, and the replay window that
//! checks the counters.
//!
//! Every agent↔master payload (but the broadcast hello) is a frame:
//!
//! ```text
//! agent → master: | message (version byte + postcard) | counter: low 16 bits, LE | tag: 8 bytes |
//! master → agent: | message (version byte + postcard) | counter: 32 bits, LE      | tag: 8 bytes |
//! ```
//!
//! The tag is HMAC-SHA-256 under the agent's message key (see [`crate::auth`]), truncated to
//! [`TAG_LEN`] bytes, over a label naming the direction, the agent's id, the agent's **boot**
//! number, the full 32-bit **sequence number** and the message bytes (see [`tag_input`]). Only the
//! agent and the master hold the key, so a frame that verifies was made by one of them for this
//! direction, this agent and this boot; the sequence number tells a replay from a new frame.
//!
//! This is LoRaWAN's model (a MIC over the frame and a 32-bit frame counter of which only the low
//! 16 bits travel uplink): the master rebuilds the full number from the highest it has accepted
//! ([`expand`]), checks the tag with it, and then the [`ReplayWindow`], which takes each number
//! once and tolerates frames reordered by up to 64 (the broker and the master's queues reorder a
//! little). Two counter bytes and an eight-byte tag keep a resource report within 32 bytes.
//! Downlink frames have no such bound and carry the whole number, so nothing the agent misses can
//! put it out of step.
//!
//! # Encrypted frames
//!
//! Frames that carry commands — every master → agent frame (a `RunTask` holds a command line and
//! its environment) and every framework call in a session (an `Accept` holds tasks) — carry their
//! message encrypted after its version byte ([`Direction::encrypts`]): XORed with the ChaCha20
//! keystream of the sender's cipher key under the nonce tag ‖ number
//! ([`MessageKey::apply_keystream`]). The tag is still computed over the plaintext, so it doubles
//! as a synthetic IV (SIV): the receiver decrypts with the tag and number it read ([`decrypt`]),
//! then verifies the tag over what it got. Nothing is added to the frame, and only the receiver
//! and the sender can read it, whatever the broker lets a subscriber see.

use crate::auth::{MessageKey, TAG_LEN};

/// The bytes an agent → master frame adds to its message: two counter bytes and the tag.
pub const UP_TRAILER_LEN: usize = 2 + TAG_LEN;
/// The bytes a master → agent frame adds to its message: four counter bytes and the tag.
pub const DOWN_TRAILER_LEN: usize = 4 + TAG_LEN;

/// Which way a frame travels: part of what its tag covers, so a frame cannot be reflected back
/// (nor an agent's taken as a framework's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Agent → master.
    Up,
    /// Master → agent.
    Down,
    /// Framework (scheduler) → master: a call. The binding's `agent_id` is the framework's
    /// client name, its `boot` the session (0 before there is one).
    FrameworkUp,
    /// Master → framework: an event, bound as a call is.
    FrameworkDown,
}

impl Direction {
    /// The bytes its frames add to their message.
    pub const fn trailer_len(self) -> usize {
        match self {
            Direction::Up => UP_TRAILER_LEN,
            Direction::Down | Direction::FrameworkUp | Direction::FrameworkDown => DOWN_TRAILER_LEN,
        }
    }

    /// Whether its frames in `boot` (for the framework directions, the session) carry their
    /// message encrypted after the version byte: every master → agent frame, and every framework
    /// call in a session. The agent's uplink and the master's events carry nothing secret; a
    /// framework's registration and will (outside any session, `boot` 0) name their principal in
    /// clear, for the master to find the key they are sealed with.
    pub const fn encrypts(self, boot: u32) -> bool {
        match self {
            Direction::Down => true,
            Direction::FrameworkUp => boot != 0,
            Direction::Up | Direction::FrameworkDown => false,
        }
    }

    /// How many counter bytes its frames carry.
    const fn counter_len(self) -> usize {
        self.trailer_len() - TAG_LEN
    }

    const fn label(self) -> &'static [u8] {
        match self {
            Direction::Up => b"bramble/v1 agent->master",
            Direction::Down => b"bramble/v1 master->agent",
            Direction::FrameworkUp => b"bramble/v1 framework->master",
            Direction::FrameworkDown => b"bramble/v1 master->framework",
        }
    }
}

/// What a frame's tag binds besides its bytes: the direction, the agent and the agent's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// Which way it travels.
    pub direction: Direction,
    /// The agent it is from or for.
    pub agent_id: &'a str,
    /// The agent's boot number: it grows with every start of the agent (kept in its checkpoint),
    /// so nothing sent before the agent's latest start verifies after it.
    pub boot: u32,
}

/// The byte strings a tag is computed over, in order:
/// label ‖ len(agent_id) (1 byte) ‖ agent_id ‖ boot (4 bytes BE) ‖ seq (4 bytes BE) ‖ message.
pub fn tag_input<'a>(
    binding: &Binding<'a>,
    seq_be: &'a [u8; 4],
    boot_be: &'a [u8; 4],
    len: &'a [u8; 1],
    message: &'a [u8],
) -> [&'a [u8]; 6] {
    [
        binding.direction.label(),
        len,
        binding.agent_id.as_bytes(),
        boot_be,
        seq_be,
        message,
    ]
}

fn tag_of(key: &MessageKey, binding: &Binding<'_>, seq: u32, message: &[u8]) -> [u8; TAG_LEN] {
    let seq_be = seq.to_be_bytes();
    let boot_be = binding.boot.to_be_bytes();
    let len = [binding.agent_id.len() as u8];
    key.tag(&tag_input(binding, &seq_be, &boot_be, &len, message))
}

/// Why a frame was not accepted; each is counted by its own reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a trailer: not a frame.
    Truncated,
    /// The tag does not verify: forged, altered, for another agent, direction or boot, or its
    /// number is too far from the window to be rebuilt.
    BadTag,
    /// Its number was taken already: a replay (or a duplicate the broker delivered again).
    Replayed,
    /// Its number is below the window: too old to tell from a replay.
    TooOld,
    /// The buffer cannot take the trailer.
    BufferTooSmall,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::Truncated => "shorter than a frame trailer",
            FrameError::BadTag => "the tag does not verify",
            FrameError::Replayed => "a frame number seen before (replayed)",
            FrameError::TooOld => "a frame number below the replay window",
            FrameError::BufferTooSmall => "buffer too small for the frame trailer",
        })
    }
}

/// Appends the trailer of the message `buf[..len]` (counter `seq`, tag), encrypts the message
/// after its version byte when frames of the binding are encrypted ([`Direction::encrypts`]), and
/// returns the frame's length.
pub fn seal(
    key: &MessageKey,
    binding: &Binding<'_>,
    seq: u32,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, FrameError> {
    let counter = binding.direction.counter_len();
    let end = len + counter + TAG_LEN;
    if buf.len() < end {
        return Err(FrameError::BufferTooSmall);
    }
    let tag = tag_of(key, binding, seq, &buf[..len]);
    if binding.direction.encrypts(binding.boot) && len > 1 {
        key.apply_keystream(&tag, seq, &mut buf[1..len]);
    }
    buf[len..len + counter].copy_from_slice(&seq.to_le_bytes()[..counter]);
    buf[len + counter..end].copy_from_slice(&tag);
    Ok(end)
}

/// Decrypts in place the message of `payload`, a frame travelling as `binding` says, when such
/// frames are encrypted ([`Direction::encrypts`]); applied again, it restores the payload as it
/// travelled. The keystream comes from the tag and number the payload carries, so this needs no
/// state: whether the result is genuine is for the tag to say ([`Frame::verifies`]). A payload
/// shorter than a frame, or of a direction that is not encrypted, is left as it is.
pub fn decrypt(key: &MessageKey, binding: &Binding<'_>, payload: &mut [u8]) {
    let direction = binding.direction;
    if !direction.encrypts(binding.boot) {
        return;
    }
    let Some(at) = payload.len().checked_sub(direction.trailer_len()) else {
        return;
    };
    let (message, trailer) = payload.split_at_mut(at);
    let (counter, tag) = trailer.split_at(direction.counter_len());
    // Encrypted directions carry the whole 32-bit number and a full tag.
    let (Ok(counter), Ok(tag)) = (
        <[u8; 4]>::try_from(counter),
        <&[u8; TAG_LEN]>::try_from(tag),
    ) else {
        return;
    };
    if let Some((_version, body)) = message.split_first_mut() {
        key.apply_keystream(tag, u32::from_le_bytes(counter), body);
    }
}

/// Encodes `msg` (version byte and postcard) into `buf` and seals it as frame `seq`: the frame's
/// length.
pub fn encode_sealed<M: crate::wire::WireMessage>(
    msg: &M,
    key: &MessageKey,
    binding: &Binding<'_>,
    seq: u32,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let len = msg.encode(buf).map_err(|_| FrameError::BufferTooSmall)?;
    seal(key, binding, seq, buf, len)
}

/// A frame taken apart: its message, the number as it travelled, and its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message bytes (version byte and postcard).
    pub message: &'a [u8],
    /// The sequence number as it travelled: its low 16 bits uplink, all of it downlink.
    pub counter: u32,
    direction: Direction,
    tag: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Splits `payload`, a frame travelling `direction`, into message and trailer.
    pub fn split(payload: &'a [u8], direction: Direction) -> Result<Frame<'a>, FrameError> {
        let at = payload
            .len()
            .checked_sub(direction.trailer_len())
            .ok_or(FrameError::Truncated)?;
        let (message, trailer) = payload.split_at(at);
        let (counter, tag) = trailer.split_at(direction.counter_len());
        let mut le = [0u8; 4];
        le[..counter.len()].copy_from_slice(counter);
        Ok(Frame {
            message,
            counter: u32::from_le_bytes(le),
            direction,
            tag,
        })
    }

    /// The tag as it travelled.
    pub fn tag(&self) -> &'a [u8] {
        self.tag
    }

    /// The full sequence number, given the highest taken so far: rebuilt from the low 16 bits
    /// uplink ([`expand`]), as it travelled downlink.
    pub fn seq(&self, highest: u32) -> u32 {
        match self.direction {
            Direction::Up => expand(highest, self.counter as u16),
            _ => self.counter,
        }
    }

    /// Whether the tag verifies for `binding` with the full number `seq`.
    pub fn verifies(&self, key: &MessageKey, binding: &Binding<'_>, seq: u32) -> bool {
        let seq_be = seq.to_be_bytes();
        let boot_be = binding.boot.to_be_bytes();
        let len = [binding.agent_id.len() as u8];
        key.verify(
            &tag_input(binding, &seq_be, &boot_be, &len, self.message),
            self.tag,
        )
    }

    /// Checks the frame against `window` (rebuilding its number from the window's highest), and
    /// takes its number: the frame's full sequence number, or why it is refused. The window only
    /// moves for a frame whose tag verifies. `binding.direction` must be the one it was split for.
    pub fn open(
        &self,
        key: &MessageKey,
        binding: &Binding<'_>,
        window: &mut ReplayWindow,
    ) -> Result<u32, FrameError> {
        if binding.direction != self.direction {
            return Err(FrameError::BadTag);
        }
        let seq = self.seq(window.highest());
        if !self.verifies(key, binding, seq) {
            return Err(FrameError::BadTag);
        }
        window.check(seq)?;
        window.take(seq);
        Ok(seq)
    }
}

/// The full sequence number whose low 16 bits are `low`, nearest to `highest` (the highest
/// accepted so far): within 32,768 of it either way, as QUIC rebuilds packet numbers.
pub fn expand(highest: u32, low: u16) -> u32 {
    // RFC 9000, appendix A.3, with the highest number taken as the one expected.
    const WIN: u64 = 1 << 16;
    const HALF: u64 = WIN / 2;
    let expected = u64::from(highest);
    let candidate = (expected & !(WIN - 1)) | u64::from(low);
    let full = if candidate + HALF <= expected && candidate + WIN <= u64::from(u32::MAX) {
        candidate + WIN
    } else if candidate > expected + HALF && candidate >= WIN {
        candidate - WIN
    } else {
        candidate
    };
    full as u32
}

/// The number an agent's last will is sealed with. A will is made when the agent connects and
/// published by the broker whenever the connection drops, so it cannot take its place among the
/// agent's numbers; the master takes it only for the connection it names, which is the agent's
/// current one (see PROTOCOL.md), and never puts it through the window.
pub const WILL_SEQ: u32 = u32::MAX;

/// How far below the highest number a frame may arrive and still be taken.
pub const WINDOW: u32 = 64;

/// The sequence numbers taken so far, as the highest and a bitmap of the [`WINDOW`] below it
/// (the anti-replay window of IPsec and DTLS). A fresh window takes any number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// `None` until a number is taken.
    highest: Option<u32>,
    /// Bit `i` set: number `highest - i` was taken (bit 0 is `highest` itself).
    seen: u64,
}

impl ReplayWindow {
    /// A window that has taken nothing.
    pub const fn new() -> Self {
        ReplayWindow {
            highest: None,
            seen: 0,
        }
    }

    /// The highest number taken, or 0.
    pub fn highest(&self) -> u32 {
        self.highest.unwrap_or(0)
    }

    /// Whether `seq` may be taken.
    pub fn check(&self, seq: u32) -> Result<(), FrameError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if seq > highest {
            return Ok(());
        }
        let back = highest - seq;
        if back >= WINDOW {
            Err(FrameError::TooOld)
        } else if self.seen & (1 << back) != 0 {
            Err(FrameError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Takes `seq` (after [`check`](Self::check) allowed it).
    pub fn take(&mut self, seq: u32) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.seen = 1;
            }
            Some(highest) if seq > highest => {
                let shift = seq - highest;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                } | 1;
                self.highest = Some(seq);
            }
            Some(highest) => {
                let back = highest - seq;
                if back < WINDOW {
                    self.seen |= 1 << back;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn key() -> MessageKey {
        Secret::from_bytes([1; 32]).message_key()
    }

    const UP: Binding<'static> = Binding {
        direction: Direction::Up,
        agent_id: "pi",
        boot: 3,
    };

    fn frame(seq: u32, message: &[u8]) -> ([u8; 64], usize) {
        let mut buf = [0u8; 64];
        buf[..message.len()].copy_from_slice(message);
        let n = seal(&key(), &UP, seq, &mut buf, message.len()).unwrap();
        (buf, n)
    }

    #[test]
    fn a_sealed_frame_is_the_message_then_the_low_counter_bytes_then_eight_tag_bytes() {
        let (buf, n) = frame(0x0001_0203, &[3, 2, 1]);
        assert_eq!(n, 3 + UP_TRAILER_LEN);
        assert_eq!(&buf[..5], &[3, 2, 1, 0x03, 0x02]);
        // Pinned: a change of the tag's input is a wire change.
        assert_eq!(&buf[5..n], &PINNED_TAG);
    }

    // python3: hmac.new(hmac.new(bytes([1]*32), b"bramble/v1 message key", sha256).digest(),
    //   b"bramble/v1 agent->master" + bytes([2]) + b"pi" + (3).to_bytes(4,"big")
    //   + (0x00010203).to_bytes(4,"big") + bytes([3,2,1]), sha256).digest()[:8]
    const PINNED_TAG: [u8; 8] = [0xfc, 0x0b, 0x24, 0x50, 0xc7, 0x6f, 0x65, 0x08];

    #[test]
    fn a_frame_opens_once_and_its_replay_is_refused() {
        let (buf, n) = frame(7, b"hello");
        let f = Frame::split(&buf[..n], Direction::Up).unwrap();
        let mut window = ReplayWindow::new();
        assert_eq!(f.open(&key(), &UP, &mut window), Ok(7));
        assert_eq!(f.message, b"hello");
        assert_eq!(f.open(&key(), &UP, &mut window), Err(FrameError::Replayed));
    }

    #[test]
    fn a_frame_for_another_agent_boot_or_key_or_with_a_flipped_bit_does_not_verify() {
        let (buf, n) = frame(7, b"hello");
        let f = Frame::split(&buf[..n], Direction::Up).unwrap();
        let others = [
            Binding {
                agent_id: "pj",
                ..UP
            },
            Binding { boot: 4, ..UP },
        ];
        for b in others {
            assert_eq!(
                f.open(&key(), &b, &mut ReplayWindow::new()),
                Err(FrameError::BadTag),
                "{b:?}"
            );
        }
        let other_key = Secret::from_bytes([2; 32]).message_key();
        assert_eq!(
            f.open(&other_key, &UP, &mut ReplayWindow::new()),
            Err(FrameError::BadTag)
        );
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 0x10;
            let f = Frame::split(&bad[..n], Direction::Up).unwrap();
            let mut window = ReplayWindow::new();
            window.take(7);
            assert!(f.open(&key(), &UP, &mut window).is_err(), "bit flip at {i}");
        }
        assert_eq!(
            Frame::split(&buf[..9], Direction::Up),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn a_downlink_frame_is_readable_only_with_the_agents_key_and_its_version_byte_stays_clear() {
        let down = Binding {
            direction: Direction::Down,
            ..UP
        };
        let secret = b"\x03BRAMBLE_PASSWORD=hunter2";
        let mut buf = [0u8; 64];
        buf[..secret.len()].copy_from_slice(secret);
        let n = seal(&key(), &down, 5, &mut buf, secret.len()).unwrap();
        assert_eq!(buf[0], 3, "the version byte travels in clear");
        assert!(
            !buf[..n].windows(7).any(|w| w == b"hunter2"),
            "{:?}",
            &buf[..n]
        );

        let mut other = buf;
        decrypt(
            &Secret::from_bytes([2; 32]).message_key(),
            &down,
            &mut other[..n],
        );
        assert_ne!(&other[..secret.len()], secret);
        let wrong = Frame::split(&other[..n], Direction::Down).unwrap();
        assert!(!wrong.verifies(&key(), &down, 5));

        decrypt(&key(), &down, &mut buf[..n]);
        let f = Frame::split(&buf[..n], Direction::Down).unwrap();
        assert_eq!(f.message, secret);
        assert!(f.verifies(&key(), &down, 5));
        // Applied again, it restores the frame as it travelled.
        let mut twice = buf;
        decrypt(&key(), &down, &mut twice[..n]);
        decrypt(&key(), &down, &mut twice[..n]);
        assert_eq!(twice, buf);
    }

    #[test]
    fn only_downlink_frames_and_framework_calls_in_a_session_are_encrypted() {
        let sealed = |direction, boot| {
            let b = Binding {
                direction,
                agent_id: "fw",
                boot,
            };
            let mut buf = [0u8; 64];
            buf[..8].copy_from_slice(b"\x05accept!");
            seal(&key(), &b, 1, &mut buf, 8).unwrap();
            &buf[..8] != b"\x05accept!"
        };
        assert!(sealed(Direction::Down, 3));
        assert!(sealed(Direction::FrameworkUp, 3));
        assert!(
            !sealed(Direction::FrameworkUp, 0),
            "a registration names its principal"
        );
        assert!(!sealed(Direction::Up, 3));
        assert!(!sealed(Direction::FrameworkDown, 3));
    }

    #[test]
    fn a_downlink_frame_carries_its_whole_number_and_is_not_taken_as_an_uplink_one() {
        let down = Binding {
            direction: Direction::Down,
            ..UP
        };
        let mut buf = [0u8; 32];
        buf[..2].copy_from_slice(b"go");
        let n = seal(&key(), &down, 0x0102_0304, &mut buf, 2).unwrap();
        assert_eq!(n, 2 + DOWN_TRAILER_LEN);
        assert_eq!(&buf[2..6], &[4, 3, 2, 1]);
        decrypt(&key(), &down, &mut buf[..n]);
        let f = Frame::split(&buf[..n], Direction::Down).unwrap();
        // Far beyond any window, yet the whole number travelled: taken.
        assert_eq!(
            f.open(&key(), &down, &mut ReplayWindow::new()),
            Ok(0x0102_0304)
        );
        assert_eq!(
            f.open(&key(), &UP, &mut ReplayWindow::new()),
            Err(FrameError::BadTag)
        );
        let as_up = Frame::split(&buf[..n], Direction::Up).unwrap();
        assert_eq!(
            as_up.open(&key(), &UP, &mut ReplayWindow::new()),
            Err(FrameError::BadTag),
            "reflected back as an uplink frame"
        );
    }

    #[test]
    fn a_refused_frame_does_not_move_the_window() {
        let mut window = ReplayWindow::new();
        window.take(10);
        let (mut buf, n) = frame(500, b"x");
        buf[n - 1] ^= 1;
        let f = Frame::split(&buf[..n], Direction::Up).unwrap();
        assert_eq!(f.open(&key(), &UP, &mut window), Err(FrameError::BadTag));
        assert_eq!(window.highest(), 10);
    }

    #[test]
    fn frames_reordered_within_the_window_are_taken_and_older_ones_refused() {
        let mut window = ReplayWindow::new();
        for seq in [100, 98, 99, 37, 101, 40] {
            let (buf, n) = frame(seq, b"m");
            let got =
                Frame::split(&buf[..n], Direction::Up)
                    .unwrap()
                    .open(&key(), &UP, &mut window);
            assert_eq!(got, Ok(seq));
        }
        let (buf, n) = frame(37, b"m");
        let f = Frame::split(&buf[..n], Direction::Up).unwrap();
        assert_eq!(f.open(&key(), &UP, &mut window), Err(FrameError::TooOld));
        let (buf, n) = frame(98, b"m");
        let f = Frame::split(&buf[..n], Direction::Up).unwrap();
        assert_eq!(f.open(&key(), &UP, &mut window), Err(FrameError::Replayed));
    }

    #[test]
    fn the_full_number_is_rebuilt_across_a_wrap_of_the_low_sixteen_bits() {
        assert_eq!(expand(0, 5), 5);
        assert_eq!(expand(0xFFF0, 0x0005), 0x1_0005);
        assert_eq!(expand(0x1_0005, 0xFFF0), 0xFFF0);
        assert_eq!(expand(0x1234_5678, 0x5679), 0x1234_5679);
        assert_eq!(expand(u32::MAX - 3, 0xFFFF), u32::MAX);
        let mut window = ReplayWindow::new();
        for seq in (0..200_000u32).step_by(997) {
            let (buf, n) = frame(seq, b"m");
            let f = Frame::split(&buf[..n], Direction::Up).unwrap();
            assert_eq!(f.open(&key(), &UP, &mut window), Ok(seq));
        }
    }

    proptest::proptest! {
        #[test]
        fn expand_finds_any_number_within_half_the_counter_space_of_the_highest(
            highest in proptest::prelude::any::<u32>(),
            offset in -32_767i64..=32_768,
        ) {
            let seq = i64::from(highest) + offset;
            proptest::prop_assume!((0..=i64::from(u32::MAX)).contains(&seq));
            let seq = seq as u32;
            proptest::prop_assert_eq!(expand(highest, seq as u16), seq);
        }
    }
}
