//! The `tally` command line.
//!
//! ```text
//! tally serve   --data DIR [--listen ADDR] [--durability none|local|replicated:K|local+replicated:K]
//!               [--wait busy-spin|parking] [--cluster ADDR,… --cluster-id ID --cluster-secret-file FILE]
//!               [--keys FILE | --insecure] [--auth-timeout-ms MS] [--idle-timeout-s S]
//!               [--gateway-memory-mib MIB] [--max-connections N]
//!               [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
//! tally standby --data DIR --listen ADDR --primary ADDR[,ADDR…] --cluster-secret-file FILE [--cluster …]
//! tally promote --addr ADDR [--force] [--timeout-ms MS]
//! tally exec    --data DIR [--durability none|local] [--wait busy-spin|parking]
//! tally client  --addr ADDR[,ADDR…] [--connect-timeout-ms MS] [--key-file FILE]   (or TALLY_KEY)
//!               [--tls-ca PEM [--tls-cert PEM --tls-key PEM] [--tls-server-name NAME]]
//! tally status  --addr ADDR[,ADDR…] (the same connection flags as client)
//! tally journal verify DIR
//! tally journal dump DIR [--from SEQ] [--count N]
//! tally journal truncate DIR --at SEQ [--yes]
//! tally drill   [--rounds N] [--durability POLICY] [--data-root DIR] [--json FILE]
//!               [--transfers-per-round N] [--seed S]
//! tally bench   [--mode throughput|latency] [--rate R,…] [--accounts N] [--batch B] …
//!               [--addr ADDR] [--standbys N] [--baseline postgres] [--out DIR] [--json]
//! tally bench   --compare A.json B.json
//! tally reconcile --pg URL [--schema S] --addr ADDR[,ADDR…] [--catch-up-s S]
//! ```
//!
//! Exit codes: 0 success, 1 a failure while running (for `exec` and `client`: a request
//! that could not be executed, or a closed stdout; for `reconcile`: mismatches), 2 bad
//! arguments or configuration, 3 (`reconcile`) the comparison could not be made.

mod bench;
mod drill;
mod journal_tools;
mod line_reader;
mod lines;
mod reconcile;
mod replica;
mod sim;
mod sink_args;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tally_client::{Client, ClientConfig, ClientError};
use tally_codecs::wire::NodeStatus;
use tally_engine::pipeline::{Durability, Wait};

