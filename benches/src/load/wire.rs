//! Raw frames over TCP: the harness speaks the wire protocol itself, so that the client
//! side costs one `write` per request and one decode per reply, and the CPU left over on
//! this small machine goes to the node.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tally_codecs::wire::{Body, FrameDecoder, Reply, encode_request};
use tally_codecs::{Account, EventResult, Operation, ResultCode, Transfer};

/// The client id in every frame the harness sends.
pub const CLIENT_ID: u128 = 0x7a11_10ad_7a11_10ad;
/// How long a reply may take before the run is given up as stuck.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Connects to the node, with Nagle off as the real client has it.
pub fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(address).map_err(|error| format!("cannot connect to {address}: {error}"))?;
    stream.set_nodelay(true).map_err(|error| format!("set_nodelay: {error}"))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(|error| format!("set_read_timeout: {error}"))?;
    Ok(stream)
}

/// Appends a `create_transfers` request frame to `out`.
pub fn transfer_frame(request_id: u64, transfers: &[Transfer], out: &mut Vec<u8>) -> Result<(), String> {
    encode_request(Operation::CreateTransfers, request_id, CLIENT_ID, transfers, out).map_err(|error| error.to_string())
}

/// Writes all of `bytes`, naming what failed.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    stream.write_all(bytes).map_err(|error| format!("write to the node failed: {error}"))
}

/// The replies coming back on one connection.
pub struct Replies {
    stream: TcpStream,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
}

impl Replies {
    pub fn new(stream: TcpStream) -> Replies {
        Replies { stream, decoder: FrameDecoder::new(), buffer: vec![0; READ_BUFFER_BYTES] }
    }

    /// The next reply to a create request: its request id and its results.
    pub fn next_results(&mut self) -> Result<(u64, Vec<EventResult>), String> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let id = frame.request_id;
                    return match frame.body {
                        Body::Reply(Reply::CreateTransfers(results) | Reply::CreateAccounts(results)) => {
                            Ok((id, results))
                        }
                        Body::Error(code) => Err(format!("the node refused request {id}: {}", code.name())),
                        Body::Redirect(primary) => Err(format!("the node is not the primary; it names {primary}")),
                        Body::Reply(reply) => Err(format!("a {} reply to request {id}", reply.operation().name())),
                        Body::Request(_) => Err("the node sent a request".to_owned()),
                    };
                }
                Ok(None) => {}
                Err(error) => return Err(format!("bad frame from the node: {error}")),
            }
            let read = match self.stream.read(&mut self.buffer) {
                Ok(0) => return Err("the node closed the connection".to_owned()),
                Ok(read) => read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!("no reply within {REPLY_TIMEOUT:?}"));
                }
                Err(error) => return Err(format!("read from the node failed: {error}")),
            };
            self.decoder.feed(&self.buffer[..read]);
        }
    }
}

/// Counts results: every one should be `created`.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub created: u64,
    pub failed: u64,
    /// The first result that was not `created`, by name.
    pub first_failure: Option<String>,
}

impl Tally {
    pub fn add(&mut self, results: &[EventResult]) {
        for result in results {
            if result.status == ResultCode::Created as u32 {
                self.created += 1;
            } else {
                self.failed += 1;
                if self.first_failure.is_none() {
                    let name = ResultCode::from_u32(result.status).map_or("unknown code", ResultCode::name);
                    self.first_failure = Some(format!("{name} ({})", result.status));
                }
            }
        }
    }

    /// A failure that is not a result code, such as a reply of the wrong shape.
    pub fn add_failure(&mut self, events: u64, reason: String) {
        self.failed += events;
        self.first_failure.get_or_insert(reason);
    }

    pub fn merge(&mut self, other: Tally) {
        self.created += other.created;
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    /// `all N created` or what went wrong.
    pub fn summary(&self) -> String {
        match &self.first_failure {
            None => format!("all {} created", self.created),
            Some(first) => format!("{} created, {} NOT created (first: {first})", self.created, self.failed),
        }
    }
}

/// Creates accounts `1..=count` over a fresh connection, a full request at a time, and
/// checks that each was created.
pub fn create_accounts(address: SocketAddr, accounts: &[Account], batch_events: usize) -> Result<(), String> {
    let mut stream = connect(address)?;
    let mut replies = Replies::new(stream.try_clone().map_err(|error| format!("cannot clone a socket: {error}"))?);
    let mut tally = Tally::default();
    let mut frame = Vec::new();
    for (index, chunk) in accounts.chunks(batch_events.max(1)).enumerate() {
        frame.clear();
        encode_request(Operation::CreateAccounts, index as u64 + 1, CLIENT_ID, chunk, &mut frame)
            .map_err(|error| error.to_string())?;
        send(&mut stream, &frame)?;
        let (_, results) = replies.next_results()?;
        if results.len() != chunk.len() {
            return Err(format!("{} results for {} accounts", results.len(), chunk.len()));
        }
        tally.add(&results);
    }
    match tally.first_failure {
        None => Ok(()),
        Some(_) => Err(format!("creating the accounts: {}", tally.summary())),
    }
}
