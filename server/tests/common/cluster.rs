//! A replica set of real `tally` processes for the multi-process replication tests, with a
//! fault proxy on every directed link between two nodes.
//!
//! Node `i` listens on its own address (clients and the tests talk to it there), and reaches
//! node `j` only through the proxy `link(i, j)`: its `--cluster` list names itself by its
//! own address and every other node by the proxy it uses to reach that node, and a
//! standby's `--primary` names proxies too. So one link can be cut, black-holed or delayed
//! in one direction without touching the others. This relies on a node recognising itself
//! in `--cluster` by its `--listen` address, and on peers accepting each other's traffic
//! through a different address than the one they listen on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::proxy::Proxy;
use super::{ServerProcess, TALLY, TempDir, free_address};

pub const CLUSTER_ID: &str = "tally-test";

/// What `tally status --json` says about a node (the keys of the replication contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub role: String,
    pub epoch: u64,
    pub last_sequence: u64,
    pub applied_sequence: u64,
    pub state_hash: String,
}

pub struct TestCluster {
    pub dir: TempDir,
    pub addresses: Vec<SocketAddr>,
    /// `links[from][to]`: the proxy `from` reaches `to` through (`None` on the diagonal).
    links: Vec<Vec<Option<Proxy>>>,
    nodes: Vec<Option<ServerProcess>>,
    secrets: Vec<PathBuf>,
    durability: String,
}

impl TestCluster {
    /// `size` nodes sharing one secret, none started yet.
    pub fn new(name: &str, size: usize, durability: &str) -> TestCluster {
        let dir = TempDir::new(name);
        let addresses: Vec<SocketAddr> = (0..size).map(|_| free_address()).collect();
        let links = (0..size)
            .map(|from| (0..size).map(|to| (from != to).then(|| Proxy::new(addresses[to]))).collect())
            .collect();
        let secret = dir.path().join("cluster-secret");
        // Unique to this cluster: a node of another test that takes over a port one of these
        // nodes let go of is refused at the handshake, never followed.
        std::fs::write(&secret, format!("the secret of the test replica set in {}", dir.path().display()))
            .expect("the secret is written");
        TestCluster {
            dir,
            addresses,
            links,
            nodes: (0..size).map(|_| None).collect(),
            secrets: vec![secret; size],
            durability: durability.to_owned(),
        }
    }

    /// Gives node `index` a secret of its own (the others' stays).
    pub fn set_secret(&mut self, index: usize, secret: &str) {
        let path = self.dir.path().join(format!("secret-{index}"));
        std::fs::write(&path, secret).expect("the secret is written");
        self.secrets[index] = path;
    }

