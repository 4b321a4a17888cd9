//! Replication messages over a blocking TCP stream, and the two ends of the handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tally_replication::message::HANDSHAKE_PAYLOAD_BYTES_MAX;
use tally_replication::{Accepting, AuthError, ClusterKey, Connecting, DecodeError, Message, MessageDecoder, Nonce};

/// How long the whole handshake may take, from the connection to the proof: a deadline,
/// not a timeout per read, so a peer that trickles its bytes is cut off all the same.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const READ_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer did not finish the handshake within {} ms", HANDSHAKE_TIMEOUT.as_millis())]
    HandshakeTimeout,
    #[error("the peer refused: {0}")]
    Refused(String),
    /// A primary refused a subscription because the subscriber's log parts from its own.
    #[error("the primary's log and this one diverge: {0}")]
    Diverged(String),
}

/// One end of a peer connection.
pub struct PeerStream {
    stream: TcpStream,
    decoder: MessageDecoder,
    buffer: Vec<u8>,
    out: Vec<u8>,
    pub peer: SocketAddr,
}

impl PeerStream {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> PeerStream {
        let _ = stream.set_nodelay(true);
        PeerStream {
            stream,
            decoder: MessageDecoder::default(),
            buffer: vec![0; READ_BUFFER_BYTES],
            out: Vec::new(),
            peer,
        }
    }

    /// A second handle on the same socket, for a writer thread.
    pub fn try_clone(&self) -> std::io::Result<PeerStream> {
        Ok(PeerStream::new(self.stream.try_clone()?, self.peer))
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// A send that makes no progress for `timeout` fails (for the socket, both handles).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_write_timeout(timeout)
    }

    pub fn send(&mut self, message: &Message) -> Result<(), PeerError> {
        self.out.clear();
        message.encode(&mut self.out);
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    /// The next message; blocks (up to the read timeout, then an `Io` error).
    pub fn recv(&mut self) -> Result<Message, PeerError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return refusal_or(message);
            }
            self.read_more()?;
        }
    }

    /// The next message of the handshake, whole before `deadline`: each read waits at most
    /// the time left, and a frame longer than any of the handshake's is refused from its
    /// header, so a peer that has proved nothing holds at most one read (256 KiB) and a
    /// handshake frame, for at most [`HANDSHAKE_TIMEOUT`].
    fn recv_handshake(&mut self, deadline: Instant) -> Result<Message, PeerError> {
        loop {
            if let Some(message) = self.decoder.next_message_within(HANDSHAKE_PAYLOAD_BYTES_MAX)? {
                return refusal_or(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PeerError::HandshakeTimeout);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.read_more() {
                // The deadline is checked again above.
                Err(PeerError::Io(error))
                    if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                other => other?,
            }
        }
    }

    /// Feeds the decoder what one read returns. A read cut short by a signal handler (a
    /// socket with a timeout fails with `EINTR` whatever `SA_RESTART` says: SIGHUP's
    /// reload, SIGTERM's stop request) is read again, not taken for a broken peer.
    fn read_more(&mut self) -> Result<(), PeerError> {
        let read = loop {
            match self.stream.read(&mut self.buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if read == 0 {
            return Err(PeerError::Closed);
        }
        self.decoder.feed(&self.buffer[..read]);
        Ok(())
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A refusal is an error; any other message is what the caller asked for.
fn refusal_or(message: Message) -> Result<Message, PeerError> {
    match message {
        Message::Refused { reason } => Err(PeerError::Refused(reason)),
        Message::Diverged { reason } => Err(PeerError::Diverged(reason)),
        message => Ok(message),
    }
}

/// A fresh handshake nonce from the kernel's random source.
pub fn nonce() -> std::io::Result<Nonce> {
    let mut nonce = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(nonce)
}

/// Connects to `address` (within `timeout`) and proves the cluster secret both ways
/// (within [`HANDSHAKE_TIMEOUT`] more).
pub fn connect(address: SocketAddr, key: &ClusterKey, timeout: Duration) -> Result<PeerStream, PeerError> {
    let stream = TcpStream::connect_timeout(&address, timeout)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut peer = PeerStream::new(stream, address);
    let (connecting, hello) = Connecting::start(key.clone(), nonce()?);
    peer.send(&hello)?;
    let proof = connecting.on_challenge(peer.recv_handshake(deadline)?)?;
    peer.send(&proof)?;
    peer.set_read_timeout(None)?;
    Ok(peer)
}

/// The accepting side: the peer's first frame must be a hello of this cluster, and its
/// proof must hold, all within [`HANDSHAKE_TIMEOUT`]; otherwise it is told why, and
/// nothing else.
pub fn accept(mut peer: PeerStream, key: &ClusterKey) -> Result<PeerStream, PeerError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let hello = peer.recv_handshake(deadline)?;
    let (accepting, challenge) = match Accepting::on_hello(key.clone(), nonce()?, hello) {
        Ok(accepted) => accepted,
        Err(error) => {
            let _ = peer.send(&Message::Refused { reason: error.to_string() });
            return Err(error.into());
        }
    };
    peer.send(&challenge)?;
    if let Err(error) = accepting.on_proof(peer.recv_handshake(deadline)?) {
        let _ = peer.send(&Message::Refused { reason: error.to_string() });
        return Err(error.into());
    }
    peer.set_read_timeout(None)?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::new("peer-io-test", b"a secret of the peer_io unit test").expect("a valid key")
    }

    /// What [`accept`] returned, and how long it took.
    type Accepted = (Result<PeerStream, PeerError>, Duration);

    /// A listener on loopback whose first connection goes through [`accept`] on a thread,
    /// which sends back what it returned.
    fn accept_once() -> (SocketAddr, mpsc::Receiver<Accepted>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("its address");
        let (results, received) = mpsc::channel();
        std::thread::spawn(move || {
            let (stream, peer) = listener.accept().expect("a connection");
            let started = Instant::now();
            let result = accept(PeerStream::new(stream, peer), &key());
            let _ = results.send((result, started.elapsed()));
        });
        (address, received)
    }

    #[test]
    fn connect_and_accept_prove_the_secret_both_ways() {
        let (address, accepted) = accept_once();
        connect(address, &key(), HANDSHAKE_TIMEOUT).expect("the handshake succeeds");
        let (result, _) = accepted.recv_timeout(HANDSHAKE_TIMEOUT).expect("accept returns");
        result.expect("the accepting side agrees");
    }

    /// The read timeout alone bounds each read: a peer sending a byte a second would hold
    /// the connection (and its buffered frame) for as long as it liked.
    #[test]
    fn the_accept_side_gives_up_at_the_deadline_when_bytes_trickle() {
        let (address, accepted) = accept_once();
        let mut hello = Vec::new();
        Message::Hello { cluster_id: key().cluster_id().into(), nonce: [7; 32] }.encode(&mut hello);
        let mut stream = TcpStream::connect(address).expect("connect");
        std::thread::spawn(move || {
            // A byte a second, never the whole hello; stops once the other side has closed.
            for byte in &hello[..hello.len() - 1] {
                if stream.write_all(std::slice::from_ref(byte)).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let (result, took) =
            accepted.recv_timeout(HANDSHAKE_TIMEOUT + Duration::from_secs(1)).expect("accept gives up in time");
        assert!(matches!(result, Err(PeerError::HandshakeTimeout)), "{:?}", result.err());
        assert!(took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100), "gave up after {took:?}");
    }
}
