//! `tally promote` on a standby: the promotion rule of `tally_replication::election`,
//! driven over real connections, then the switch from following to serving.
//!
//! 1. Stop following (the standby's journal is closed, a snapshot written) and promise
//!    itself the new epoch: the next above every epoch it knows that this node owns
//!    (`tally_replication::candidate_epoch`), persisted before it is used.
//! 2. Ask every other node of `--cluster` for a promise; wait until N − k promised (or the
//!    timeout; then refuse, or with `--force` go on and say what may be lost).
//! 3. Fetch what the longest log in the highest epoch has and this one lacks, checking
//!    the chain hash of every record (and of this node's last one) on the way in.
//! 4. Record the epoch as primary and open the node: it serves from then on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crossbeam::channel;
use tally_codecs::wire::NodeStatus;
use tally_journal::{Journal, JournalConfig, SnapshotStore};
use tally_replication::{
    ClusterKey, Decision, Election, LogPosition, Message, PRE_VOTE_VETO_GRACE, PreVote, candidate_epoch,
};

use super::peer_io::{self, PeerError, PeerStream};
use super::peers::LocalLog;
use super::role::{RECOVERING_REFUSAL, Role, RoleKind};
use super::ship::Shipping;
use super::standby::{Reopen, Standby, StandbyConfig};
use super::{Node, NodeConfig, StatusSource};
use crate::metrics::MetricsParts;

/// Why a node started without `--cluster` is not promoted (`tally promote`), and why
/// `tally standby` refuses `--auto-promote-after-ms` without it.
pub const NOT_PROMOTABLE: &str = "this node was started without --cluster, so it owns no epochs and is never promoted: \
     a promotion takes an epoch owned by the node's position in --cluster (the same list, in the same order, on \
     every node); restart it with --cluster ADDR,ADDR,… to make it promotable";

/// The promotion timeout when `tally promote` names none.
pub const PROMOTE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// What a standby process runs now.
// One of these lives behind the promoter's mutex for the life of the process: the size of
// its larger variant costs nothing, boxing it would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum Running {
    Standby(Standby),
    Primary(Node),
    /// Between the two, or after a failed restart.
    Neither,
}

pub struct Promoter {
    pub running: Mutex<Running>,
    pub node_config: NodeConfig,
    pub standby_config: StandbyConfig,
    pub key: ClusterKey,
    /// Every node of the replica set, this one included, as `--cluster` lists them (the
    /// same order on every node); empty when the node was started without it, and then
    /// it is never promoted ([`Promoter::own_position`]).
    pub cluster: Vec<SocketAddr>,
    pub role: Arc<Role>,
    /// The gateway's views, switched to the new primary's once it runs.
    pub status: Arc<RwLock<StatusSource>>,
    pub shipping: Arc<RwLock<Option<Arc<Shipping>>>>,
    pub log: Arc<RwLock<LocalLog>>,
    /// When this node last promised an epoch to a candidate: the candidate is about to
    /// serve, so the auto-promotion timer restarts then, as a Raft follower's election
    /// timer restarts when it grants a vote. Without it, a standby that just promised would
    /// start a rival election at once and fence the primary it promised to.
    pub promised_at: Mutex<Option<Instant>>,
    /// `/metrics`, when served: switched with the gateway's views.
    pub metrics: Option<crate::metrics::MetricsSource>,
    /// The auto-promotion watch runs (`--auto-promote-after-ms`): this node stands for
    /// promotion by itself, so it answers pre-votes with the log rule.
    pub watching: std::sync::atomic::AtomicBool,
}

impl Promoter {
    /// What this process offers peers, with this promoter behind it.
    pub fn peers(self: &Arc<Self>) -> super::peers::PeerService {
        super::peers::PeerService {
            key: Some(self.key.clone()),
            role: self.role.clone(),
            shipping: self.shipping.clone(),
            log: self.log.clone(),
            promoter: Some(Arc::clone(self)),
        }
    }