    pub fn data(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("node-{index}"))
    }

    /// The proxy `from` reaches `to` through.
    pub fn link(&self, from: usize, to: usize) -> &Proxy {
        self.links[from][to].as_ref().expect("no link from a node to itself")
    }

    /// Every link to and from `index`.
    pub fn links_of(&self, index: usize) -> Vec<&Proxy> {
        (0..self.addresses.len())
            .filter(|&other| other != index)
            .flat_map(|other| [self.link(index, other), self.link(other, index)])
            .collect()
    }

    pub fn heal_all(&self) {
        self.links.iter().flatten().flatten().for_each(Proxy::heal);
    }

    fn args(&self, index: usize, extra: &[&str]) -> Vec<String> {
        let cluster: Vec<String> = (0..self.addresses.len())
            .map(|other| if other == index { self.addresses[index] } else { self.link(index, other).address })
            .map(|address| address.to_string())
            .collect();
        let mut args = vec![
            "--cluster".to_owned(),
            cluster.join(","),
            "--cluster-id".to_owned(),
            CLUSTER_ID.to_owned(),
            "--cluster-secret-file".to_owned(),
            self.secrets[index].to_string_lossy().into_owned(),
            "--durability".to_owned(),
            self.durability.clone(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// `tally serve` on node `index`.
    pub fn start_primary(&mut self, index: usize, extra: &[&str]) {
        let args = self.args(index, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[index] = Some(ServerProcess::start_as("serve", &self.data(index), self.addresses[index], &args));
    }

    /// `tally serve` on node `index`, expected to refuse to start: its exit status and
    /// stderr, or `None` if it was still running after 20 s (then it is killed).
    pub fn serve_refused(&self, index: usize) -> Option<(std::process::ExitStatus, String)> {
        let log = self.data(index).with_extension("refused.log");
        let mut child = Command::new(TALLY)
            .arg("serve")
            .arg("--data")
            .arg(self.data(index))
            .arg("--listen")
            .arg(self.addresses[index].to_string())
            .args(self.args(index, &[]))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("tally serve starts");
        let exit = super::exit_within(&mut child, Duration::from_secs(20))?;
        Some((exit, std::fs::read_to_string(&log).unwrap_or_default()))
    }

    /// `tally standby` on node `index`, following `primaries` through its links.
    pub fn start_standby(&mut self, index: usize, primaries: &[usize], extra: &[&str]) {
        let primaries: Vec<String> =
            primaries.iter().map(|&primary| self.link(index, primary).address.to_string()).collect();
        let mut args = self.args(index, extra);
        args.extend(["--primary".to_owned(), primaries.join(",")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[index] = Some(ServerProcess::start_as("standby", &self.data(index), self.addresses[index], &args));
    }

    /// SIGTERM to node `index`; whether it stopped cleanly (exit code 0).
    pub fn terminate(&mut self, index: usize) -> bool {
        self.nodes[index].take().is_some_and(ServerProcess::terminate)
    }

    pub fn kill(&mut self, index: usize) {
        if let Some(node) = self.nodes[index].take() {
            node.kill();
        }
    }

    /// Sends `signal` to node `index` (SIGSTOP and SIGCONT: a node paused and resumed).
    pub fn signal(&self, index: usize, signal: libc::c_int) {
        self.nodes[index].as_ref().expect("the node runs").signal(signal);
    }

    pub fn log(&self, index: usize) -> String {
        self.nodes[index].as_ref().map(ServerProcess::log).unwrap_or_default()
    }

    /// Every running node's log, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.nodes.len()).map(|index| format!("--- node {index}:\n{}", self.log(index))).collect()
    }

    /// `tally promote --addr NODE --timeout-ms 10000`.
    pub fn promote(&self, index: usize) -> Output {
        self.promote_with(index, &["--timeout-ms", "10000"])
    }

    /// `tally promote --addr NODE` with `extra` arguments.
    pub fn promote_with(&self, index: usize, extra: &[&str]) -> Output {
        Command::new(TALLY)
            .args(["promote", "--addr", &self.addresses[index].to_string()])
            .args(extra)
            .output()
            .expect("tally promote runs")
    }

    /// `tally promote` that must succeed.
    pub fn promote_ok(&self, index: usize) {
        let output = self.promote(index);
        assert!(
            output.status.success(),
            "promotion of node {index} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
    }

    /// `tally status --addr NODE --json`, or `None` if the node does not answer.
    pub fn status(&self, index: usize) -> Option<Status> {
        let output = Command::new(TALLY)
            .args(["status", "--addr", &self.addresses[index].to_string(), "--json"])
            .output()
            .expect("tally status runs");
        output.status.success().then(|| parse_status(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Waits until every node in `nodes` reports the same applied sequence and state hash;
    /// returns that status. Panics with every status and log after `timeout`.
    pub fn wait_converged(&self, nodes: &[usize], timeout: Duration) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Option<Status>> = nodes.iter().map(|&index| self.status(index)).collect();
            if let Some(Some(first)) = statuses.first() {
                let same = |status: &Option<Status>| {
                    status.as_ref().is_some_and(|status| {
                        (status.applied_sequence, &status.state_hash) == (first.applied_sequence, &first.state_hash)
                    })
                };
                if statuses.iter().all(same) {
                    return first.clone();
                }
            }
            assert!(Instant::now() < deadline, "nodes {nodes:?} did not converge: {statuses:#?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn parse_status(text: &str) -> Status {
    let value: serde_json::Value = serde_json::from_str(text.trim()).expect("tally status --json prints JSON");
    let number = |key: &str| value[key].as_u64().unwrap_or_else(|| panic!("status has a number {key}: {text}"));
    let string =
        |key: &str| value[key].as_str().unwrap_or_else(|| panic!("status has a string {key}: {text}")).to_owned();
    Status {
        role: string("role"),
        epoch: number("epoch"),
        last_sequence: number("last_sequence"),
        applied_sequence: number("applied_sequence"),
        state_hash: string("state_hash").trim_start_matches("0x").to_ascii_lowercase(),
    }
}
