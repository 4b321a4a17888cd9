//! One TCP connection to a node: frames go out from the batcher thread; a reader thread
//! decodes what comes back and hands it to the batcher as events.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use tally_codecs::wire::auth::auth_mac;
use tally_codecs::wire::{AuthHello, AuthProof, Body, FrameDecoder, Message, encode_auth_hello, encode_auth_proof};

use crate::batcher::Event;
use crate::key::ClientKey;
use crate::tls::{Stream, TlsClientConfig, TlsStream};

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What the reader thread tells the batcher.
pub enum Received {
    Message(Message),
    /// The connection is gone; nothing more comes from it.
    Lost(String),
    /// The peer sent bytes that are not a Tally frame (a bad magic, a bad checksum): it
    /// does not speak the protocol, and resending will not change that.
    Garbled(String),
    /// The TLS session failed (the node sent an alert, or a record did not verify).
    TlsFailed(String),
}

/// An open connection. Dropping it closes the socket, which also ends its reader.
pub struct Connection {
    stream: Stream,
    pub address: SocketAddr,
}

impl Connection {
    /// Connects and starts the reader, which sends what it receives to `events`, tagged
    /// with `generation` so that the batcher can ignore a connection it has given up.
    /// With `tls`, the TLS handshake comes first; a failed one is `InvalidData` when the
    /// node's certificate did not verify or the node refused this client's.
    pub fn open(
        address: SocketAddr,
        connect_timeout: Duration,
        write_timeout: Duration,
        key: Option<&ClientKey>,
        tls: Option<&TlsClientConfig>,
        events: Sender<Event>,
        generation: u64,
    ) -> std::io::Result<Connection> {
        let stream = open_stream(address, connect_timeout, write_timeout, key, tls)?;
        // A node that stops reading must not hang the batcher forever: the write fails
        // and the request is retried elsewhere.
        stream.socket().set_write_timeout(Some(write_timeout))?;
        stream.socket().set_read_timeout(None)?;
        let reader = stream.try_clone()?;
        std::thread::Builder::new()
            .name(format!("tally-client reader {address}"))
            .spawn(move || read_frames(reader, &events, generation))?;
        Ok(Connection { stream, address })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Connects to `address` and runs the handshakes a node asks for: TLS first when `tls`
/// is given (a failed one is `InvalidData` when the node's certificate did not verify or
/// the node refused this client's), then the key's proof when `key` is given (a refusal
/// is `PermissionDenied`). Each handshake's replies are bounded by `timeout`, which is
/// left set as the socket's read and write timeout. For one-off requests such as
/// `tally promote`; the [`Client`](crate::Client) keeps its own connections.
pub fn open_stream(
    address: SocketAddr,
    connect_timeout: Duration,
    timeout: Duration,
    key: Option<&ClientKey>,
    tls: Option<&TlsClientConfig>,
) -> std::io::Result<Stream> {
    let socket = TcpStream::connect_timeout(&address, connect_timeout)?;
    socket.set_nodelay(true)?;
    socket.set_write_timeout(Some(timeout))?;
    let mut stream = match tls {
        None => Stream::Plain(socket),
        Some(tls) => {
            let session = rustls::ClientConnection::new(tls.config.clone(), tls.server_name_for(address))
                .map_err(|error| std::io::Error::other(format!("TLS: {error}")))?;
            let deadline = Instant::now() + timeout;
            Stream::Tls(Box::new(TlsStream::handshake(socket, session, deadline)?))
        }
    };
    stream.socket().set_read_timeout(Some(timeout))?;
    if let Some(key) = key {
        authenticate(&mut stream, key)?;
    }
    Ok(stream)
}

/// Proves `key` to the node (`wire::auth`). A refusal is `PermissionDenied`, so that the
/// caller can tell it from a node that is down.
fn authenticate(stream: &mut Stream, key: &ClientKey) -> std::io::Result<()> {
    let client_nonce = crate::config::random_nonce();
    let hello = AuthHello { key_id: key.key_id, reserved: [0; 8], client_nonce };
    let mut bytes = Vec::new();
    encode_auth_hello(0, key.client_id, &hello, &mut bytes);
    stream.write_all(&bytes)?;
    let mut decoder = FrameDecoder::new();
    let challenge = match next_message(stream, &mut decoder)? {
        Message::AuthChallenge { challenge, .. } => challenge,
        other => return Err(refusal(&other)),
    };
    let mac = auth_mac(&key.secret, key.client_id, key.key_id, &client_nonce, &challenge.node_nonce);
    bytes.clear();
    encode_auth_proof(0, key.client_id, &AuthProof { mac }, &mut bytes);
    stream.write_all(&bytes)?;
    match next_message(stream, &mut decoder)? {
        Message::AuthGrant { .. } => Ok(()),
        other => Err(refusal(&other)),
    }
}

fn next_message(stream: &mut Stream, decoder: &mut FrameDecoder) -> std::io::Result<Message> {
    let mut buffer = [0u8; 512];
    loop {
        match decoder.next_message() {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {}
            Err(error) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())),
        }
        match stream.read(&mut buffer)? {
            0 => {
                let reason = "the node closed the connection during authentication";
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, reason));
            }
            read => decoder.feed(&buffer[..read]),
        }
    }
}

fn refusal(message: &Message) -> std::io::Error {
    let reason = match message {
        Message::Frame(frame) => match &frame.body {
            Body::Error(code) => format!("the node refused authentication: {code}"),
            _ => "the node answered the handshake with a ledger frame".to_owned(),
        },
        _ => "the node answered the handshake out of order".to_owned(),
    };
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, reason)
}

fn read_frames(mut stream: Stream, events: &Sender<Event>, generation: u64) {
    let wrap = |received| Event::Received { generation, received };
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let lost = loop {
        let read = match stream.read(&mut buffer) {
            Ok(0) => break Received::Lost("the node closed the connection".to_owned()),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            // Only the TLS layer reports invalid data.
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                break Received::TlsFailed(error.to_string());
            }
            Err(error) => break Received::Lost(format!("read failed: {error}")),
        };
        decoder.feed(&buffer[..read]);
        let failed = loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    if events.send(wrap(Received::Message(message))).is_err() {
                        return;
                    }
                }
                Ok(None) => break None,
                Err(error) => break Some(Received::Garbled(error.to_string())),
            }
        };
        if let Some(garbled) = failed {
            break garbled;
        }
    };
    let _ = events.send(wrap(lost));
}