    /// Called when this node promised an epoch to another node.
    pub fn note_promise(&self) {
        *self.promised_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether this node runs the auto-promotion watch.
    pub fn watching(&self) -> bool {
        self.watching.load(std::sync::atomic::Ordering::Acquire)
    }

    fn since_promise(&self) -> Option<Duration> {
        self.promised_at.lock().unwrap_or_else(PoisonError::into_inner).map(|at| at.elapsed())
    }

    /// How long since a standby of this process last heard a primary, or it promised a
    /// candidate, for a peer's pre-vote. Read without `running` (a promotion holds it
    /// throughout, a reopen for a checkpoint for seconds): a standby being reopened under a
    /// live primary heard it moments ago and must not grant.
    pub fn silence(&self) -> Duration {
        let heard = self.standby_config.last_heard.silence();
        self.since_promise().map_or(heard, |since| heard.min(since))
    }

    /// This node's position in `--cluster`, which decides the epochs it may take. A node
    /// started without `--cluster` has none: numbering itself first, as it once did, two
    /// such standbys owned the same epochs and could both serve as primary of one epoch
    /// (invariant 6), so it is refused before anything is stopped.
    pub fn own_position(&self) -> Result<usize, String> {
        let me = self.standby_config.node;
        self.cluster.iter().position(|&node| node == me).ok_or_else(|| NOT_PROMOTABLE.to_owned())
    }

    pub fn promote(&self, force: bool, timeout_ms: u32) -> Result<NodeStatus, String> {
        self.own_position()?;
        let recovering = tally_replication::holds_back(self.role.recovering());
        if recovering && !force {
            return Err(format!("{RECOVERING_REFUSAL} (--force promotes it all the same, losing what it lacks)"));
        }
        let timeout = if timeout_ms == 0 { PROMOTE_TIMEOUT_DEFAULT } else { Duration::from_millis(timeout_ms.into()) };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let standby = match std::mem::replace(&mut *running, Running::Neither) {
            Running::Standby(standby) => standby,
            // A primary (a `serve` node, or one promoted before) keeps serving.
            other => {
                *running = other;
                return Err("this node is not a standby".into());
            }
        };
        let mut steps = Steps::start();
        let (_, own) = standby.shutdown();
        steps.done("standby stopped");
        // A promise (another candidate's `Prepare`) waits while this node becomes primary,
        // opens and publishes its log, then reads that log: the node may acknowledge as
        // soon as it opens, and a promise that read the stopped standby's log, or judged
        // the role before it turned primary (and so did not stop writes), would report
        // less than what the node acknowledged.
        let follow_lock = self.log.read().unwrap_or_else(PoisonError::into_inner).follow_lock.clone();
        let elected = self.elect_and_catch_up(own, force, timeout, &mut steps).and_then(|epoch| {
            let promising = follow_lock.lock().unwrap_or_else(PoisonError::into_inner);
            let primary = self.role.enter(epoch, RoleKind::Primary).map_err(|error| error.to_string())?;
            if !primary {
                // Another candidate's `Prepare` of a newer epoch reached this node during
                // the catch-up, and it promised: this candidacy is over (it would otherwise
                // open fenced and report a promotion that never happened).
                return Err(format!("this node promised epoch {} during the catch-up", self.role.epoch()));
            }
            Ok(promising)
        });
        let promising = match elected {
            Ok(promising) => promising,
            Err(reason) => {
                // Back to following: nothing was served in the new epoch.
                if let Err(error) = self.run_as_standby(&mut running, self.standby_config.clone()) {
                    crate::errln!("tally: cannot resume following after a refused promotion: {error}");
                }
                return Err(reason);
            }
        };
        steps.done("epoch recorded");
        let opened = (|| {
            if recovering {
                // Forced: what this node now holds is the history from here on.
                crate::errln!(
                    "tally: FORCED promotion of a recovering node: inputs it acknowledged before its rebuild and no promising node held are lost"
                );
                self.role.clear_recovering()?;
            }
            Node::open_with_role(&self.node_config, self.role.clone())
        })();
        let node = match opened {
            Ok(node) => node,
            Err(error) => {
                // The epoch file says primary, and nothing serves: fenced (persisted), so
                // that no restart serves this epoch either, and back to following; the
                // next promotion takes a newer epoch.
                drop(promising);
                crate::errln!("tally: the promoted node did not open ({error}): fenced in its epoch, following again");
                self.role.fence();
                if let Err(error) = self.run_as_standby(&mut running, self.standby_config.clone()) {
                    crate::errln!("tally: cannot resume following after a failed promotion: {error}");
                }
                return Err(format!("the promoted node did not open: {error}"));
            }
        };
        steps.done("node opened");
        self.role.set_primary(Some(self.standby_config.node));
        let log = LocalLog { follow_lock: follow_lock.clone(), ..node.log() };
        self.switch(node.status(), node.shipping(), log);
        drop(promising);
        self.switch_metrics(MetricsParts::of(&node));
        let status = node.status().read();
        *running = Running::Primary(node);
        tracing::warn!(
            epoch = status.epoch,
            last_sequence = status.last_sequence,
            role = "primary",
            steps = %steps.summary(),
            "PROMOTED"
        );
        Ok(status)
    }

    /// `--auto-promote-after-ms`: while this node is a standby, asks for promotion when no
    /// primary was heard from for `after` plus a random part of it (so two standbys do
    /// not keep starting elections together), first with a pre-vote ([`Promoter::pre_vote`]),
    /// which changes nothing anywhere when it does not carry. The election is the same as
    /// for `tally promote` without `--force`: without N − k promises the standby follows
    /// again (its epoch, recorded before it asked, stays), and its next attempt waits
    /// [`FAILED_CANDIDACY_BACKOFF`] times longer.
    pub fn watch(self: &Arc<Self>, after: Duration, stop: impl Fn() -> bool + Send + 'static) {
        self.watching.store(true, std::sync::atomic::Ordering::Release);
        let promoter = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("auto-promote".into()).spawn(move || {
            let mut wait = randomised(after);
            // A refused pre-vote leaves the standby running, still silent: the next
            // attempt waits a randomised timeout from this one, not a poll.
            let mut attempted: Option<Instant> = None;
            while !stop() {
                std::thread::sleep(WATCH_POLL);
                // While this process serves (or is between roles) there is nothing to
                // watch; once it follows again (fenced, it rejoins), the watch resumes.
                let silence = match &*promoter.running.lock().unwrap_or_else(PoisonError::into_inner) {
                    Running::Standby(standby) => standby.silence(),
                    Running::Primary(_) | Running::Neither => continue,
                };
                let silence = promoter.since_promise().map_or(silence, |since| silence.min(since));
                if silence < wait || attempted.is_some_and(|at| at.elapsed() < wait) {
                    continue;
                }
                attempted = Some(Instant::now());
                crate::errln!("tally: no primary heard for {} ms: asking for promotion", silence.as_millis());
                // A pre-vote first: a candidate that could not win (cut off from the rest,
                // or only from the primary, which the others still hear) changes nothing,
                // and returns with the epoch it had, fencing nobody.
                if let Err(reason) = promoter.pre_vote(after) {
                    crate::errln!("tally: auto-promotion held back: {reason}");
                    wait = randomised(after);
                    continue;
                }
                // The pre-vote may have taken up to T: a primary heard meanwhile ends this
                // attempt before anything is stopped or recorded.
                if promoter.silence() < after {
                    wait = randomised(after);
                    continue;
                }
                match promoter.promote(false, u32::try_from(after.as_millis()).unwrap_or(u32::MAX)) {
                    Ok(status) => {
                        crate::errln!("tally: auto-promoted to epoch {}", status.epoch);
                        wait = randomised(after);
                    }
                    Err(reason) => {
                        crate::errln!("tally: auto-promotion refused: {reason}");
                        wait = randomised(after) * FAILED_CANDIDACY_BACKOFF;
                    }
                }
            }
        });
        if let Err(error) = spawned {
            crate::errln!("tally: --auto-promote-after-ms is off: no thread: {error}");
        }
    }

    /// While this process serves as primary, watches for it being fenced (a newer epoch
    /// exists) and then turns it into a standby of the new primary without a restart:
    /// find the new primary → stop the pipeline → truncate the suffix that diverges →
    /// rebuild (snapshot + replay) → follow. Each step is logged with `REJOIN:`. While it
    /// runs a standby, watches for its follow thread stopping because the primary offers
    /// its checkpoint (it no longer holds the standby's next record) or refuses the
    /// standby's log as diverged, and opens the standby again in place
    /// ([`Promoter::reopen_standby`]).
    pub fn rejoin_when_fenced(self: &Arc<Self>, stop: impl Fn() -> bool + Send + 'static) {
        let promoter = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("rejoin".into()).spawn(move || {
            let mut asked_at = Instant::now();
            while !stop() {
                std::thread::sleep(WATCH_POLL);
                let (serving, reopen) = match &*promoter.running.lock().unwrap_or_else(PoisonError::into_inner) {
                    Running::Primary(_) => (true, None),
                    Running::Standby(standby) => (false, standby.needs_reopen()),
                    Running::Neither => (false, None),
                };
                if let Some(reopen) = reopen {
                    promoter.reopen_standby(reopen);
                }
                if !serving {
                    continue;
                }
                if promoter.role.kind() == RoleKind::Fenced {
                    promoter.rejoin(&stop);
                } else if asked_at.elapsed() >= EPOCH_QUESTION_INTERVAL && promoter.missing_followers() {
                    asked_at = Instant::now();
                    promoter.ask_epochs();
                }
            }
        });
        if let Err(error) = spawned {
            crate::errln!("tally: a fenced primary will not rejoin by itself: no thread: {error}");
        }
    }

    /// Whether some other node of the set is not following this primary: it may have
    /// been promoted while this one was cut off.
    fn missing_followers(&self) -> bool {
        let shipping = self.shipping.read().unwrap_or_else(PoisonError::into_inner).clone();
        let following = shipping.map_or(0, |shipping| shipping.followers.load(std::sync::atomic::Ordering::Acquire));
        following + 1 < self.cluster.len()
    }

    /// Asks the peers their epochs; fenced at once if one is newer.
    fn ask_epochs(&self) {
        let me = self.standby_config.node;
        let peers: Vec<SocketAddr> = self.cluster.iter().copied().filter(|&peer| peer != me).collect();
        if let Some((peer, epoch)) = super::rejoin::newer_epoch(&peers, &self.key, self.role.epoch()) {
            self.role.heard_of(epoch);
            tracing::warn!(%peer, epoch, role = "fenced", "FENCED: a peer is in a newer epoch; this node accepts no more writes");
            self.role.fence();
        }
    }

    fn rejoin(&self, stop: &dyn Fn() -> bool) {
        let me = self.standby_config.node;
        let peers: Vec<SocketAddr> = self.cluster.iter().copied().filter(|&peer| peer != me).collect();
        crate::errln!(
            "tally: REJOIN: fenced in epoch {}; asking {peers:?} which node is the new primary",
            self.role.epoch()
        );
        let Some(primary) = super::rejoin::find_primary(&peers, &self.key, self.role.epoch(), stop) else { return };
        // Clients are sent there from now on, while this node turns into a standby.
        self.role.set_primary(Some(primary));
        // A live primary answered: a pre-vote asked while this node rebuilds is refused as
        // by a standby that just heard it (its last-heard time was its last standby's).
        self.standby_config.last_heard.heard();
        crate::errln!("tally: REJOIN: the new primary is {primary}; stopping this node's pipeline");
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken only if it is a primary: anything else stays what this process runs.
        let node = match std::mem::replace(&mut *running, Running::Neither) {
            Running::Primary(node) => node,
            other => {
                *running = other;
                return;
            }
        };
        let ledger = node.shutdown();
        crate::errln!(
            "tally: REJOIN: pipeline stopped at state hash {:#034x}; comparing this journal with {primary}'s, \
             truncating what diverges, rebuilding from the snapshot and the journal",
            ledger.state_hash()
        );
        drop(ledger);
        let primaries = std::iter::once(primary).chain(peers.iter().copied().filter(|&peer| peer != primary));
        let config = StandbyConfig { primaries: primaries.collect(), ..self.standby_config.clone() };
        match self.run_as_standby(&mut running, config) {
            Ok(status) => tracing::warn!(
                applied_sequence = status.applied_sequence,
                state_hash = %format_args!("{:#034x}", status.state_hash),
                %primary,
                epoch = self.role.epoch(),
                role = "standby",
                "REJOIN: rebuilt; following the new primary as a standby"
            ),
            // The process serves nothing then; its status still answers, and a restart
            // with `tally standby` retries.
            Err(error) => tracing::error!(%error, "REJOIN FAILED: cannot open this node as a standby"),
        }
    }

    /// A running standby that stopped following for a reason only its start-up path can
    /// handle ([`Reopen`]) is stopped (its pipeline, journal and history store close; a
    /// snapshot is written) and opened again: subscribe, and either receive the primary's
    /// checkpoint and install it (`bootstrap`; logged with `CHECKPOINT:`), or compare this
    /// journal with the primary's and truncate what diverges (`rejoin`; logged with
    /// `REJOIN:`); rebuild; follow. No restart of the process.
    pub fn reopen_standby(&self, why: Reopen) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken only if it is the standby that asked: a promotion may have run between
        // the watch's look and this lock, and what it opened stays.
        let standby = match std::mem::replace(&mut *running, Running::Neither) {
            Running::Standby(standby) if standby.needs_reopen() == Some(why) => standby,
            other => {
                *running = other;
                return;
            }
        };
        let (_, position) = standby.shutdown();
        let (tag, doing) = match why {
            Reopen::Checkpoint => ("CHECKPOINT", "fetching and installing the primary's checkpoint"),
            Reopen::Diverged => ("REJOIN", "comparing this journal with the primary's and truncating what diverges"),
        };
        crate::errln!("tally: {tag}: standby stopped at sequence {}; {doing}", position.last_sequence);
        match (self.run_as_standby(&mut running, self.standby_config.clone()), why) {
            (Ok(status), Reopen::Checkpoint) => tracing::warn!(
                applied_sequence = status.applied_sequence,
                state_hash = %format_args!("{:#034x}", status.state_hash),
                role = "standby",
                "CHECKPOINT: installed in place; following the primary again"
            ),
            (Ok(status), Reopen::Diverged) => tracing::warn!(
                applied_sequence = status.applied_sequence,
                state_hash = %format_args!("{:#034x}", status.state_hash),
                role = "standby",
                "REJOIN: rebuilt in place; following the primary again"
            ),
            // The process serves nothing then; its status still answers, and a restart
            // with `tally standby` retries.
            (Err(error), _) => tracing::error!(%error, "{tag} FAILED: cannot open this node as a standby"),
        }
    }