use crate::admin::{self, AdminServer, Attached};
use crate::error::NodeError;
use crate::gateway;
use crate::history::HistoryCheck;
use crate::logging::{self, LogFormat};
use crate::metrics::MetricsSource;
use crate::node::{Node, NodeConfig};
use crate::signals;

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: an in-memory double-entry ledger engine")]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
    /// How log events are written to stderr: `text` lines (`tally: message key=value`) or
    /// `json`, one object per line (some replication and recovery messages stay plain
    /// text lines; see the README).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "text|json")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Run a primary node: recover the data directory, then serve clients over TCP.
    Serve(Box<ServeArgs>),
    /// Run a hot standby: follow a primary's journal, apply it, refuse requests.
    Standby(Box<replica::StandbyArgs>),
    /// Ask a standby to become primary (epoch + 1) under the promotion rule.
    Promote(replica::PromoteArgs),
    /// Run the pipeline in this process over a data directory, with no network: JSON
    /// requests on stdin, one per line; one JSON reply per line on stdout.
    Exec(NodeArgs),
    /// Send JSON request lines to a running node; a prompt when stdin is a terminal.
    Client(AddressArgs),
    /// Print a node's role, epoch, sequences, throughput, state hash and primary.
    Status(StatusArgs),
    /// Operator tools for a node's journal (run them while no node has it open).
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Empty a replica's data directory (an unrepairable journal, a replaced disk) so that
    /// it starts again from its primary as `tally standby`: the epoch is kept, and the node
    /// is marked recovering (no promise, no promotion) until it has caught up. Without
    /// `--yes` it only shows what would be removed.
    Rebuild(RebuildArgs),
    /// Rehearse failover on this machine: a primary and two standbys as child processes,
    /// SIGKILL of the primary under load, promotion, and checks an auditor can read.
    Drill(drill::DrillArgs),
    /// Measure a node: throughput (closed loop) or latency (open loop at fixed rates), with
    /// a report directory (Markdown, .hgrm, SVG charts, JSON) and an optional PostgreSQL
    /// baseline; `--compare A.json B.json` puts two runs side by side.
    Bench(Box<bench::BenchArgs>),
    /// Compare every account's balances in the engine with the settlement tables in
    /// PostgreSQL (its balances row and the sum of its postings); print each mismatch.
    /// Exit 0 clean, 1 mismatches, 2 bad arguments, 3 could not compare.
    Reconcile(reconcile::ReconcileArgs),
    /// Deterministic simulation of a replica set (one thread, virtual clock, seeded
    /// faults): run `--seeds N` from `--seed S`, or replay `--seed S` exactly.
    Sim(sim::SimArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// The node's data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// When a reply may be sent: `local` once the input is flushed to disk, `none` once it
    /// is in the page cache (lost on a machine crash, not on a process crash).
    #[arg(long, default_value = "local", value_name = "none|local|replicated:K|local+replicated:K")]
    durability: Durability,
    /// How idle pipeline threads wait: `parking` (near 0 % CPU when idle) or `busy-spin`
    /// (lowest latency, one core per stage).
    #[arg(long, default_value = "parking", value_name = "busy-spin|parking")]
    wait: Wait,
    /// How often the node checks whether a pending transfer's timeout has passed; only
    /// then does it journal a tick that expires it.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    tick_interval_ms: u64,
    /// How often a checkpoint is taken (0: never; a clean `exec` exit still writes one). The
    /// business logic pauses for a copy of its state (docs/design.md §5).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    snapshot_interval_s: u64,
    /// With periodic checkpoints on, also take one once this many events (accounts,
    /// transfers, profiles) were applied since the last (0: by time only). It bounds the
    /// journal a restart after a crash replays at full speed.
    #[arg(long, default_value_t = crate::node::SNAPSHOT_AFTER_EVENTS_DEFAULT, value_name = "EVENTS")]
    snapshot_after_events: u64,
    /// Size of each new journal segment file in MiB, allocated in full when it is created
    /// (existing segments keep their size). The disk needs this much free at each roll-over.
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(4..=65536))]
    journal_segment_mib: u64,
    /// The hot window's bound in inputs: what an input commits stays in memory until this
    /// many later inputs are applied (or the events bound is reached first), then is read
    /// from the history store (DIR/history/).
    #[arg(long, default_value_t = tally_engine::HOT_WINDOW_DEFAULT, value_name = "INPUTS",
          value_parser = clap::value_parser!(u64).range(1..))]
    hot_window: u64,
    /// The hot window's bound in transfer events: what an input commits leaves memory once
    /// the inputs after it carry more than this many (at least 32 756, four full
    /// requests). Memory for recent transfers is at most about E × 170 bytes.
    #[arg(long, default_value_t = tally_engine::HOT_WINDOW_EVENTS_DEFAULT, value_name = "EVENTS",
          value_parser = clap::value_parser!(u64).range(tally_engine::HOT_WINDOW_EVENTS_MIN..))]
    hot_window_events: u64,
    /// How the history store (DIR/history/) is checked at start: `on-open` verifies every
    /// page's checksum (reads the whole file, about 1 s per GiB of store on this machine)
    /// and refuses a store that rotted on disk, since redb does not verify on an ordinary
    /// read and a damaged page could hide a transfer id from a retry; `off` trusts the file
    /// (starts in milliseconds however large the store).
    #[arg(long, default_value = "on-open", value_name = "on-open|off")]
    history_check: HistoryCheck,
    /// Bytes of file data per checkpoint chunk sent to a standby, and the largest chunk
    /// accepted from a primary: the only part of a checkpoint held in memory. A test knob
    /// (hidden); every node of a replica set must use the same value.
    #[arg(long, hide = true, default_value_t = tally_replication::checkpoint::CHUNK_BYTES as u64, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(tally_replication::checkpoint::CHUNK_BYTES_MIN as u64..=tally_replication::checkpoint::CHUNK_BYTES_MAX as u64))]
    checkpoint_chunk_bytes: u64,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The address to listen on; loopback by default.
    #[arg(long, default_value = gateway::LISTEN_DEFAULT, value_name = "ADDR")]
    listen: SocketAddr,
    #[command(flatten)]
    cluster: replica::ClusterArgs,
    /// If start-up finds damaged journal records with intact ones after them (flushed,
    /// perhaps acknowledged), fetch exactly those from these peers (tried in order, over
    /// the authenticated peer port: needs --cluster-secret-file) and write them in place
    /// if they match the hash chain on both sides. Without it such a node refuses to start.
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',')]
    repair_from: Vec<SocketAddr>,
    /// Serve a replica set member's data directory (epoch above 0) without its replica
    /// set: no fence check, no standbys. Only once the other nodes are gone for good: if
    /// one was promoted meanwhile, two primaries acknowledge. Without it such a directory
    /// needs the cluster flags.
    #[arg(long)]
    alone: bool,
    #[command(flatten)]
    sinks: sink_args::SinkArgs,
    /// The admin HTTP listener: Prometheus metrics at /metrics, liveness at /health,
    /// readiness at /ready. `HOST:PORT`, or a bare `PORT` for loopback (127.0.0.1:PORT);
    /// off by default. `--metrics` is the same flag.
    #[arg(long, alias = "metrics", value_name = "ADDR|PORT", value_parser = admin::parse_address)]
    admin: Option<SocketAddr>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

