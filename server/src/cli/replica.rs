//! The replica-set side of the command line: cluster flags, `tally standby`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use clap::Args;
use tally_codecs::wire::{Body, Frame, FrameDecoder, Message, PromoteRequest, encode_promote_request};
use tally_engine::pipeline::Durability;
use tally_replication::ClusterKey;

use super::{CliError, NodeArgs, node_config};
use crate::gateway::{self, Frontend};
use crate::metrics::{MetricsParts, MetricsSource};
use crate::node::peers::PeerService;
use crate::node::promote::{NOT_PROMOTABLE, Promoter, Running};
use crate::node::role::{Role, RoleKind};
use crate::node::standby::{Standby, StandbyConfig};
use crate::node::{Node, NodeConfig, ReplicationConfig};
use crate::signals;

#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// Every node of the replica set, this one included (their `--listen` addresses).
    #[arg(long, value_name = "ADDR,ADDR,…", value_delimiter = ',')]
    pub cluster: Vec<SocketAddr>,
    /// The replica set's name; peers of another cluster are refused.
    #[arg(long, default_value = "tally", value_name = "ID")]
    pub cluster_id: String,
    /// A file holding the shared secret (at least 16 bytes; a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

impl ClusterArgs {
    /// The replica set this node belongs to, or `None` when no secret is given.
    pub fn replication(
        &self,
        listen: SocketAddr,
        durability: Durability,
    ) -> Result<Option<ReplicationConfig>, CliError> {
        if let Some(twice) = listed_twice(&self.cluster) {
            return Err(CliError::Usage(format!(
                "--cluster lists {twice} twice: every node once, the same list in the same order on every node"
            )));
        }
        let replicas = usize::from(durability.replicas());
        let Some(path) = &self.cluster_secret_file else {
            if replicas > 0 || !self.cluster.is_empty() {
                return Err(CliError::Usage("a replica set needs --cluster-secret-file".into()));
            }
            return Ok(None);
        };
        let secret = std::fs::read(path)
            .map_err(|error| CliError::Usage(format!("cannot read the cluster secret {}: {error}", path.display())))?;
        let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
        let key = ClusterKey::new(&self.cluster_id, secret).map_err(|error| CliError::Usage(error.to_string()))?;
        if !self.cluster.is_empty() && !self.cluster.contains(&listen) {
            return Err(CliError::Usage(format!("--cluster must list this node's own address {listen}")));
        }
        if replicas > 0 && replicas + 1 > self.cluster.len() {
            return Err(CliError::Usage(format!(
                "durability {durability} needs {replicas} standbys: --cluster lists {} nodes in all",
                self.cluster.len()
            )));
        }
        Ok(Some(ReplicationConfig { key, cluster: self.cluster.clone() }))
    }
}

/// An address that `addresses` holds more than once.
fn listed_twice(addresses: &[SocketAddr]) -> Option<SocketAddr> {
    addresses
        .iter()
        .enumerate()
        .find(|(index, address)| addresses[..*index].contains(address))
        .map(|(_, address)| *address)
}

