//! tally-client: the Rust client a gateway uses to talk to a Tally node.
//!
//! ```no_run
//! use tally_client::Client;
//! use tally_codecs::{Account, Transfer};
//!
//! let client = Client::connect(&["127.0.0.1:3000".parse().unwrap()]).unwrap();
//! let accounts = [1, 2].map(|id| Account { id, ledger: 1, code: 1, ..Account::default() });
//! let results = client.create_accounts(&accounts).unwrap();
//! let transfer = Transfer { id: 10, debit_account_id: 1, credit_account_id: 2, amount: 5, ledger: 1, code: 1, ..Transfer::default() };
//! let results = client.create_transfers(&[transfer]).unwrap();
//! ```
//!
//! - A `Client` is `Clone`, `Send` and `Sync`. Calls from many threads at once are
//!   batched automatically: one request per operation, up to 8 189 events, sent whenever
//!   a request slot is free; each caller gets its own results back. A merged request
//!   the node refuses `forbidden` (a key limited to some ledgers, and one caller's event
//!   on another) is sent again as each caller's share alone, ids unchanged, so that only
//!   the callers whose own events are out of scope get `Rejected(forbidden)`.
//! - Every call blocks until its reply. A request that is not answered within
//!   `request_timeout`, or whose connection drops, is sent again unchanged on a new
//!   connection, going through the node addresses; a node that answers `not_primary`
//!   and names the primary (protocol version 2) sends the client there, even to an address
//!   not in its list (at most `REDIRECT_HOPS_MAX` redirects in a row, then a pause); one
//!   that names none sends it on to the next address. Until a node answers a request, each
//!   new connection waits longer (20 ms, doubling up to 1 s). After `give_up_after`, the
//!   call fails with [`ClientError::Timeout`].
//! - A node that refuses a frame itself (a protocol version it does not speak, a frame too
//!   large or malformed) answers with request id 0 and closes: the calls written on that
//!   connection fail at once with `Rejected(code)` instead of being retried.
//! - With [`ClientConfig::key`] set, every connection first proves the key to the node
//!   (protocol version 3, `wire::auth`); the key never crosses the wire. A node that
//!   refuses the first connection's proof fails `connect` with
//!   `Rejected(unauthenticated)`.
//! - With [`ClientConfig::tls`] set ([`TlsClientConfig::from_files`]: the CA to trust and,
//!   for a node with `--tls-client-ca`, a client certificate), every connection is TLS
//!   (rustls, `ring`), handshaken before the key handshake. A node whose certificate does
//!   not verify fails `connect` with [`ClientError::Tls`]; a node that refuses this
//!   client's certificate ends the session with an alert, which fails the calls in
//!   flight with `Tls` too.
//! - Retrying is safe because ids are idempotency keys: an event that was applied by an
//!   earlier attempt answers `exists` (for a retry with the same body) instead of
//!   `created`. **Treat `exists` as success** when retrying your own events.

mod batch;
mod batcher;
pub mod config;
mod connection;
mod error;
mod key;
mod refusal;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam::channel::{Sender, bounded, unbounded};
use tally_codecs::wire::{EVENTS_PER_REQUEST_MAX, NodeStatus, Reply, Request};
use tally_codecs::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Transfer};

use self::batch::{Answer, Call, Caller};
pub use self::batcher::REDIRECT_HOPS_MAX;
use self::batcher::{Batcher, Event};
pub use self::config::ClientConfig;
pub use self::connection::open_stream;
pub use self::error::ClientError;
pub use self::key::{ClientKey, KEY_ENV};
pub use self::tls::TlsClientConfig;

/// A connection to a Tally node, shared by any number of threads.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    events: Sender<Event>,
    batcher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Stop);
        let batcher = self.batcher.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(batcher) = batcher {
            let _ = batcher.join();
        }
    }
}

impl Client {
    /// Connects to the first of `addresses` that answers, with the default settings.
    pub fn connect(addresses: &[SocketAddr]) -> Result<Client, ClientError> {
        Client::with_config(ClientConfig::new(addresses))
    }