/// Who may connect to the client port, and what the gateway may hold.
#[derive(Args)]
pub(super) struct GatewayArgs {
    /// Client keys (one `CLIENT_ID KEY_ID SECRET [read-only] [ledgers=…] [expires=…]` per
    /// line): every connection must prove one before its first request. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Listen beyond loopback without --keys: anyone who can reach the port can move money.
    #[arg(long)]
    insecure: bool,
    /// How long a new connection has to complete the key handshake.
    #[arg(long, default_value_t = 5000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    auth_timeout_ms: u64,
    /// Close a connection that sends nothing for this long while it is owed no reply.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_s: u64,
    /// Bytes of requests and replies the gateway may hold, all connections together; a
    /// connection that would pass it stops being read until replies are written.
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(4..=1_048_576))]
    gateway_memory_mib: u64,
    /// Connections served at once; more are closed at once (16 more are kept for
    /// replication peers).
    #[arg(long, default_value_t = gateway::CONNECTIONS_MAX as u64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_connections: u64,
    /// Serve clients (and the admin listener) over TLS with this PEM certificate chain;
    /// plain client connections are then refused. Replication peers stay plain (HMAC).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: a client must show a certificate signed by a CA in this PEM file.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// How the start-up line describes TLS.
pub(super) fn tls_summary(tls: Option<&crate::tls::TlsServer>) -> &'static str {
    match tls {
        None => "off",
        Some(tls) if tls.mutual => "on, client certificates required",
        Some(_) => "on",
    }
}

