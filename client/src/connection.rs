//! One TCP connection to a node: frames go out from the batcher thread; a reader thread
//! decodes what comes back and hands it to the batcher as events.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crossbeam::channel::Sender;
use tally_codecs::wire::{FrameDecoder, Message};

use crate::batcher::Event;

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
}

/// An open connection. Dropping it closes the socket, which also ends its reader.
pub struct Connection {
    stream: TcpStream,
    pub address: SocketAddr,
}

impl Connection {
    /// Connects and starts the reader, which sends what it receives to `events`, tagged
    /// with `generation` so that the batcher can ignore a connection it has given up.
    pub fn open(
        address: SocketAddr,
        connect_timeout: Duration,
        write_timeout: Duration,
        events: Sender<Event>,
        generation: u64,
    ) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&address, connect_timeout)?;
        stream.set_nodelay(true)?;
        // A node that stops reading must not hang the batcher forever: the write fails
        // and the request is retried elsewhere.
        stream.set_write_timeout(Some(write_timeout))?;
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

fn read_frames(mut stream: TcpStream, events: &Sender<Event>, generation: u64) {
    let wrap = |received| Event::Received { generation, received };
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let lost = loop {
        let read = match stream.read(&mut buffer) {
            Ok(0) => break Received::Lost("the node closed the connection".to_owned()),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
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