/// `tally standby`'s address lists, checked before anything is opened: a node that
/// follows only itself would confirm an epoch without asking anyone, a primary listed twice
/// counts twice among the answers a new node waits for, and the watch asks only the
/// nodes of `--cluster`.
fn check_standby_addresses(args: &StandbyArgs) -> Result<(), CliError> {
    // Its own address may be listed (one list for every node; it is skipped), but not alone.
    if args.primary.iter().all(|primary| *primary == args.listen) {
        return Err(CliError::Usage(format!("--primary names no node but this one ({})", args.listen)));
    }
    if let Some(twice) = listed_twice(&args.primary) {
        return Err(CliError::Usage(format!("--primary lists {twice} twice")));
    }
    if args.auto_promote_after_ms.is_some() {
        if args.cluster.cluster.len() < 2 {
            return Err(CliError::Usage(
                "--auto-promote-after-ms needs --cluster to list the other nodes too: a node alone would promote itself without asking anyone".into(),
            ));
        }
        if let Some(outside) = args.primary.iter().find(|primary| !args.cluster.cluster.contains(primary)) {
            return Err(CliError::Usage(format!(
                "--primary {outside} is not in --cluster: with --auto-promote-after-ms the pre-vote asks only the nodes of --cluster, so that primary could not veto"
            )));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct StandbyArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The address to listen on (clients are told `not_primary`; peers are served).
    #[arg(long, default_value = gateway::LISTEN_DEFAULT, value_name = "ADDR")]
    listen: SocketAddr,
    /// The primary (or the nodes that may be primary), tried in order.
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',', required = true)]
    primary: Vec<SocketAddr>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Ask for promotion (under the same rule as `tally promote`) when no primary was heard
    /// from for MS plus a random part of MS, after a pre-vote: only if N − k nodes would
    /// promise and the serving primary, if reached, does not veto (a peer refuses while it
    /// heard a primary within MS/2, or, running this watch itself, holds a log ahead of
    /// the candidate's). Off by default:
    /// a person usually decides. Keep it at 1 000 or more: a primary sends a heartbeat
    /// after 200 ms of silence, and a peer refuses the pre-vote while it heard one within
    /// MS/2; at least 400. Needs --cluster listing the other nodes and every --primary
    /// (the node's position decides its epochs; the pre-vote asks the nodes listed).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(400..))]
    auto_promote_after_ms: Option<u64>,
    /// Peers besides the primaries to fetch damaged journal records from at start-up (a
    /// standby tries its primaries first); see `tally serve --repair-from`.
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',')]
    repair_from: Vec<SocketAddr>,
    /// The admin HTTP listener (/metrics, /health, /ready); see `tally serve --admin`.
    #[arg(long, alias = "metrics", value_name = "ADDR|PORT", value_parser = crate::admin::parse_address)]
    admin: Option<SocketAddr>,
    /// Client keys, TLS and the gateway's bounds, as for `tally serve`: a standby checks
    /// them on every client connection (a redirect or a lookup, and every write once it is
    /// promoted), so that promotion never opens the port to anyone.
    #[command(flatten)]
    gateway: super::GatewayArgs,
    /// The sinks this node runs once it is promoted (none while it is a standby), as for
    /// `tally serve`, except that no file sink runs unless `--files DIR` names one.
    #[command(flatten)]
    sinks: super::sink_args::SinkArgs,
}

pub fn standby(args: &StandbyArgs) -> Result<(), CliError> {
    // First, as in `serve`: a SIGHUP while the standby opens (journal checks, a checkpoint
    // fetch) is held until it serves; the gateway's first turn then reloads the keys.
    signals::hold_reload()?;
    // Without --cluster this standby follows but owns no epochs: never promoted.
    if args.cluster.cluster.is_empty() && args.auto_promote_after_ms.is_some() {
        return Err(CliError::Usage(format!("--auto-promote-after-ms needs --cluster: {NOT_PROMOTABLE}")));
    }
    check_standby_addresses(args)?;
    let (gateway_config, tls) = args.gateway.gateway(args.listen)?;
    let listener = TcpListener::bind(args.listen)
        .map_err(|error| CliError::Usage(format!("cannot listen on {}: {error}", args.listen)))?;
    let Some(replication) = args.cluster.replication(args.listen, args.node.durability)? else {
        return Err(CliError::Usage("a standby needs --cluster-secret-file".into()));
    };
    let cluster = args.cluster.cluster.clone();
    let node_config = args
        .sinks
        .apply(NodeConfig { replication: Some(replication.clone()), ..node_config(&args.node) }, false)
        .map_err(CliError::Usage)?;
    std::fs::create_dir_all(&node_config.data_dir)
        .map_err(|error| CliError::Usage(format!("cannot create {}: {error}", node_config.data_dir.display())))?;
    let role = Arc::new(Role::load(&node_config.data_dir)?);
    let admin = super::start_admin(args.admin, tls.as_ref().map(|tls| tls.admin.clone()))?;
    let standby_config = StandbyConfig {
        data_dir: node_config.data_dir.clone(),
        node: args.listen,
        primaries: args.primary.clone(),
        key: replication.key.clone(),
        snapshot_interval: node_config.snapshot_interval,
        snapshot_after_events: node_config.snapshot_after_events,
        journal_segment_bytes: node_config.journal_segment_bytes,
        repair_from: args.repair_from.clone(),
        hot_window: node_config.hot_window,
        hot_window_events: node_config.hot_window_events,
        history_check: node_config.history_check,
        checkpoint_chunk_bytes: node_config.checkpoint_chunk_bytes,
        replicas: usize::from(node_config.durability.replicas()),
        acknowledges: !args.cluster.cluster.is_empty(),
        last_heard: crate::node::standby::LastHeard::default(),
        sinks_hold: std::sync::Arc::default(),
    };
    if !standby_config.acknowledges {
        crate::errln!(
            "tally: started without --cluster: this standby follows but does not acknowledge, so it does not count \
             towards a replicated:k policy"
        );
    }
    let mut standby = Standby::open(standby_config.clone(), role.clone(), None)?;
    // Nothing has read its log yet: no peer service runs before this one.
    standby.start_following();
    let status = Arc::new(RwLock::new(standby.status()));
    let metrics = MetricsSource::new(status.clone(), MetricsParts::of_standby(&standby));
    let shipping = Arc::new(RwLock::new(None));
    let log = Arc::new(RwLock::new(standby.log()));
    let promoter = Arc::new(Promoter {
        running: Mutex::new(Running::Standby(standby)),
        node_config,
        standby_config,
        key: replication.key.clone(),
        cluster,
        role: role.clone(),
        status: status.clone(),
        shipping: shipping.clone(),
        log: log.clone(),
        promised_at: Mutex::new(None),
        watching: std::sync::atomic::AtomicBool::new(false),
        metrics: Some(metrics.clone()),
    });
    if let Some(admin) = &admin {
        admin.attach(crate::admin::Attached { metrics, readiness: crate::admin::promoter_readiness(promoter.clone()) });
    }
    signals::install()?;
    if let Some(after_ms) = args.auto_promote_after_ms {
        promoter.watch(Duration::from_millis(after_ms), signals::stop_requested);
    }
    // Once promoted, this node may be fenced in turn: it then rejoins as a standby.
    promoter.rejoin_when_fenced(signals::stop_requested);
    tracing::info!(
        primaries = ?args.primary,
        role = "standby",
        auth = %super::auth_summary(&gateway_config),
        tls = super::tls_summary(tls.as_ref()),
        "standby listening on {}",
        args.listen
    );
    let peers = PeerService { key: Some(replication.key), role, shipping, log, promoter: Some(promoter.clone()) };
    let frontend = Frontend { status, peers };
    // A SIGHUP held while the standby opened is delivered now; the gateway's first turn reloads.
    signals::release_reload()?;
    gateway::serve_with(&listener, &frontend, gateway_config, signals::stop_requested)?;
    drop(admin);
    tracing::info!("stopping");
    stop(&promoter);
    Ok(())
}