impl GatewayArgs {
    /// The TLS configuration, read now so that a bad file stops start-up (exit 2).
    pub(super) fn tls(&self) -> Result<Option<crate::tls::TlsServer>, CliError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        crate::tls::TlsServer::load(cert, key, self.tls_client_ca.as_deref()).map(Some).map_err(CliError::Usage)
    }

    /// The gateway's configuration, client TLS included; a bad keys or PEM file stops
    /// start-up (exit 2). Also returns the TLS set-up for the admin listener and the log.
    pub(super) fn gateway(
        &self,
        listen: SocketAddr,
    ) -> Result<(std::sync::Arc<gateway::GatewayConfig>, Option<crate::tls::TlsServer>), CliError> {
        let tls = self.tls()?;
        let config =
            gateway::GatewayConfig { tls: tls.as_ref().map(|tls| tls.clients.clone()), ..self.config(listen)? };
        Ok((std::sync::Arc::new(config), tls))
    }

    fn config(&self, listen: SocketAddr) -> Result<gateway::GatewayConfig, CliError> {
        if self.keys.is_none() && !self.insecure && !listen.ip().is_loopback() {
            return Err(CliError::Usage(format!(
                "{listen} is reachable beyond this machine and no --keys were given: anyone who can reach it \
                 could move money. Give --keys FILE, or --insecure to serve without authentication"
            )));
        }
        let keys = self.keys.as_deref().map(crate::auth::Keys::load).transpose().map_err(CliError::Usage)?;
        let memory_bytes = usize::try_from(self.gateway_memory_mib << 20).unwrap_or(usize::MAX);
        Ok(gateway::GatewayConfig {
            keys: keys.map(std::sync::Arc::new),
            // At most 1 048 576 by the argument's range: fits any usize.
            connections_max: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            auth_timeout: Duration::from_millis(self.auth_timeout_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            budget: std::sync::Arc::new(gateway::memory_budget(memory_bytes)),
            ..gateway::GatewayConfig::new()
        })
    }
}

#[derive(Args)]
struct AddressArgs {
    /// Node addresses, tried in order.
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',', required = true)]
    addr: Vec<SocketAddr>,
    /// How long to keep trying to connect when no node accepts; then the request fails.
    #[arg(long, default_value_t = CONNECT_TIMEOUT_MS_DEFAULT, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout_ms: u64,
    #[command(flatten)]
    security: SecurityArgs,
}

/// How a command-line client proves itself to a node and protects the connection.
#[derive(Args)]
pub(super) struct SecurityArgs {
    /// A file whose first line is this client's key (`CLIENT_ID KEY_ID SECRET`), for a
    /// node with --keys. Without it, the environment variable TALLY_KEY may hold the line.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Connect with TLS, trusting the CA certificates in this PEM file (a node with
    /// --tls-cert). The node's certificate must name its address (an IP SAN) unless
    /// --tls-server-name says otherwise.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// The client certificate chain to show a node with --tls-client-ca.
    #[arg(long, value_name = "PEM", requires = "tls_ca", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name (DNS name or IP address) the node's certificate must carry.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

/// A person or a script at the command line wants a dead node reported quickly.
const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 1000;

impl AddressArgs {
    fn connect(&self) -> Result<Client, CliError> {
        let connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        let config = ClientConfig {
            connect_timeout,
            unreachable_after: connect_timeout,
            key: self.security.key()?,
            tls: self.security.tls()?,
            ..ClientConfig::new(&self.addr)
        };
        Ok(Client::with_config(config)?)
    }
}

impl SecurityArgs {
    /// The key from --key-file, else from the environment variable, else none.
    pub(super) fn key(&self) -> Result<Option<tally_client::ClientKey>, CliError> {
        match (&self.key_file, std::env::var(tally_client::KEY_ENV)) {
            (Some(path), _) => Ok(Some(tally_client::ClientKey::from_file(path).map_err(CliError::Usage)?)),
            (None, Ok(line)) => Ok(Some(
                tally_client::ClientKey::parse(&line)
                    .map(|(key, _)| key)
                    .map_err(|error| CliError::Usage(format!("{}: {error}", tally_client::KEY_ENV)))?,
            )),
            (None, Err(std::env::VarError::NotPresent)) => Ok(None),
            (None, Err(std::env::VarError::NotUnicode(_))) => {
                Err(CliError::Usage(format!("{} is not valid UTF-8", tally_client::KEY_ENV)))
            }
        }
    }

