//! The simulated network: every message is an envelope with a delivery time. It drops,
//! duplicates, delays (and so reorders) messages, and cuts links between nodes
//! (partitions) until they are healed. All of it is driven by the simulation's one PRNG.

use std::collections::{BTreeMap, BTreeSet};

use tally_codecs::wire::{Reply, Request};
use tally_replication::{Message, MessageDecoder};

use super::Rng;

/// A party on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    Node(usize),
    Client(usize),
}

/// What a client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Done(Reply),
    NotPrimary,
}

#[derive(Clone, Debug)]
pub enum Payload {
    /// A replication message, carried in its wire encoding (so the real codec runs), on
    /// `stream`: the subscription it belongs to (0 for messages outside one). `tally`
    /// carries a subscription on one TCP connection, so a message of an older connection
    /// never arrives on a newer one; the stream number gives the simulator that rule.
    Peer {
        bytes: Vec<u8>,
        stream: u64,
    },
    Request {
        request_id: u64,
        request: Request,
    },
    Answer {
        request_id: u64,
        answer: Answer,
    },
}

impl Payload {
    pub fn peer(message: &Message) -> Payload {
        Payload::on_stream(message, 0)
    }

    /// A replication message of the subscription `stream`.
    pub fn on_stream(message: &Message, stream: u64) -> Payload {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        Payload::Peer { bytes, stream }
    }

    /// A small tag for the trace hash.
    pub fn tag(&self) -> u64 {
        match self {
            Payload::Peer { bytes, .. } => 0x100 | bytes.get(4).copied().map_or(0, u64::from) ^ bytes.len() as u64,
            Payload::Request { request_id, .. } => 0x200 ^ request_id,
            Payload::Answer { request_id, .. } => 0x300 ^ request_id,
        }
    }
}

/// Decodes a replication message that travelled as bytes.
pub fn decode_peer(bytes: &[u8]) -> Result<Message, String> {
    let mut decoder = MessageDecoder::default();
    decoder.feed(bytes);
    match decoder.next_message() {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err("a truncated replication frame".into()),
        Err(error) => Err(error.to_string()),
    }
}

pub struct Envelope {
    pub deliver_at: u64,
    /// Send order, to break ties deterministically.
    pub serial: u64,
    pub from: Addr,
    pub to: Addr,
    pub payload: Payload,
}

/// Fault rates, in parts per thousand.
#[derive(Clone, Copy, Debug)]
pub struct NetFaults {
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub long_delay_per_mille: u64,
}

#[derive(Default)]
pub struct Net {
    in_flight: Vec<Envelope>,
    serial: u64,
    /// Cut links between nodes, as (lower, higher) pairs.
    cut: BTreeSet<(usize, usize)>,
    /// (from, to) node pairs that lost a message since the sender last looked: on TCP
    /// that is a broken connection, which the sender notices.
    broken: BTreeSet<(usize, usize)>,
    pub dropped: u64,
    pub duplicated: u64,
    pub delivered: u64,
    /// The latest delivery time queued on each subscription stream (from, to, stream):
    /// a stream is one TCP connection in `tally`, which delivers in order, so a message
    /// on it is never delivered before one sent earlier on it (a heartbeat overtaking the
    /// records before it would tell a recovering standby it had caught up; seed 20690).
    stream_tail: BTreeMap<(usize, usize, u64), u64>,
}

impl Net {
    /// Queues `payload` (perhaps twice); false when the network dropped it at once.
    pub fn send(
        &mut self,
        rng: &mut Rng,
        now: u64,
        faults: Option<NetFaults>,
        from: Addr,
        to: Addr,
        payload: Payload,
    ) -> bool {
        if self.is_cut(from, to) {
            self.lost(from, to);
            return false;
        }
        let copies = match faults {
            Some(faults) if rng.per_mille(faults.drop_per_mille) => {
                self.lost(from, to);
                0
            }
            Some(faults) if rng.per_mille(faults.duplicate_per_mille) => {
                self.duplicated += 1;
                2
            }
            _ => 1,
        };
        for copy in 0..copies {
            let delay = match faults {
                Some(faults) if rng.per_mille(faults.long_delay_per_mille) => rng.range(20, 200),
                Some(_) => rng.range(1, 12),
                None => 1 + copy,
            };
            let mut deliver_at = now + delay * 1_000_000;
            if let (Addr::Node(sender), Addr::Node(receiver), Payload::Peer { stream, .. }) = (from, to, &payload)
                && *stream != 0
            {
                let tail = self.stream_tail.entry((sender, receiver, *stream)).or_insert(0);
                deliver_at = deliver_at.max(*tail);
                *tail = deliver_at;
            }
            self.serial += 1;
            let payload = payload.clone();
            self.in_flight.push(Envelope { deliver_at, serial: self.serial, from, to, payload });
        }
        copies > 0
    }

    /// Removes and returns the messages due by `now`, in delivery order. A link cut after
    /// a message was sent still loses it.
    pub fn due(&mut self, now: u64) -> Vec<Envelope> {
        let (mut due, later): (Vec<Envelope>, Vec<Envelope>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|envelope| envelope.deliver_at <= now);
        self.in_flight = later;
        due.sort_by_key(|envelope| (envelope.deliver_at, envelope.serial));
        let (due, cut): (Vec<Envelope>, Vec<Envelope>) =
            due.into_iter().partition(|envelope| !self.is_cut(envelope.from, envelope.to));
        for envelope in cut {
            self.lost(envelope.from, envelope.to);
        }
        self.delivered += due.len() as u64;
        due
    }

    fn lost(&mut self, from: Addr, to: Addr) {
        self.dropped += 1;
        if let (Addr::Node(from), Addr::Node(to)) = (from, to) {
            self.broken.insert((from, to));
        }
    }

    /// Whether a message from node `from` to node `to` was lost since the last call (the
    /// connection broke); clears it.
    pub fn take_broken(&mut self, from: usize, to: usize) -> bool {
        self.broken.remove(&(from, to))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn cut_link(&mut self, a: usize, b: usize) {
        if a != b {
            self.cut.insert((a.min(b), a.max(b)));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether nodes `a` and `b` can reach each other (their link is not cut).
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    pub fn partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    fn is_cut(&self, from: Addr, to: Addr) -> bool {
        match (from, to) {
            (Addr::Node(a), Addr::Node(b)) => self.cut.contains(&(a.min(b), a.max(b))),
            _ => false,
        }
    }
}
