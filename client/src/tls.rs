//! TLS (rustls, with the `ring` provider) for a connection whose two directions are
//! served by two threads, as both ends of a Tally connection are: one thread reads
//! frames, another writes them.
//!
//! A TLS session is one state machine for both directions, so the two threads share one
//! `rustls::Connection` behind a mutex. The lock is held only while bytes are moved in or
//! out of that state machine, never across a blocking socket call: a reader waiting for
//! the peer never stalls the writer, and a writer blocked on a full socket never stalls
//! the reader. A second mutex, taken before the session's and held across the socket
//! write, keeps the TLS records on the wire in the order the session produced them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Raw TLS bytes read from the socket at a time: a little more than the largest record
/// (16 KiB of payload plus its header and tag), so that a record rarely takes two reads.
const INCOMING_BYTES: usize = 17 * 1024;

/// The first byte of a TLS record that carries a handshake message: how a node tells a
/// TLS client from a plain one on the same port.
pub const HANDSHAKE_RECORD_TYPE: u8 = 0x16;

/// One end of a TLS connection. Each clone (see [`TlsStream::try_clone`]) is a handle on
/// the same session, meant for one thread.
pub struct TlsStream {
    socket: TcpStream,
    shared: Arc<Shared>,
    /// Raw bytes read from the socket and not yet given to the session: `incoming[start..end]`.
    incoming: Vec<u8>,
    start: usize,
    end: usize,
}

struct Shared {
    session: Mutex<rustls::Connection>,
    /// Held while encrypted bytes are taken from the session and written to the socket;
    /// the vector is the scratch space they pass through.
    outgoing: Mutex<Vec<u8>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding either lock leaves the session in a state rustls still
    // accepts calls on (every call is a plain method on it); the connection then fails
    // on its own terms.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn invalid(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("TLS: {error}"))
}

impl TlsStream {
    /// Runs the handshake on `socket` until it completes or `deadline` passes; the
    /// socket's read timeout is changed (callers set their own afterwards).
    pub fn handshake(
        mut socket: TcpStream,
        session: impl Into<rustls::Connection>,
        deadline: Instant,
    ) -> std::io::Result<TlsStream> {
        let mut session = session.into();
        while session.is_handshaking() || session.wants_write() {
            if session.wants_write() {
                session.write_tls(&mut socket)?;
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake not done in time"));
            }
            socket.set_read_timeout(Some(left))?;
            if session.read_tls(&mut socket)? == 0 {
                let reason = "the peer closed the connection during the TLS handshake";
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, reason));
            }
            if let Err(error) = session.process_new_packets() {
                // The session queued an alert that tells the peer why; it is best effort.
                let _ = session.write_tls(&mut socket);
                return Err(invalid(error));
            }
        }
        let shared = Arc::new(Shared { session: Mutex::new(session), outgoing: Mutex::new(Vec::new()) });
        Ok(TlsStream { socket, shared, incoming: Vec::new(), start: 0, end: 0 })
    }

    /// Another handle on the same session and socket, for another thread.
    pub fn try_clone(&self) -> std::io::Result<TlsStream> {
        let socket = self.socket.try_clone()?;
        Ok(TlsStream { socket, shared: self.shared.clone(), incoming: Vec::new(), start: 0, end: 0 })
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Plaintext into `buffer`; `Ok(0)` once the peer has closed (with or without a
    /// `close_notify`: the frames above say whether the stream ended between frames).
    pub fn read_plain(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        loop {
            let alert = {
                let mut session = lock(&self.shared.session);
                match session.reader().read(buffer) {
                    Ok(read) => return Ok(read),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(error) => return Err(error),
                }
                if self.start == self.end {
                    None
                } else {
                    // Fed only while no plaintext is waiting, so rustls's bound on
                    // received plaintext is never reached.
                    let mut pending = &self.incoming[self.start..self.end];
                    let taken = session.read_tls(&mut pending)?;
                    if taken == 0 {
                        return Err(invalid("the session takes no more input"));
                    }
                    self.start += taken;
                    Some(session.process_new_packets().map_err(invalid))
                }
            };
            match alert {
                // Fed: look for plaintext again.
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = self.flush_session();
                    return Err(error);
                }
                None => {
                    if !self.fill()? {
                        return Ok(0);
                    }
                }
            }
            // A key update or an alert the session wants to answer.
            if lock(&self.shared.session).wants_write() {
                self.flush_session()?;
            }
        }
    }

    /// One blocking read of raw bytes from the socket, outside every lock; `false` at
    /// end of stream.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.incoming.is_empty() {
            self.incoming = vec![0u8; INCOMING_BYTES];
        }
        let read = self.socket.read(&mut self.incoming)?;
        self.start = 0;
        self.end = read;
        Ok(read > 0)
    }

    /// Encrypts and writes all of `bytes`.
    pub fn write_plain(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut outgoing = lock(&self.shared.outgoing);
        let mut rest = bytes;
        while !rest.is_empty() {
            outgoing.clear();
            {
                let mut session = lock(&self.shared.session);
                // The session takes what its send buffer has room for.
                let taken = session.writer().write(rest)?;
                rest = &rest[taken..];
                while session.wants_write() {
                    session.write_tls(&mut *outgoing)?;
                }
                if taken == 0 && outgoing.is_empty() {
                    return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the TLS session takes no data"));
                }
            }
            (&self.socket).write_all(&outgoing)?;
        }
        Ok(())
    }

    /// Writes whatever the session has queued (handshake messages, alerts, key updates).
    fn flush_session(&self) -> std::io::Result<()> {
        let mut outgoing = lock(&self.shared.outgoing);
        outgoing.clear();
        {
            let mut session = lock(&self.shared.session);
            while session.wants_write() {
                session.write_tls(&mut *outgoing)?;
            }
        }
        (&self.socket).write_all(&outgoing)
    }

    /// Sends `close_notify` (best effort) when the write side closes, then shuts the
    /// socket down.
    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            lock(&self.shared.session).send_close_notify();
            let _ = self.flush_session();
        }
        self.socket.shutdown(how)
    }
}