    pub(super) fn tls(&self) -> Result<Option<tally_client::TlsClientConfig>, CliError> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let mut tls = tally_client::TlsClientConfig::from_files(ca, identity).map_err(CliError::Usage)?;
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name).map_err(CliError::Usage)?;
        }
        Ok(Some(tls))
    }
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    address: AddressArgs,
    /// One JSON object: role, epoch, last_sequence, durable_sequence, applied_sequence,
    /// state_hash (hex) and primary (null when unknown).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RebuildArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The epoch to keep: required when DIR holds no epoch file (a replaced disk), and
    /// then the highest epoch `tally status` reports on the replica set's live nodes.
    #[arg(long, value_name = "E")]
    epoch: Option<u32>,
    /// Really remove the journal, snapshots, history store and outcome stream.
    #[arg(long)]
    yes: bool,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check the journal as start-up would (every record, checksums, chain, sequence, durable
    /// mark, manifest, snapshot coverage); exit 0 only when start-up would accept it.
    Verify {
        /// A node's data directory (or its journal directory).
        dir: PathBuf,
    },
    /// Print records as JSON lines: sequence, epoch, timestamp, operation and events.
    Dump {
        /// A node's data directory (or its journal directory).
        dir: PathBuf,
        /// The first sequence to print.
        #[arg(long, default_value_t = 1, value_name = "SEQ")]
        from: u64,
        /// Print at most this many records.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Keep records up to SEQ and discard every later one, damaged or not. Without `--yes`
    /// it only shows what would be discarded.
    Truncate {
        /// A node's data directory (or its journal directory).
        dir: PathBuf,
        /// The last sequence to keep.
        #[arg(long, value_name = "SEQ")]
        at: u64,
        /// Really discard the records after SEQ.
        #[arg(long)]
        yes: bool,
    },
}

/// Why a command failed; the exit code follows from the variant.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or configuration: exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Journal(#[from] tally_journal::JournalError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
    /// A check could not be carried out (an unreachable service, no quiet point): exit 3.
    #[error("{0}")]
    Unverified(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Node(NodeError::DataDir { .. } | NodeError::Locked { .. } | NodeError::Rebuild(_)) => 2,
            CliError::Unverified(_) => 3,
            _ => 1,
        }
    }
}

/// Parses `args` (the program name first) and runs the command.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    logging::init(cli.log_format);
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`tally journal dump DIR | head`) is the reader's choice, not a failure.
        Err(CliError::Io(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            crate::errln!("tally: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn execute(command: CliCommand) -> Result<(), CliError> {
    match command {
        CliCommand::Serve(args) => serve(&args),
        CliCommand::Standby(args) => replica::standby(&args),
        CliCommand::Promote(args) => replica::promote(&args),
        CliCommand::Exec(args) => exec(&args),
        CliCommand::Client(args) => client(&args),
        CliCommand::Status(args) => status(&args),
        CliCommand::Journal(JournalCommand::Verify { dir }) => journal_tools::verify(&dir),
        CliCommand::Journal(JournalCommand::Dump { dir, from, count }) => {
            journal_tools::dump(&dir, from, count, &mut std::io::stdout().lock())
        }
        CliCommand::Journal(JournalCommand::Truncate { dir, at, yes }) => journal_tools::truncate(&dir, at, yes),
        CliCommand::Rebuild(args) => rebuild(&args),
        CliCommand::Drill(args) => drill::drill(&args),
        CliCommand::Bench(args) => bench::bench(&args),
        CliCommand::Reconcile(args) => reconcile::reconcile(&args),
        CliCommand::Sim(args) => sim::sim(&args),
    }
}

/// `tally serve` without the cluster flags over a replica set member's directory (epoch
/// above 0, or not a primary): without them no fence check runs, and a primary whose
/// standby was promoted meanwhile would acknowledge beside the new one.
fn refuse_a_replica_set_member(data: &std::path::Path) -> Result<(), CliError> {
    use crate::node::role::{EPOCH_FILE, Role, RoleKind};
    if !data.join(EPOCH_FILE).exists() {
        return Ok(());
    }
    let role = Role::load(data)?;
    if role.epoch() == 0 && role.kind() == RoleKind::Primary {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "{} belongs to a replica set (epoch {}, {}): start it with --cluster, --cluster-id and \
         --cluster-secret-file, or with --alone if the other nodes are gone for good",
        data.display(),
        role.epoch(),
        role.kind().name()
    )))
}

