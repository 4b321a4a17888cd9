//! One round of the drill: kill the primary under load, promote a standby, keep the load
//! going, bring the old primary back as a standby, then check everything.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig};
use tally_codecs::wire::EVENTS_PER_REQUEST_MAX;
use tally_codecs::{ResultCode, Transfer};

use super::checks;
use super::cluster::{Cluster, NODES, NodeView};
use super::load::{self, Load, Record};
use super::random::Random;
use super::report::{NodeState, RoundReport};
use super::{DrillConfig, Policy};

/// How long the drill waits for one step (load progress, the first acknowledgement on the
/// new primary, the end of a round's load) before it calls the round failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to agree on one state after the load stops.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Ids of the drill's transfers start here, above the account ids.
const FIRST_TRANSFER_ID: u128 = 1_000_000;

pub struct Drill {
    cluster: Cluster,
    policy: Policy,
    primary: usize,
    random: Random,
    transfers_per_round: u64,
    next_id: u128,
    /// Every id acknowledged in any round, and every id sent (acknowledged or not).
    acknowledged: Vec<u128>,
    sent: Vec<u128>,
}

impl Drill {
    /// Starts node 0 as the primary and nodes 1 and 2 as its standbys, and creates the
    /// accounts.
    pub fn start(config: &DrillConfig, mut cluster: Cluster) -> Result<Drill, String> {
        cluster.start_primary(0)?;
        // A standby is told every other node, so that after a promotion it finds the new
        // primary (the others answer that they are not primary).
        cluster.start_standby(1, &others(1))?;
        cluster.start_standby(2, &others(2))?;
        let drill = Drill {
            cluster,
            policy: config.policy,
            primary: 0,
            random: Random::new(config.seed),
            transfers_per_round: config.transfers_per_round,
            next_id: FIRST_TRANSFER_ID,
            acknowledged: Vec::new(),
            sent: Vec::new(),
        };
        let results = drill.load_client()?.create_accounts(&load::accounts()).map_err(|error| error.to_string())?;
        if let Some(failed) =
            results.iter().find(|result| !ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok))
        {
            return Err(format!("creating the drill's accounts answered status {}", failed.status));
        }
        Ok(drill)
    }

    pub fn round(&mut self, number: u32) -> RoundReport {
        let mut report = RoundReport {
            round: number,
            loss_allowed_by_policy: !self.policy.failover_loses_nothing(),
            ..RoundReport::default()
        };
        if let Err(problem) = self.fail_over_under_load(&mut report).and_then(|()| self.check(&mut report)) {
            report.problems.push(problem);
        }
        report.passed = report.problems.is_empty() && report.checks.all();
        report
    }

    fn fail_over_under_load(&mut self, report: &mut RoundReport) -> Result<(), String> {
        let count = self.transfers_per_round;
        report.kill_after_acknowledged = self.random.between(count / 10, count / 2);
        let old = self.primary;
        let standbys = others(old);
        let promoted = standbys[usize::from(self.random.next_u64() % 2 == 1)];
        report.killed = self.cluster.addresses[old].to_string();
        report.promoted = self.cluster.addresses[promoted].to_string();
        let load = Load::start(self.load_client()?, self.next_id, count);
        self.next_id += u128::from(count);
        let mut timing = FailoverTiming::default();
        let outcome = self.kill_promote_and_rejoin(&load, promoted, report, &mut timing);
        let record = load.finish();
        self.take_record(&record, report);
        // The probe is a transfer of the round like the others.
        if timing.probe_sent {
            report.sent += 1;
            if timing.probe_acked.is_some() {
                report.acknowledged += 1;
            } else {
                report.in_doubt += 1;
            }
        }
        // The first acknowledgement on the new primary: the probe's, or a load call's that
        // was sent after the kill, whichever came first (the load may have sent everything
        // before the kill; the probe is always sent).
        let first_ack = timing.killed.and_then(|killed| {
            let load_ack = record.first_ack_started_after(killed);
            [load_ack, timing.probe_acked].into_iter().flatten().min()
        });
        let millis = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
        report.rto_ms = timing.killed.zip(first_ack).map(|(killed, acked)| millis(killed, acked));
        report.promote_to_ack_ms = timing.promote_started.zip(first_ack).map(|(started, acked)| millis(started, acked));
        report.checks.recovered = report.rto_ms.is_some();
        outcome
    }

    /// Sends one fresh transfer to the new primary (the client retries it with the same id
    /// and follows `not_primary`) and returns when it was acknowledged.
    fn probe(&mut self, report: &mut RoundReport) -> Result<Instant, String> {
        let id = self.next_id;
        self.next_id += 1;
        // Sent counts it before the answer: if the client gives up, the id is in doubt and
        // the checks still look it up.
        self.sent.push(id);
        let client = self.load_client()?;
        let answer = client.create_transfers(&[load::transfer(id)]);
        let acked = Instant::now();
        let results = answer.map_err(|error| format!("the probe transfer {id} got no answer: {error}"))?;
        match results.first().map(|result| ResultCode::from_u32(result.status)) {
            Some(Some(code)) if code.is_ok() => {
                self.acknowledged.push(id);
                report.probe_id = Some(id.to_string());
                Ok(acked)
            }
            Some(code) => Err(format!(
                "the probe transfer {id} was answered {}",
                code.map_or_else(|| "an unknown code".to_owned(), |code| code.to_string())
            )),
            None => Err(format!("the probe transfer {id} got no result")),
        }
    }

    fn kill_promote_and_rejoin(
        &mut self,
        load: &Load,
        promoted: usize,
        report: &mut RoundReport,
        timing: &mut FailoverTiming,
    ) -> Result<(), String> {
        let kill_after = report.kill_after_acknowledged;
        self.wait_for("the load to reach the kill point", || load.acked() >= kill_after || load.is_done())?;
        let old = self.primary;
        // A drill starts from a redundant set: a standby that has not yet caught up once
        // (a new or restarted one) is recovering and could not be promoted.
        let markers = others(old).map(|index| self.cluster.recovering_marker(index));
        self.wait_for("the standbys to catch up", || markers.iter().all(|marker| !marker.exists()))?;
        crate::errln!("tally drill: round {}: SIGKILL of the primary {}", report.round, report.killed);
        let killed = self.cluster.kill(old);
        timing.killed = Some(killed);
        let promote_started = Instant::now();
        timing.promote_started = Some(promote_started);
        // Without a policy that waits for standbys, every node must promise, and the dead
        // primary cannot: an operator then forces the promotion and accepts the loss the
        // drill measures.
        report.promotion_forced = !self.policy.failover_loses_nothing();
        let promotion = self.cluster.promote(promoted, report.promotion_forced)?;
        report.promote_ms = Some(promote_started.elapsed().as_secs_f64() * 1e3);
        report.epoch = promotion.epoch;
        crate::errln!("tally drill: round {}: promoted {}: {}", report.round, report.promoted, promotion.output);
        self.primary = promoted;
        // Under replicated:2 the new primary has one standby left and cannot acknowledge
        // until the old primary is back: it returns at once, and the RTO includes its
        // restart. Otherwise it returns after the first acknowledgement, under load.
        let needs_old_back = self.policy.replicated.is_some_and(|count| count >= super::policy::STANDBYS);
        if needs_old_back {
            self.rejoin(old, report.round)?;
        }
        timing.probe_sent = true;
        timing.probe_acked = Some(self.probe(report)?);
        if !needs_old_back {
            self.rejoin(old, report.round)?;
        }
        self.wait_for("the round's load to finish", || load.is_done())
    }

    /// Restarts the killed node as a standby of the others.
    fn rejoin(&mut self, old: usize, round: u32) -> Result<(), String> {
        self.cluster.start_standby(old, &others(old))?;
        crate::errln!("tally drill: round {round}: {} restarted as a standby", self.cluster.addresses[old]);
        Ok(())
    }

    fn take_record(&mut self, record: &Record, report: &mut RoundReport) {
        self.acknowledged.extend(&record.acked);
        self.sent.extend(record.acked.iter().chain(&record.in_doubt).chain(record.rejected.iter().map(|(id, _)| id)));
        report.acknowledged = count(record.acked.len());
        report.in_doubt = count(record.in_doubt.len());
        report.rejected = count(record.rejected.len());
        report.sent = report.acknowledged + report.in_doubt + report.rejected;
        report.client_errors = record.errors.clone();
        if record.error_count > count(record.errors.len()) {
            report.client_errors.push(format!("… {} client errors in all", record.error_count));
        }
        for (id, code) in record.rejected.iter().take(5) {
            report.problems.push(format!("transfer {id} was answered {code}"));
        }
    }

    /// Waits for the nodes to agree, then reads the ledger back from the primary.
    /// `report.checked` is set only once every check has run: a lookup that fails part
    /// way leaves the round unchecked, and the table shows `-` rather than zeros nothing
    /// measured (the summary takes the most lost over all rounds either way).
    fn check(&mut self, report: &mut RoundReport) -> Result<(), String> {
        let (views, agreed) = self.wait_for_one_state();
        report.checks.equal_state_hashes = agreed;
        report.nodes = views
            .iter()
            .enumerate()
            .map(|(index, view)| node_state(self.cluster.addresses[index], view.as_ref()))
            .collect();
        if views[self.primary].as_ref().is_none_or(|view| view.role != "primary") {
            report.problems.push(format!("{} does not report itself primary", report.promoted));
        }
        let client = self.client(&[self.cluster.addresses[self.primary]], Duration::from_secs(10))?;
        let found = lookup_transfers(&client, &self.sent)?;
        let found_ids: HashSet<u128> = found.iter().map(|transfer| transfer.id).collect();
        let lost = checks::lost(&self.acknowledged, &found_ids);
        report.lost = count(lost.len());
        report.lost_ids_sample = lost.iter().take(10).map(u128::to_string).collect();
        report.checks.no_acknowledged_loss = lost.is_empty() || report.loss_allowed_by_policy;
        let ids: Vec<u128> = load::accounts().iter().map(|account| account.id).collect();
        let accounts = client.lookup_accounts(&ids).map_err(|error| format!("looking up the accounts: {error}"))?;
        if accounts.len() != ids.len() {
            report.problems.push(format!("the primary has {} of the drill's {} accounts", accounts.len(), ids.len()));
        }
        let excess = checks::applied_more_than_once(&found, &accounts);
        report.applied_twice = u64::try_from(excess.applied_twice).unwrap_or(u64::MAX);
        report.accounts_off = excess.accounts_off.iter().map(u128::to_string).collect();
        report.checks.nothing_applied_twice = excess.applied_twice == 0 && excess.accounts_off.is_empty();
        report.ledgers = checks::ledger_totals(&accounts)?;
        report.checks.conservation = report.ledgers.iter().all(|ledger| ledger.balanced);
        report.checked = true;
        Ok(())
    }

    /// Polls every node's status until all report the same applied sequence and state
    /// hash; returns the last views and whether they agreed in time.
    fn wait_for_one_state(&self) -> ([Option<NodeView>; NODES], bool) {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let views: [Option<NodeView>; NODES] = std::array::from_fn(|index| self.cluster.status(index).ok());
            let states =
                views.iter().map(|view| view.as_ref().map(|view| (view.applied_sequence, view.state_hash.as_str())));
            if checks::states_agree(states) {
                return (views, true);
            }
            if Instant::now() >= deadline {
                return (views, false);
            }
            std::thread::sleep(STATUS_POLL_INTERVAL);
        }
    }

    fn wait_for(&mut self, what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !done() {
            self.cluster.check_running()?;
            if Instant::now() >= deadline {
                return Err(format!("gave up waiting for {what} after {STEP_TIMEOUT:?}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    /// A client for the load: every node, the primary first.
    fn load_client(&self) -> Result<Client, String> {
        let mut addresses = vec![self.cluster.addresses[self.primary]];
        addresses.extend(others(self.primary).map(|index| self.cluster.addresses[index]));
        self.client(&addresses, STEP_TIMEOUT)
    }

    fn client(&self, addresses: &[SocketAddr], give_up_after: Duration) -> Result<Client, String> {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(1),
            give_up_after,
            connect_timeout: Duration::from_millis(250),
            ..ClientConfig::new(addresses)
        };
        Client::with_config(config).map_err(|error| format!("cannot connect a client: {error}"))
    }
}

/// The moments a round's recovery time is measured between.
#[derive(Default)]
struct FailoverTiming {
    /// The SIGKILL of the primary.
    killed: Option<Instant>,
    /// `tally promote` was started.
    promote_started: Option<Instant>,
    /// The probe transfer was sent right after the promotion,
    probe_sent: bool,
    /// and acknowledged then.
    probe_acked: Option<Instant>,
}

/// The two nodes other than `index`.
fn others(index: usize) -> [usize; 2] {
    [(index + 1) % NODES, (index + 2) % NODES]
}

fn count(length: usize) -> u64 {
    u64::try_from(length).unwrap_or(u64::MAX)
}

fn node_state(address: SocketAddr, view: Option<&NodeView>) -> NodeState {
    match view {
        Some(view) => NodeState {
            address: address.to_string(),
            role: view.role.clone(),
            epoch: view.epoch,
            applied_sequence: view.applied_sequence,
            state_hash: view.state_hash.clone(),
        },
        None => NodeState { address: address.to_string(), role: "unreachable".into(), ..NodeState::default() },
    }
}

fn lookup_transfers(client: &Client, ids: &[u128]) -> Result<Vec<Transfer>, String> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(EVENTS_PER_REQUEST_MAX) {
        found.extend(client.lookup_transfers(chunk).map_err(|error| format!("looking up transfers: {error}"))?);
    }
    Ok(found)
}
