//! A minimal PostgreSQL client: protocol 3.0 startup under trust authentication and the
//! simple query protocol, text results only. Enough for the baseline, nothing more: no
//! passwords, no TLS, no prepared statements (a batch is one query string).

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Protocol version 3.0.
const PROTOCOL_VERSION: i32 = 196_608;
/// The longest a server message may be; a longer length means a broken stream.
const MESSAGE_BYTES_MAX: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and as whom to connect: `postgres://USER@HOST:PORT/DATABASE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let bad = |why: &str| format!("bad PostgreSQL URL {text:?}: {why} (expected postgres://USER@HOST:PORT/DB)");
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or_else(|| bad("it must start with postgres://"))?;
        let (user, rest) = rest.split_once('@').ok_or_else(|| bad("no user"))?;
        if user.is_empty() || user.contains(':') {
            return Err(bad("a user without a password is needed (trust authentication only)"));
        }
        let (address, database) = rest.split_once('/').ok_or_else(|| bad("no database"))?;
        if database.is_empty() || database.contains(['/', '?']) {
            return Err(bad("no database, or options (none are supported)"));
        }
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad("the port is not a number"))?),
            None => (address, 5432),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Url { user: user.to_owned(), host: host.to_owned(), port, database: database.to_owned() })
    }
}

/// One connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

/// A query's rows (text columns; `None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

impl Connection {
    pub fn connect(url: &Url) -> Result<Connection, String> {
        use std::net::ToSocketAddrs;
        let address = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve {}: {error}", url.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", url.host))?;
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
            .map_err(|error| format!("cannot connect to PostgreSQL at {address}: {error}"))?;
        let io = |error: std::io::Error| format!("PostgreSQL connection: {error}");
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
        let mut connection =
            Connection { reader: BufReader::new(stream.try_clone().map_err(io)?), writer: BufWriter::new(stream) };
        connection.start(url)?;
        Ok(connection)
    }

    fn start(&mut self, url: &Url) -> Result<(), String> {
        let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
        for (key, value) in [("user", url.user.as_str()), ("database", url.database.as_str())] {
            body.extend_from_slice(key.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let length = i32::try_from(body.len() + 4).map_err(|_| "startup message too long")?;
        self.write(&[&length.to_be_bytes(), &body])?;
        loop {
            let (tag, body) = self.read()?;
            match tag {
                b'R' => match body.get(..4).map(|code| i32::from_be_bytes([code[0], code[1], code[2], code[3]])) {
                    Some(0) => {}
                    Some(code) => {
                        return Err(format!(
                            "PostgreSQL asks for authentication (method {code}); only trust authentication is supported"
                        ));
                    }
                    None => return Err("a short authentication message".to_owned()),
                },
                b'E' => return Err(format!("PostgreSQL refused the connection: {}", error_message(&body))),
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// Runs `sql` (one or more statements; several run as one transaction) and returns
    /// the rows of every statement, in order.
    pub fn query(&mut self, sql: &str) -> Result<Rows, String> {
        let length = i32::try_from(sql.len() + 5).map_err(|_| "query too long")?;
        self.write(&[b"Q", &length.to_be_bytes(), sql.as_bytes(), b"\0"])?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let (tag, body) = self.read()?;
            match tag {
                b'D' => rows.push(data_row(&body)?),
                b'E' => failure = Some(error_message(&body)),
                b'Z' => return failure.map_or(Ok(rows), |error| Err(format!("PostgreSQL: {error}"))),
                _ => {}
            }
        }
    }

    fn write(&mut self, parts: &[&[u8]]) -> Result<(), String> {
        for part in parts {
            self.writer.write_all(part).map_err(|error| format!("write to PostgreSQL: {error}"))?;
        }
        self.writer.flush().map_err(|error| format!("write to PostgreSQL: {error}"))
    }

    fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut header = [0u8; 5];
        self.reader.read_exact(&mut header).map_err(|error| format!("read from PostgreSQL: {error}"))?;
        let length = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let length = usize::try_from(length).ok().filter(|length| (4..=MESSAGE_BYTES_MAX).contains(length));
        let length = length.ok_or("PostgreSQL sent a message with a bad length")?;
        let mut body = vec![0u8; length - 4];
        self.reader.read_exact(&mut body).map_err(|error| format!("read from PostgreSQL: {error}"))?;
        Ok((header[0], body))
    }
}

/// The columns of a `DataRow`.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, String> {
    let short = || "a short data row from PostgreSQL".to_owned();
    let count = u16::from_be_bytes([*body.first().ok_or_else(short)?, *body.get(1).ok_or_else(short)?]);
    let mut at = 2;
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let length = body.get(at..at + 4).ok_or_else(short)?;
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        at += 4;
        if length < 0 {
            columns.push(None);
            continue;
        }
        let end = at + length as usize;
        columns.push(Some(String::from_utf8_lossy(body.get(at..end).ok_or_else(short)?).into_owned()));
        at = end;
    }
    Ok(columns)
}

/// The `M` (message) field of an `ErrorResponse`, with its `C` (SQLSTATE) code.
fn error_message(body: &[u8]) -> String {
    let mut message = String::new();
    let mut code = String::new();
    for field in body.split(|byte| *byte == 0) {
        match field.split_first() {
            Some((b'M', text)) => message = String::from_utf8_lossy(text).into_owned(),
            Some((b'C', text)) => code = String::from_utf8_lossy(text).into_owned(),
            _ => {}
        }
    }
    format!("{message} (SQLSTATE {code})")
}

#[cfg(test)]
mod tests {
    use super::Url;

    #[test]
    fn urls_name_user_host_port_and_database() {
        let url = Url::parse("postgres://root@127.0.0.1:5432/test").expect("valid");
        assert_eq!(
            (url.user.as_str(), url.host.as_str(), url.port, url.database.as_str()),
            ("root", "127.0.0.1", 5432, "test")
        );
        assert_eq!(Url::parse("postgresql://me@db/ledger").expect("valid").port, 5432);
        for bad in [
            "mysql://root@h/db",
            "postgres://h:5432/db",
            "postgres://a:secret@h/db",
            "postgres://a@h:x/db",
            "postgres://a@h",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad} is refused");
        }
    }
}