    /// Opens this node's directory as a standby following `config.primaries` (the
    /// start-up path: compare the journal with the primary's and truncate what diverges,
    /// fetch and install a checkpoint if the primary no longer holds the next record,
    /// rebuild, follow) and makes it what this process runs: the gateway's status, the
    /// peers' view of the log and `/metrics` switch to it. Returns its status as it
    /// starts following. On an error `running` stays [`Running::Neither`].
    fn run_as_standby(
        &self,
        running: &mut Running,
        config: StandbyConfig,
    ) -> Result<NodeStatus, crate::error::NodeError> {
        // The same promise lock as every node this process ran before, held while the
        // directory is reopened (its journal may be truncated, its state rebuilt) until
        // the new log is published: a promise waits rather than read a log view that no
        // longer matches the disk. The new standby follows only after that
        // (`start_following`).
        let follow_lock = self.log.read().unwrap_or_else(PoisonError::into_inner).follow_lock.clone();
        let reopening = follow_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut standby = Standby::open(config, self.role.clone(), Some(follow_lock.clone()))?;
        let status = standby.status().read();
        self.switch(standby.status(), None, standby.log());
        drop(reopening);
        self.switch_metrics(MetricsParts::of_standby(&standby));
        standby.start_following();
        *running = Running::Standby(standby);
        Ok(status)
    }