/// Before a replica-set member that was primary serves again (`tally serve` over its
/// directory), it asks its peers' epochs: while it was down a promotion may have replaced
/// it (a forced one, which did not need its promise), and it would otherwise serve in its
/// old epoch (under `local` acknowledging alone) until its next question, a second later:
/// writes the new primary never holds, lost when it rejoins. A peer in a newer epoch
/// fences it (persisted): it opens fenced and rejoins as a standby. Peers that do not
/// answer change nothing: a set restarted together has no one to ask yet.
pub fn fence_if_replaced(data_dir: &Path, replication: &ReplicationConfig, me: SocketAddr) -> Result<(), CliError> {
    let role = Role::load(data_dir)?;
    if role.kind() != RoleKind::Primary {
        return Ok(());
    }
    let peers: Vec<SocketAddr> = replication.cluster.iter().copied().filter(|&peer| peer != me).collect();
    let Some((peer, epoch)) = crate::node::rejoin::newer_epoch(&peers, &replication.key, role.epoch()) else {
        return Ok(());
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|error| CliError::Usage(format!("cannot create {}: {error}", data_dir.display())))?;
    role.heard_of(epoch);
    tracing::warn!(
        %peer,
        epoch,
        role = "fenced",
        "FENCED at start: a peer holds a newer epoch than this node's {}; it serves no writes and rejoins as a standby",
        role.epoch()
    );
    role.fence();
    Ok(())
}

/// Stops whatever the process runs now (a standby, or the primary it became) cleanly.
pub fn stop(promoter: &Promoter) {
    let running =
        std::mem::replace(&mut *promoter.running.lock().unwrap_or_else(PoisonError::into_inner), Running::Neither);
    let ledger = match running {
        Running::Standby(standby) => standby.shutdown().0,
        Running::Primary(node) => node.shutdown(),
        Running::Neither => return,
    };
    tracing::info!(state_hash = %format_args!("{:#034x}", ledger.state_hash()), "stopped cleanly");
}