/// `tally exec` runs a primary alone; a standby's or a fenced node's directory is not one.
/// Opened there, a standby's log took writes that its next start cut as a divergent
/// suffix (acknowledged, then lost), and a fenced node's halted gate held the first write
/// for ever.
fn refuse_a_replicas_directory(data: &std::path::Path) -> Result<(), CliError> {
    use crate::node::role::{EPOCH_FILE, Role, RoleKind};
    if !data.join(EPOCH_FILE).exists() {
        return Ok(());
    }
    let role = Role::load(data)?;
    let kind = match role.kind() {
        RoleKind::Primary => return Ok(()),
        RoleKind::Standby => "a standby's",
        RoleKind::Fenced => "a fenced primary's",
    };
    Err(CliError::Usage(format!(
        "{} is {kind} data directory (epoch {}): `tally exec` runs a primary alone; start it with `tally standby`, or promote it",
        data.display(),
        role.epoch()
    )))
}

fn node_config(args: &NodeArgs) -> NodeConfig {
    NodeConfig {
        durability: args.durability,
        wait: args.wait,
        tick_interval: Duration::from_millis(args.tick_interval_ms),
        snapshot_interval: (args.snapshot_interval_s > 0).then(|| Duration::from_secs(args.snapshot_interval_s)),
        snapshot_after_events: args.snapshot_after_events,
        // At most 65 536 MiB by the argument's range: fits any 64-bit usize.
        journal_segment_bytes: usize::try_from(args.journal_segment_mib << 20).unwrap_or(usize::MAX),
        hot_window: args.hot_window,
        hot_window_events: args.hot_window_events,
        history_check: args.history_check,
        // At most CHUNK_BYTES_MAX by the argument's range.
        checkpoint_chunk_bytes: usize::try_from(args.checkpoint_chunk_bytes)
            .unwrap_or(tally_replication::checkpoint::CHUNK_BYTES),
        ..NodeConfig::new(&args.data)
    }
}

fn open_node(config: &NodeConfig) -> Result<Node, CliError> {
    if config.durability.replicas() > 0 && config.replication.is_none() {
        return Err(CliError::Usage(format!(
            "durability {} waits for standbys, and this node has none: use none or local",
            config.durability
        )));
    }
    let started = std::time::Instant::now();
    let node = Node::open(config)?;
    let recovery = node.recovery();
    let from = match recovery.snapshot_sequence {
        0 => "the journal".to_owned(),
        sequence => format!("the snapshot at sequence {sequence} and the journal after it"),
    };
    tracing::info!(
        records_replayed = recovery.records_replayed,
        history_reads = recovery.history_reads,
        seconds = started.elapsed().as_secs_f64(),
        last_sequence = recovery.last_sequence,
        state_hash = %format_args!("{:#034x}", recovery.state_hash),
        "recovered from {from}"
    );
    Ok(node)
}