/// A connection that is plain TCP or TLS: what both ends of a Tally connection read and
/// write through. The plain variant is the socket itself, so plain connections pay only
/// the match.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => tls.socket(),
        }
    }

    pub fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Plain(socket) => Stream::Plain(socket.try_clone()?),
            Stream::Tls(tls) => Stream::Tls(Box::new(tls.try_clone()?)),
        })
    }

    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.shutdown(how),
            Stream::Tls(tls) => tls.shutdown(how),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buffer),
            Stream::Tls(tls) => tls.read_plain(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(bytes),
            Stream::Tls(tls) => tls.write_plain(bytes).map(|()| bytes.len()),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.write_all(bytes),
            Stream::Tls(tls) => tls.write_plain(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The crypto this project uses: rustls's `ring` provider, named explicitly so that no
/// other provider is ever chosen by default.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an error names the file.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("{shown}: cannot read certificates: {error}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{shown}: not a valid PEM certificate file: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("{shown}: holds no PEM certificate (BEGIN CERTIFICATE)"));
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| format!("{}: no usable PEM private key: {error}", path.display()))
}

/// A trust store of every certificate in a PEM file.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(path)? {
        roots.add(certificate).map_err(|error| format!("{}: not a usable CA certificate: {error}", path.display()))?;
    }
    Ok(roots)
}

/// How a client connects with TLS: whom it trusts, what it shows, and the name it
/// expects the node's certificate to carry.
#[derive(Clone, Debug)]
pub struct TlsClientConfig {
    pub config: Arc<rustls::ClientConfig>,
    /// `None`: the node's IP address, which its certificate must hold as an IP SAN.
    pub server_name: Option<ServerName<'static>>,
}

impl TlsClientConfig {
    /// Trusts the CA certificates in `ca`; shows the certificate chain `cert` with its
    /// `key` when both are given (a node with `--tls-client-ca` requires one).
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<TlsClientConfig, String> {
        let roots = load_roots(ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_path, key_path)) => {
                let chain = load_certificates(cert_path)?;
                let key = load_private_key(key_path)?;
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    format!(
                        "{} and {} are not a usable client identity: {error}",
                        cert_path.display(),
                        key_path.display()
                    )
                })?
            }
        };
        Ok(TlsClientConfig { config: Arc::new(config), server_name: None })
    }

    /// Expects `name` (a DNS name or an IP address) in the node's certificate.
    pub fn with_server_name(mut self, name: &str) -> Result<TlsClientConfig, String> {
        let name = ServerName::try_from(name.to_owned()).map_err(|error| format!("{name:?}: {error}"))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The name to verify for a node at `address`.
    pub fn server_name_for(&self, address: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(address.ip().into()))
    }
}