/// `tally serve` in a replica set: the running node under a [`Promoter`], whose watch
/// turns it into a standby of the new primary once it is fenced (no restart needed).
pub fn fenced_primary_rejoins(
    node: Node,
    node_config: NodeConfig,
    replication: ReplicationConfig,
    listen: SocketAddr,
    status: Arc<RwLock<crate::node::StatusSource>>,
    metrics: Option<MetricsSource>,
) -> Arc<Promoter> {
    let peers = node.peers();
    let standby_config = StandbyConfig {
        data_dir: node_config.data_dir.clone(),
        node: listen,
        primaries: replication.cluster.iter().copied().filter(|&peer| peer != listen).collect(),
        key: replication.key.clone(),
        snapshot_interval: node_config.snapshot_interval,
        snapshot_after_events: node_config.snapshot_after_events,
        journal_segment_bytes: node_config.journal_segment_bytes,
        repair_from: node_config.repair_from.clone(),
        hot_window: node_config.hot_window,
        hot_window_events: node_config.hot_window_events,
        history_check: node_config.history_check,
        checkpoint_chunk_bytes: node_config.checkpoint_chunk_bytes,
        replicas: usize::from(node_config.durability.replicas()),
        acknowledges: !replication.cluster.is_empty(),
        last_heard: crate::node::standby::LastHeard::default(),
        sinks_hold: std::sync::Arc::default(),
    };
    let promoter = Arc::new(Promoter {
        running: Mutex::new(Running::Primary(node)),
        node_config,
        standby_config,
        key: replication.key,
        cluster: replication.cluster,
        role: peers.role,
        status,
        shipping: peers.shipping,
        log: peers.log,
        promised_at: Mutex::new(None),
        watching: std::sync::atomic::AtomicBool::new(false),
        metrics,
    });
    promoter.rejoin_when_fenced(signals::stop_requested);
    promoter
}

#[derive(Args)]
pub struct PromoteArgs {
    /// The standby to promote.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Promote even if fewer than N − k nodes promise the new epoch: inputs acknowledged
    /// by the old primary and held only by unreachable nodes are then lost.
    #[arg(long)]
    force: bool,
    /// How long the standby waits for its peers' promises.
    #[arg(long, default_value_t = 5000, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..))]
    timeout_ms: u32,
    /// The standby's client port may ask for a key and TLS, as for `tally client`;
    /// promotion needs a key that is neither read-only nor limited to some ledgers.
    #[command(flatten)]
    security: super::SecurityArgs,
}

/// Sends the promotion request and waits for the answer (a little longer than the
/// standby waits for its peers).
pub fn promote(args: &PromoteArgs) -> Result<(), CliError> {
    let request = PromoteRequest { timeout_ms: args.timeout_ms, force: u8::from(args.force), reserved: [0; 3] };
    let key = args.security.key()?;
    let tls = args.security.tls()?;
    let mut bytes = Vec::new();
    // On an authenticated connection every frame must name the client that proved its key.
    let client_id = key.as_ref().map_or(0, |key| key.client_id);
    encode_promote_request(1, client_id, &request, &mut bytes);
    let opened = tally_client::open_stream(
        args.addr,
        PROMOTE_CONNECT_TIMEOUT,
        PROMOTE_CONNECT_TIMEOUT,
        key.as_ref(),
        tls.as_ref(),
    );
    let mut stream = opened.map_err(|error| match error.kind() {
        std::io::ErrorKind::PermissionDenied => CliError::Failed(format!("{}: {error}", args.addr)),
        std::io::ErrorKind::InvalidData => CliError::Failed(format!("{}: TLS failed: {error}", args.addr)),
        _ => CliError::Io(error),
    })?;
    stream.socket().set_read_timeout(Some(Duration::from_millis(u64::from(args.timeout_ms)) + PROMOTE_REPLY_GRACE))?;
    stream.write_all(&bytes)?;
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; 4096];
    loop {
        match decoder.next_message() {
            Ok(Some(Message::PromoteReply { status, .. })) => {
                crate::outln!(
                    "promoted: {} is primary in epoch {}, last sequence {}",
                    args.addr,
                    status.epoch,
                    status.last_sequence
                )?;
                return Ok(());
            }
            Ok(Some(Message::Frame(Frame { body: Body::Error(code), .. }))) => {
                return Err(CliError::Failed(format!(
                    "{} refused the promotion ({code}); its log says why",
                    args.addr
                )));
            }
            Ok(Some(other)) => return Err(CliError::Failed(format!("unexpected answer {other:?}"))),
            Ok(None) => {}
            Err(error) => return Err(CliError::Failed(format!("bad answer: {error}"))),
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(CliError::Failed(format!("{} closed the connection", args.addr)));
        }
        decoder.feed(&buffer[..read]);
    }
}

/// For the connection and its handshakes (TLS, key), before the request is sent.
const PROMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Beyond the peers' timeout: fetching, opening the journal, replaying since the snapshot.
const PROMOTE_REPLY_GRACE: Duration = Duration::from_secs(30);
