//! The drill's replica set: three nodes on free loopback ports, each with its own data
//! directory under the drill's root, started as `tally serve` (the first primary) or
//! `tally standby`, and driven only through the command line of the replication contract
//! (`tally promote`, `tally status --json`), exactly as an operator would.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::node_process::NodeProcess;
use super::policy::{Policy, STANDBYS};

pub const NODES: usize = STANDBYS as usize + 1;
const CLUSTER_ID: &str = "tally-drill";
/// How long `tally promote` may take before the drill calls the round failed.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(15);

/// What `tally status --json` says about a node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    pub role: String,
    pub epoch: u64,
    pub last_sequence: u64,
    pub applied_sequence: u64,
    /// Lower-case hex without `0x`.
    pub state_hash: String,
}

/// The answer of `tally promote`.
pub struct Promotion {
    pub epoch: Option<u64>,
    pub output: String,
}

pub struct Cluster {
    tally: PathBuf,
    root: PathBuf,
    policy: Policy,
    pub addresses: [SocketAddr; NODES],
    nodes: [Option<NodeProcess>; NODES],
}

impl Cluster {
    /// Picks three free loopback ports and writes the shared secret; starts nothing.
    pub fn new(tally: &Path, root: &Path, policy: Policy) -> Result<Cluster, String> {
        let secret = super::random::fresh_seed().to_string() + &super::random::fresh_seed().to_string();
        write_secret(&root.join("cluster-secret"), &secret)?;
        Ok(Cluster {
            tally: tally.to_path_buf(),
            root: root.to_path_buf(),
            policy,
            addresses: free_addresses()?,
            nodes: [None, None, None],
        })
    }

    /// Starts node `index` as the first primary (`tally serve`).
    pub fn start_primary(&mut self, index: usize) -> Result<(), String> {
        let mut args = vec!["serve".to_owned()];
        args.extend(self.common_args(index));
        self.start(index, &args)
    }

    /// Starts node `index` as a standby following `primaries` (tried in order).
    pub fn start_standby(&mut self, index: usize, primaries: &[usize]) -> Result<(), String> {
        let primaries: Vec<String> = primaries.iter().map(|&other| self.addresses[other].to_string()).collect();
        let mut args = vec!["standby".to_owned()];
        args.extend(self.common_args(index));
        args.extend(["--primary".to_owned(), primaries.join(",")]);
        self.start(index, &args)
    }

    fn start(&mut self, index: usize, args: &[String]) -> Result<(), String> {
        let log = self.root.join(format!("node-{index}.log"));
        self.nodes[index] = Some(NodeProcess::start(&self.tally, args, self.addresses[index], &log)?);
        Ok(())
    }

    /// The arguments every node takes, whatever its role. Every node gets the policy: a
    /// standby serves under it once promoted.
    fn common_args(&self, index: usize) -> Vec<String> {
        let cluster: Vec<String> = self.addresses.iter().map(SocketAddr::to_string).collect();
        let data = self.root.join(format!("node-{index}"));
        [
            "--data",
            &data.to_string_lossy(),
            "--listen",
            &self.addresses[index].to_string(),
            "--cluster",
            &cluster.join(","),
            "--cluster-id",
            CLUSTER_ID,
            "--cluster-secret-file",
            &self.root.join("cluster-secret").to_string_lossy(),
            "--durability",
            &self.policy.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// SIGKILL of node `index`; returns the instant the signal went out.
    /// Node `index`'s recovering marker (`DIR/RECOVERING`): while it exists, the node has
    /// not caught up with a primary since it started empty, promises nothing and is not
    /// promoted.
    pub fn recovering_marker(&self, index: usize) -> PathBuf {
        self.root.join(format!("node-{index}")).join(crate::node::role::RECOVERING_FILE)
    }

    pub fn kill(&mut self, index: usize) -> Instant {
        let killed_at = Instant::now();
        if let Some(node) = self.nodes[index].take() {
            node.kill();
        }
        killed_at
    }

    /// An error for the first node that should run and has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        self.nodes.iter_mut().flatten().try_for_each(NodeProcess::check_running)
    }

    /// `tally promote --addr NODE [--force]`: the epoch it printed on success, or why it
    /// refused.
    pub fn promote(&self, index: usize, force: bool) -> Result<Promotion, String> {
        let timeout_ms = PROMOTE_TIMEOUT.as_millis().to_string();
        let address = self.addresses[index].to_string();
        let mut args = vec!["promote", "--addr", &address, "--timeout-ms", &timeout_ms];
        if force {
            args.push("--force");
        }
        let output = self.command(&args)?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            return Err(format!("`tally promote --addr {address}` failed ({}): {}", output.status, text.trim()));
        }
        Ok(Promotion { epoch: epoch_in(&text), output: text.trim().to_owned() })
    }

