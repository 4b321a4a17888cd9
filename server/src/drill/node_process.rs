//! One node of the drill's replica set: a `tally serve` or `tally standby` child process
//! of this same binary, its stderr appended to a log file beside its data directory.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to recover and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The tail of a log a failure message quotes.
const LOG_TAIL_BYTES: usize = 2_000;

pub struct NodeProcess {
    child: Child,
    pub address: SocketAddr,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts `TALLY ARGS…` with stderr appended to `log` and waits until it listens on
    /// `address`.
    pub fn start(tally: &Path, args: &[String], address: SocketAddr, log: &Path) -> Result<NodeProcess, String> {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|error| format!("cannot open the log {}: {error}", log.display()))?;
        let mut command = Command::new(tally);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl, which is async-signal-safe. It makes the kernel SIGKILL the node when the
        // drill's main thread (which spawns every node) dies, so that a drill killed from
        // outside leaves no node running.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|error| format!("cannot start {}: {error}", tally.display()))?;
        let mut node = NodeProcess { child, address, log: log.to_path_buf() };
        node.wait_until_listening()?;
        Ok(node)
    }

    fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_err() {
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "the node at {} did not listen within {START_TIMEOUT:?}{}",
                    self.address,
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// An error naming the exit status and the log's tail if the node has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("the node at {} exited with {status}{}", self.address, self.tail())),
            Ok(None) => Ok(()),
            Err(error) => Err(format!("cannot query the node at {}: {error}", self.address)),
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap: no clean shutdown of any kind.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(LOG_TAIL_BYTES);
        format!("; the end of its log {}:\n{}", self.log.display(), String::from_utf8_lossy(&log[start..]))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}