    fn switch(&self, status: StatusSource, shipping: Option<Arc<Shipping>>, log: LocalLog) {
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = status;
        *self.shipping.write().unwrap_or_else(PoisonError::into_inner) = shipping;
        *self.log.write().unwrap_or_else(PoisonError::into_inner) = log;
    }

    fn switch_metrics(&self, parts: MetricsParts) {
        if let Some(metrics) = &self.metrics {
            metrics.switch(parts);
        }
    }

    /// Asks every peer whether it would promise the epoch this node would ask for, without
    /// recording that epoch or stopping the standby; `Ok` once N − k nodes (this one
    /// included) would and no serving primary vetoed, the answers still out given
    /// [`PRE_VOTE_VETO_GRACE`] once the count is reached. Peers that know a newer epoch
    /// teach it, so the next attempt asks above it.
    fn pre_vote(&self, after: Duration) -> Result<(), String> {
        let index = self.own_position()?;
        if tally_replication::holds_back(self.role.recovering()) {
            return Err(RECOVERING_REFUSAL.to_owned());
        }
        let known = self.role.epoch().max(self.role.highest_heard());
        let epoch = candidate_epoch(known, index, self.cluster.len())
            .ok_or_else(|| format!("no epoch is left above {known}"))?;
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner).clone();
        let own = super::peers::log_end(&log)?;
        let replicas = usize::from(self.node_config.durability.replicas());
        let (mut vote, message) = PreVote::start(epoch, own, self.cluster.len(), replicas, after);
        let answered = self.ask_peers(&message, after);
        let mut deadline = Instant::now() + after;
        let mut refusals = Vec::new();
        // Once it carries (with N − k = 1 the candidate alone carries it), the answers not
        // yet in get a short grace: a serving primary's veto comes within milliseconds.
        let mut waiting = self.cluster.len().saturating_sub(1);
        while waiting > 0 && !vote.vetoed() {
            if vote.carried() {
                deadline = deadline.min(Instant::now() + PRE_VOTE_VETO_GRACE);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((peer, answer)) = answered.recv_timeout(left) else { break };
            waiting -= 1;
            match answer {
                Ok(Message::NewerEpoch { epoch: newer }) => {
                    self.role.heard_of(newer);
                    refusals.push(format!("{peer}: in epoch {newer}"));
                }
                Ok(Message::PrimaryServing { epoch: serving }) => {
                    refusals.push(format!("{peer}: the primary of epoch {serving} serves (a veto)"));
                    vote.on_message(&peer.to_string(), &Message::PrimaryServing { epoch: serving });
                }
                Ok(Message::Refused { reason }) | Err(PeerError::Refused(reason)) => {
                    refusals.push(format!("{peer}: {reason}"));
                }
                Ok(answer) => vote.on_message(&peer.to_string(), &answer),
                Err(error) => refusals.push(format!("{peer}: {error}")),
            }
        }
        if vote.carried() {
            return Ok(());
        }
        Err(format!(
            "{} of the {} nodes needed would promise epoch {epoch} (pre-vote){}{}",
            vote.granted(),
            vote.needed(),
            if refusals.is_empty() { "" } else { "; " },
            refusals.join("; ")
        ))
    }