    /// `tally status --addr NODE --json`, parsed.
    pub fn status(&self, index: usize) -> Result<NodeView, String> {
        let address = self.addresses[index].to_string();
        let output = self.command(&["status", "--addr", &address, "--json"])?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("`tally status --addr {address}` failed: {}", stderr.trim()));
        }
        parse_status(&String::from_utf8_lossy(&output.stdout))
    }

    fn command(&self, args: &[&str]) -> Result<std::process::Output, String> {
        Command::new(&self.tally).args(args).output().map_err(|error| format!("cannot run tally {}: {error}", args[0]))
    }
}

/// Parses the one JSON object of `tally status --json`.
pub fn parse_status(text: &str) -> Result<NodeView, String> {
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|error| format!("`tally status --json` printed no JSON: {error}"))?;
    let number = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("`tally status --json` has no number {key}"))
    };
    let string = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("`tally status --json` has no string {key}"))
    };
    let hash = string("state_hash")?;
    Ok(NodeView {
        role: string("role")?.to_owned(),
        epoch: number("epoch")?,
        last_sequence: number("last_sequence")?,
        applied_sequence: number("applied_sequence")?,
        state_hash: hash.trim_start_matches("0x").to_ascii_lowercase(),
    })
}

/// The number after the word "epoch" in `tally promote`'s answer, if it printed one.
fn epoch_in(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let after = &lower[lower.find("epoch")? + "epoch".len()..];
    let digits: String =
        after.trim_start_matches(|c: char| !c.is_ascii_digit()).chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Three distinct free loopback ports: all bound at once, then released for the nodes.
/// Another process could take one in between; the node then fails to start with a clear
/// message and the drill stops.
fn free_addresses() -> Result<[SocketAddr; NODES], String> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|error| format!("cannot bind a loopback port: {error}"));
    let listeners = [bind()?, bind()?, bind()?];
    let mut addresses = [SocketAddr::from(([127, 0, 0, 1], 0)); NODES];
    for (address, listener) in addresses.iter_mut().zip(&listeners) {
        *address = listener.local_addr().map_err(|error| format!("a bound port has no address: {error}"))?;
    }
    Ok(addresses)
}

/// The shared secret, readable by this user only.
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.write_all(secret.as_bytes()).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_read_by_its_contract_keys() {
        let text = r#"{"role":"standby","epoch":3,"last_sequence":10,"durable_sequence":9,"applied_sequence":8,
            "state_hash":"0xABCDEF","primary":"127.0.0.1:4000"}"#;
        let view = parse_status(text).expect("a valid status");
        assert_eq!(view.role, "standby");
        assert_eq!((view.epoch, view.last_sequence, view.applied_sequence), (3, 10, 8));
        assert_eq!(view.state_hash, "abcdef");
    }

    #[test]
    fn status_without_a_contract_key_is_an_error() {
        assert!(parse_status(r#"{"role":"primary","epoch":1,"last_sequence":1,"state_hash":"00"}"#).is_err());
        assert!(parse_status("role: primary").is_err());
    }

    #[test]
    fn the_epoch_is_read_from_the_promote_answer() {
        assert_eq!(epoch_in("promoted: epoch 4, last sequence 120"), Some(4));
        assert_eq!(epoch_in("{\"epoch\": 7, \"last_sequence\": 3}"), Some(7));
        assert_eq!(epoch_in("promoted"), None);
    }
}
