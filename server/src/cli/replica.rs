//! The replica-set side of the command line: cluster flags, `tally standby`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use clap::Args;
use tally_engine::pipeline::Durability;
use tally_replication::ClusterKey;

use super::{CliError, NodeArgs, node_config};
use crate::gateway::{self, Frontend};
use crate::node::ReplicationConfig;
use crate::node::role::Role;
use crate::node::standby::{Standby, StandbyConfig};
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
}

pub fn standby(args: &StandbyArgs) -> Result<(), CliError> {
    let listener = TcpListener::bind(args.listen)
        .map_err(|error| CliError::Usage(format!("cannot listen on {}: {error}", args.listen)))?;
    let Some(replication) = args.cluster.replication(args.listen, Durability::None)? else {
        return Err(CliError::Usage("a standby needs --cluster-secret-file".into()));
    };
    let config = node_config(&args.node);
    let role = std::sync::Arc::new(Role::load(&config.data_dir)?);
    let standby = Standby::open(
        StandbyConfig {
            data_dir: config.data_dir.clone(),
            node: args.listen,
            primaries: args.primary.clone(),
            key: replication.key.clone(),
            snapshot_interval: config.snapshot_interval,
        },
        role.clone(),
    )?;
    signals::install()?;
    eprintln!("tally: standby listening on {}, following {:?}", args.listen, args.primary);
    let peers = crate::node::peers::PeerService { key: Some(replication.key), role, shipping: None };
    let frontend = Frontend { status: standby.status(), peers };
    gateway::serve(&listener, &frontend, signals::stop_requested)?;
    eprintln!("tally: stopping the standby");
    let ledger = standby.shutdown();
    eprintln!("tally: stopped cleanly, state hash {:#034x}", ledger.state_hash());
    Ok(())
}