    /// Connects with explicit settings; durations and `in_flight_max` are brought within
    /// their bounds.
    pub fn with_config(config: ClientConfig) -> Result<Client, ClientError> {
        if config.addresses.is_empty() {
            return Err(ClientError::NoAddresses);
        }
        let config = config.clamped();
        let (events, received) = unbounded();
        let mut batcher = Batcher::new(config, received, events.clone());
        batcher.connect_first()?;
        let thread = std::thread::Builder::new()
            .name("tally-client batcher".into())
            .spawn(move || batcher.run())
            .map_err(|error| ClientError::Protocol(format!("cannot start the batcher thread: {error}")))?;
        Ok(Client { shared: Arc::new(Shared { events, batcher: Mutex::new(Some(thread)) }) })
    }

    /// One result per account, in order.
    pub fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<EventResult>, ClientError> {
        match self.execute(Request::CreateAccounts(accounts.to_vec()))? {
            Reply::CreateAccounts(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// One result per transfer, in order.
    pub fn create_transfers(&self, transfers: &[Transfer]) -> Result<Vec<EventResult>, ClientError> {
        match self.execute(Request::CreateTransfers(transfers.to_vec()))? {
            Reply::CreateTransfers(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// One result per profile, in order.
    pub fn upsert_limit_profiles(&self, profiles: &[LimitProfile]) -> Result<Vec<EventResult>, ClientError> {
        match self.execute(Request::UpsertLimitProfiles(profiles.to_vec()))? {
            Reply::UpsertLimitProfiles(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    /// The accounts found, in the order asked; ids that do not exist are left out.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>, ClientError> {
        match self.execute(Request::LookupAccounts(ids.to_vec()))? {
            Reply::LookupAccounts(accounts) => Ok(accounts),
            other => Err(unexpected(&other)),
        }
    }

    /// The transfers found, in the order asked; ids that do not exist are left out.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>, ClientError> {
        match self.execute(Request::LookupTransfers(ids.to_vec()))? {
            Reply::LookupTransfers(transfers) => Ok(transfers),
            other => Err(unexpected(&other)),
        }
    }

    pub fn get_account_transfers(&self, filter: AccountFilter) -> Result<Vec<Transfer>, ClientError> {
        match self.execute(Request::GetAccountTransfers(filter))? {
            Reply::GetAccountTransfers(transfers) => Ok(transfers),
            other => Err(unexpected(&other)),
        }
    }

    pub fn get_account_balances(&self, filter: AccountFilter) -> Result<Vec<AccountBalance>, ClientError> {
        match self.execute(Request::GetAccountBalances(filter))? {
            Reply::GetAccountBalances(balances) => Ok(balances),
            other => Err(unexpected(&other)),
        }
    }

    /// Any request, as `tally client` sends the JSON lines it reads.
    pub fn execute(&self, request: Request) -> Result<Reply, ClientError> {
        let count = batch::events(&request);
        if count > EVENTS_PER_REQUEST_MAX {
            return Err(ClientError::TooManyEvents { count, max: EVENTS_PER_REQUEST_MAX });
        }
        match self.call(Call::Request(request))? {
            Answer::Reply(reply) => Ok(reply),
            Answer::Status(_) => Err(ClientError::Protocol("a status reply to a ledger request".to_owned())),
        }
    }

    /// The node's status (role, sequences, throughput, state hash).
    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        match self.call(Call::Status)? {
            Answer::Status(status) => Ok(status),
            Answer::Reply(reply) => Err(unexpected(&reply)),
        }
    }

    fn call(&self, call: Call) -> Result<Answer, ClientError> {
        let (waiter, answer) = bounded(1);
        let caller = Caller { call, waiter, since: std::time::Instant::now(), alone: false };
        self.shared.events.send(Event::Call(caller)).map_err(|_| ClientError::Closed)?;
        answer.recv().map_err(|_| ClientError::Closed)?
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected {} reply", reply.operation().name()))
}
