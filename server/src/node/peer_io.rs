//! Replication messages over a blocking TCP stream, and the two ends of the handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tally_replication::{Accepting, AuthError, ClusterKey, Connecting, DecodeError, Message, MessageDecoder, Nonce};

/// How long a peer may take to answer during the handshake.
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
                return match message {
                    Message::Refused { reason } => Err(PeerError::Refused(reason)),
                    Message::Diverged { reason } => Err(PeerError::Diverged(reason)),
                    message => Ok(message),
                };
            }
            let read = self.stream.read(&mut self.buffer)?;
            if read == 0 {
                return Err(PeerError::Closed);
            }
            self.decoder.feed(&self.buffer[..read]);
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A fresh handshake nonce from the kernel's random source.
pub fn nonce() -> std::io::Result<Nonce> {
    let mut nonce = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(nonce)
}

/// Connects to `address` and proves the cluster secret both ways.
pub fn connect(address: SocketAddr, key: &ClusterKey, timeout: Duration) -> Result<PeerStream, PeerError> {
    let stream = TcpStream::connect_timeout(&address, timeout)?;
    let mut peer = PeerStream::new(stream, address);
    peer.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let (connecting, hello) = Connecting::start(key.clone(), nonce()?);
    peer.send(&hello)?;
    let proof = connecting.on_challenge(peer.recv()?)?;
    peer.send(&proof)?;
    peer.set_read_timeout(None)?;
    Ok(peer)
}

/// The accepting side: the peer's first frame must be a hello of this cluster, and its
/// proof must hold; otherwise it is told why, and nothing else.
pub fn accept(mut peer: PeerStream, key: &ClusterKey) -> Result<PeerStream, PeerError> {
    peer.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let hello = peer.recv()?;
    let (accepting, challenge) = match Accepting::on_hello(key.clone(), nonce()?, hello) {
        Ok(accepted) => accepted,
        Err(error) => {
            let _ = peer.send(&Message::Refused { reason: error.to_string() });
            return Err(error.into());
        }
    };
    peer.send(&challenge)?;
    if let Err(error) = accepting.on_proof(peer.recv()?) {
        let _ = peer.send(&Message::Refused { reason: error.to_string() });
        return Err(error.into());
    }
    peer.set_read_timeout(None)?;
    Ok(peer)
}