fn serve(args: &ServeArgs) -> Result<(), CliError> {
    // First: a SIGHUP (keys rotated) during a long recovery would otherwise end the node.
    // It is held until the node serves; the gateway's first turn then reloads the keys.
    signals::hold_reload()?;
    let (gateway_config, tls) = args.gateway.gateway(args.listen)?;
    // Bound before recovery, so that a taken port fails at once rather than after a replay.
    let listener = TcpListener::bind(args.listen)
        .map_err(|error| CliError::Usage(format!("cannot listen on {}: {error}", args.listen)))?;
    let replication = args.cluster.replication(args.listen, args.node.durability)?;
    if !args.repair_from.is_empty() && replication.is_none() {
        return Err(CliError::Usage(
            "--repair-from fetches from peers of the replica set: it needs --cluster-secret-file".into(),
        ));
    }
    let node_config = args
        .sinks
        .apply(NodeConfig { replication, repair_from: args.repair_from.clone(), ..node_config(&args.node) }, true)
        .map_err(CliError::Usage)?;
    // Before recovery: probes see a live node that is not ready yet during a long replay.
    let admin = start_admin(args.admin, tls.as_ref().map(|tls| tls.admin.clone()))?;
    let address = listener.local_addr()?;
    match &node_config.replication {
        Some(replication) => replica::fence_if_replaced(&node_config.data_dir, replication, args.listen)?,
        None if !args.alone => refuse_a_replica_set_member(&node_config.data_dir)?,
        None => {}
    }
    let node = open_node(&node_config)?;
    if node.peers().role.kind() == crate::node::role::RoleKind::Primary {
        node.peers().role.set_primary(Some(address));
    }
    signals::install()?;
    let auth = auth_summary(&gateway_config);
    let status = std::sync::Arc::new(std::sync::RwLock::new(node.status()));
    let metrics = MetricsSource::of(&node, status.clone());
    tracing::info!(
        durability = %args.node.durability,
        wait = %args.node.wait,
        role = node.peers().role.kind().name(),
        epoch = node.peers().role.epoch(),
        auth = %auth,
        tls = tls_summary(tls.as_ref()),
        "listening on {address}"
    );
    let Some(replication) = node_config.replication.clone() else {
        if let Some(admin) = &admin {
            admin.attach(Attached { metrics, readiness: admin::primary_readiness(node.peers().role) });
        }
        let frontend = gateway::Frontend { status, peers: node.peers() };
        // A SIGHUP held during recovery is delivered now; the gateway's first turn reloads.
        signals::release_reload()?;
        gateway::serve_with(&listener, &frontend, gateway_config, signals::stop_requested)?;
        drop(admin);
        // Where requests spent their time, stage by stage; `tally-load` reads these lines.
        for line in node.submitter().stats().stage_latencies().describe() {
            crate::errln!("tally: stage latency {line}");
        }
        tracing::info!("stopping: applying what was submitted, then writing a snapshot");
        let ledger = node.shutdown();
        tracing::info!(state_hash = %format_args!("{:#034x}", ledger.state_hash()), "stopped cleanly");
        return Ok(());
    };
    // In a replica set the node may be fenced and then rejoin as a standby while it runs.
    let promoter =
        replica::fenced_primary_rejoins(node, node_config, replication, address, status.clone(), Some(metrics.clone()));
    if let Some(admin) = &admin {
        admin.attach(Attached { metrics, readiness: admin::promoter_readiness(promoter.clone()) });
    }
    let frontend = gateway::Frontend { status, peers: promoter.peers() };
    signals::release_reload()?;
    gateway::serve_with(&listener, &frontend, gateway_config, signals::stop_requested)?;
    drop(admin);
    tracing::info!("stopping");
    replica::stop(&promoter);
    Ok(())
}

/// How the start-up line describes client authentication.
pub(super) fn auth_summary(config: &gateway::GatewayConfig) -> String {
    config
        .keys
        .as_ref()
        .map_or_else(|| "no client keys".to_owned(), |keys| format!("{} client keys", keys.current().len()))
}