    /// Sends `message` to every peer, each on a thread of its own, and returns where their
    /// answers arrive.
    fn ask_peers(
        &self,
        message: &Message,
        timeout: Duration,
    ) -> channel::Receiver<(SocketAddr, Result<Message, PeerError>)> {
        let (answers, answered) = channel::unbounded();
        for &peer in self.cluster.iter().filter(|&&peer| peer != self.standby_config.node) {
            let (key, message, answers) = (self.key.clone(), message.clone(), answers.clone());
            std::thread::spawn(move || {
                let answer = ask(peer, &key, &message, timeout);
                let _ = answers.send((peer, answer));
            });
        }
        answered
    }

    fn elect_and_catch_up(
        &self,
        own: LogPosition,
        force: bool,
        timeout: Duration,
        steps: &mut Steps,
    ) -> Result<u32, String> {
        // An epoch no other node can take (each epoch has one owner: its position in
        // `--cluster`), above every epoch this node has promised or heard of, persisted
        // before anyone is asked: two promotions, even forced apart, never share an epoch.
        let index = self.own_position()?;
        let known = self.role.epoch().max(self.role.highest_heard());
        let epoch = candidate_epoch(known, index, self.cluster.len())
            .ok_or_else(|| format!("no epoch is left above {known}"))?;
        let entered = self.role.enter_newer(epoch, RoleKind::Standby).map_err(|error| error.to_string())?;
        if !entered {
            // Another candidate's `Prepare` moved this node past the epoch meanwhile.
            return Err(format!("this node promised epoch {} meanwhile", self.role.epoch()));
        }
        steps.done("own promise");
        let replicas = usize::from(self.node_config.durability.replicas());
        let (mut election, prepare) = Election::start(epoch, own, self.cluster.len(), replicas);
        let answered = self.ask_peers(&prepare, timeout);
        let deadline = Instant::now() + timeout;
        // Peers that answered but would not promise, and why (a recovering node says so).
        let mut refusals = Vec::new();
        while election.decision().is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((peer, answer)) = answered.recv_timeout(left) else { break };
            match answer {
                Ok(Message::Refused { reason }) | Err(PeerError::Refused(reason)) => {
                    crate::errln!("tally: promotion: {peer} refused to promise: {reason}");
                    refusals.push(format!("{peer}: {reason}"));
                }
                Ok(message) => {
                    if let Message::NewerEpoch { epoch: newer } = &message {
                        // The next attempt asks above it.
                        self.role.heard_of(*newer);
                    }
                    election.on_message(&peer.to_string(), &message).map_err(|error| error.to_string())?;
                }
                Err(error) => crate::errln!("tally: promotion: {peer} did not promise: {error}"),
            }
        }
        let decision = match election.decision() {
            Some(decision) => decision,
            None if force => {
                let (decision, missing) = election.force();
                crate::errln!(
                    "tally: FORCED promotion: {missing} of the {} nodes the rule needs did not promise; any input \
                     acknowledged after sequence {} and held only by them is lost",
                    election.needed(),
                    decision.target.last_sequence
                );
                decision
            }
            None if refusals.is_empty() => return Err(election.refuse().to_string()),
            None => return Err(format!("{}; refused by {}", election.refuse(), refusals.join("; "))),
        };
        steps.done("promises");
        self.catch_up(own, &decision, timeout)?;
        steps.done("catch-up");
        Ok(epoch)
    }

    /// Fetches `own.last_sequence..=target` from the decision's source and appends it.
    /// Fetches the records the decided log holds past this node's own from the promiser
    /// that holds them. Each answer must come within `timeout` (at least the handshake's):
    /// a source that died or was cut off without a reset ends the candidacy, which goes
    /// back to following, instead of holding the node (and its process lock) for ever.
    fn catch_up(&self, own: LogPosition, decision: &Decision, timeout: Duration) -> Result<(), String> {
        let Some(source) = &decision.source else { return Ok(()) };
        decision.check_own(own).map_err(|error| error.to_string())?;
        if decision.target.last_sequence <= own.last_sequence {
            return Ok(());
        }
        let address: SocketAddr = source.parse().map_err(|_| format!("bad peer address {source}"))?;
        let mut peer = peer_io::connect(address, &self.key, peer_io::HANDSHAKE_TIMEOUT).map_err(|e| e.to_string())?;
        peer.set_read_timeout(Some(timeout.max(peer_io::HANDSHAKE_TIMEOUT))).map_err(|e| e.to_string())?;
        let from = own.last_sequence.max(1);
        let to = decision.target.last_sequence;
        peer.send(&Message::Fetch { epoch: decision.epoch, from, to }).map_err(|e| e.to_string())?;
        let data = &self.standby_config.data_dir;
        let snapshot_sequence = SnapshotStore::open(data.join("snapshots"))
            .and_then(|store| store.list())
            .map_err(|error| error.to_string())?
            .into_iter()
            .max()
            .unwrap_or(0);
        let config = JournalConfig {
            snapshot_sequence,
            segment_bytes: self.standby_config.journal_segment_bytes,
            ..JournalConfig::new(data.join("journal"))
        };
        let (mut journal, _) = Journal::open(&config).map_err(|error| error.to_string())?;
        let fetched = fetch_into(&mut journal, &mut peer, own, address);
        let last = journal.last_sequence();
        // Flushed and closed whether or not the fetch finished: what was appended chains.
        journal.close();
        // The source holds the log the rule decided for; if this node cannot copy it (the
        // source no longer holds the records after this node's end, or went away), the
        // source itself can serve it.
        let hint = format!("{address} holds the decided log (to sequence {to}): promote it instead");
        fetched.map_err(|error| if error.contains("promote") { error } else { format!("{error}; {hint}") })?;
        if last < to {
            return Err(format!("{address} sent records up to {last}, not {to}; {hint}"));
        }
        Ok(())
    }
}