/// Binds the admin listener, if asked for; a taken port is a usage error.
fn start_admin(
    address: Option<SocketAddr>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> Result<Option<AdminServer>, CliError> {
    let Some(address) = address else { return Ok(None) };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let admin = AdminServer::start(address, tls)
        .map_err(|error| CliError::Usage(format!("cannot serve the admin listener on {address}: {error}")))?;
    tracing::info!("admin at {scheme}://{}/ (metrics, health, ready)", admin.address);
    Ok(Some(admin))
}

fn exec(args: &NodeArgs) -> Result<(), CliError> {
    refuse_a_replicas_directory(&args.data)?;
    let node = open_node(&node_config(args))?;
    let submitter = node.submitter();
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let conversation = lines::converse(stdin.lock(), std::io::stdout().lock(), interactive, |request| {
        submitter.execute(request).map_err(|error| error.to_string())
    });
    // Everything submitted was answered; this stops the threads and closes the journal.
    node.shutdown();
    finished(conversation)
}

fn client(args: &AddressArgs) -> Result<(), CliError> {
    let client = args.connect()?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let conversation = lines::converse(stdin.lock(), std::io::stdout().lock(), interactive, |request| {
        client.execute(request).map_err(|error| error.to_string())
    });
    finished(conversation)
}

/// The exit of a conversation: a failure when any request could not be executed or the
/// replies could not be written.
fn finished(conversation: Result<lines::Conversation, lines::ConverseError>) -> Result<(), CliError> {
    let conversation = conversation.map_err(|error| CliError::Failed(error.to_string()))?;
    if conversation.failed > 0 {
        let total = conversation.failed + conversation.applied;
        return Err(CliError::Failed(format!(
            "{} of {total} requests failed (see their error replies)",
            conversation.failed
        )));
    }
    Ok(())
}

fn rebuild(args: &RebuildArgs) -> Result<(), CliError> {
    let rebuild = crate::node::rebuild::rebuild(&args.data, args.epoch, args.yes)?;
    let verb = if args.yes { "removed" } else { "would remove (run again with --yes)" };
    crate::outln!("{verb} {} files under {}:", rebuild.files.len(), args.data.display())?;
    for file in &rebuild.files {
        crate::outln!("  {file}")?;
    }
    if args.yes {
        if rebuild.claimed {
            crate::outln!(
                "the node waits for its peers to hold epoch {} before it follows anyone (a higher epoch of theirs is \
                 taken instead); it keeps the epoch it had until then",
                rebuild.epoch
            )?;
        } else {
            crate::outln!("the node holds epoch {}", rebuild.epoch)?;
        }
        crate::outln!(
            "it is marked recovering ({}/RECOVERING): start it with `tally standby`; it promises nothing and is not \
             promoted until it has caught up with a primary",
            args.data.display()
        )?;
    }
    Ok(())
}

fn status(args: &StatusArgs) -> Result<(), CliError> {
    let status = args.address.connect()?.status()?;
    if args.json {
        crate::outln!("{}", status_json(&status))?;
    } else {
        crate::out!("{}", status_text(&status))?;
    }
    Ok(())
}

fn status_json(status: &NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "role": status.role_name(),
        "epoch": status.epoch,
        "last_sequence": status.last_sequence,
        "durable_sequence": status.durable_sequence,
        "applied_sequence": status.applied_sequence,
        "state_hash": format!("{:#034x}", status.state_hash),
        "primary": status.primary().map(|address| address.to_string()),
    })
}

fn status_text(status: &NodeStatus) -> String {
    let uptime_seconds = status.uptime_ns as f64 / 1e9;
    let throughput = if uptime_seconds > 0.0 { status.applied_events as f64 / uptime_seconds } else { 0.0 };
    format!(
        "role: {}\nepoch: {}\nlast_sequence: {}\ndurable_sequence: {}\napplied_sequence: {}\napplied_inputs: {}\n\
         applied_events: {}\nuptime_seconds: {uptime_seconds:.3}\nthroughput_events_per_second: {throughput:.1}\n\
         state_hash: {:#034x}\nprimary: {}\n",
        status.role_name(),
        status.epoch,
        status.last_sequence,
        status.durable_sequence,
        status.applied_sequence,
        status.applied_inputs,
        status.applied_events,
        status.state_hash,
        status.primary().map_or_else(|| "unknown".to_owned(), |address| address.to_string()),
    )
}