/// Appends the records `peer` sends after `own` until it sends an empty batch; each must
/// continue this log.
fn fetch_into(
    journal: &mut Journal,
    peer: &mut PeerStream,
    own: LogPosition,
    address: SocketAddr,
) -> Result<(), String> {
    loop {
        let records = match peer.recv().map_err(|error| format!("fetching from {address}: {error}"))? {
            Message::Records { records, .. } => records,
            other => return Err(format!("{address} answered a fetch with {other:?}")),
        };
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            if record.sequence <= own.last_sequence {
                if record.sequence == own.last_sequence && record.chain != own.last_chain {
                    return Err(format!(
                        "this node's log diverges from {address}'s at sequence {}: promote {address} instead",
                        own.last_sequence
                    ));
                }
                continue;
            }
            journal
                .append(record.epoch, record.timestamp, record.operation, &record.payload)
                .map_err(|error| error.to_string())?;
            if journal.last_chain() != record.chain {
                return Err(format!("record {} from {address} does not continue this log", record.sequence));
            }
        }
    }
}

/// The promotion's steps and how long each took, for the `PROMOTED` line: an operator
/// (and `tally drill`) sees where a slow failover spent its time.
struct Steps {
    last: Instant,
    taken: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn start() -> Steps {
        Steps { last: Instant::now(), taken: Vec::new() }
    }

    fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        self.taken.push((step, now - self.last));
        self.last = now;
    }

    fn summary(&self) -> String {
        let total: Duration = self.taken.iter().map(|(_, took)| *took).sum();
        let steps: Vec<String> =
            self.taken.iter().map(|(step, took)| format!("{step} {:.1} ms", took.as_secs_f64() * 1e3)).collect();
        format!("{:.1} ms: {}", total.as_secs_f64() * 1e3, steps.join(", "))
    }
}

/// How often the auto-promotion and rejoin watches look at the node.
const WATCH_POLL: Duration = Duration::from_millis(50);
/// How many times longer than usual the auto-promotion watch waits after a candidacy of
/// its own failed, for any reason. Each promise restarts the promisers' timers, so a
/// candidate that keeps collecting promises and failing (its log diverged from the one it
/// must take) would keep the node that should stand from standing. Added for a livelock
/// that a first, faulty model in the simulator showed (seed 3121); the final model settles
/// without it too (docs/design.md §7a, "Pre-vote").
pub const FAILED_CANDIDACY_BACKOFF: u32 = 4;
/// How often a primary that some node does not follow asks its peers for their epochs.
const EPOCH_QUESTION_INTERVAL: Duration = Duration::from_secs(1);

/// `after` plus a random share of it, up to double.
fn randomised(after: Duration) -> Duration {
    let random =
        peer_io::nonce().map_or(0, |bytes| u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], 0, 0, 0, 0]));
    let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(after_ms.saturating_add(random % after_ms.max(1)))
}

fn ask(peer: SocketAddr, key: &ClusterKey, message: &Message, timeout: Duration) -> Result<Message, PeerError> {
    let mut stream = peer_io::connect(peer, key, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.send(message)?;
    stream.recv()
}
