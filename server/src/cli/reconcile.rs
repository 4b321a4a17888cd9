//! `tally reconcile`: every account's balances in the engine against the settlement
//! tables in PostgreSQL: its row in `balances`, and the sums of its rows in `postings`.
//!
//! The two are compared at one point of the journal: the settlement watermark must have
//! reached the node's last sequence, and the node must not have moved on while its
//! accounts were read (else the comparison is taken again). The accounts compared are
//! those PostgreSQL knows (a row in `balances` or in `postings`): the client has no way
//! to list every account of the engine, but every created account gets a `balances` row
//! once settled, so only a row deleted together with all its postings escapes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use tally_client::{Client, ClientConfig};
use tally_codecs::Account;
use tally_codecs::wire::EVENTS_PER_REQUEST_MAX;
use tally_sinks::postgres::{PostgresConfig, SCHEMA_DEFAULT};

use super::CliError;

/// Comparisons tried while the node keeps moving.
const ATTEMPTS_MAX: usize = 5;
/// The balance columns, in the order they are compared and printed.
const COLUMNS: [&str; 4] = ["debits_pending", "debits_posted", "credits_pending", "credits_posted"];

#[derive(Args)]
pub struct ReconcileArgs {
    /// The settlement database (`postgres://USER@HOST:PORT/DB`).
    #[arg(long, value_name = "URL")]
    pg: String,
    /// The schema the settlement sink writes.
    #[arg(long, default_value = SCHEMA_DEFAULT, value_name = "NAME")]
    schema: String,
    /// The node (addresses tried in order).
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',', required = true)]
    addr: Vec<SocketAddr>,
    /// How long to wait for settlement to catch up with the node before giving up.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    catch_up_s: u64,
    /// The node's key and TLS, as for `tally client`.
    #[command(flatten)]
    security: super::SecurityArgs,
}

/// One account's four balances as decimal text, as each side reports them.
type Balances = [String; 4];

/// What PostgreSQL holds, read in one snapshot.
struct Settled {
    watermark: u64,
    balances: BTreeMap<u128, Balances>,
    posting_sums: BTreeMap<u128, Balances>,
}

pub fn reconcile(args: &ReconcileArgs) -> Result<(), CliError> {
    let config = PostgresConfig::new(&args.pg, &args.schema).map_err(CliError::Usage)?;
    // The settlement sink's connection bounds: a database that stops answering is an
    // error within about a minute, not a reconcile that hangs.
    let connection = tally_sinks::postgres::connection_config(&config.url)
        .map_err(|error| CliError::Usage(format!("--pg: {error}")))?;
    let mut database = connection
        .connect(postgres::NoTls)
        .map_err(|error| CliError::Unverified(format!("cannot connect to PostgreSQL: {error}")))?;
    let node_config = ClientConfig {
        connect_timeout: Duration::from_secs(2),
        unreachable_after: Duration::from_secs(5),
        key: args.security.key()?,
        tls: args.security.tls()?,
        ..ClientConfig::new(&args.addr)
    };
    let node = Client::with_config(node_config)
        .map_err(|error| CliError::Unverified(format!("cannot reach the node: {error}")))?;
    let deadline = Instant::now() + Duration::from_secs(args.catch_up_s);
    for _ in 0..ATTEMPTS_MAX {
        let last = last_sequence(&node)?;
        let settled = loop {
            let settled = read_settled(&mut database, &config.schema)?;
            if settled.watermark >= last {
                break settled;
            }
            if Instant::now() > deadline {
                return Err(CliError::Unverified(format!(
                    "settlement is at sequence {}, the node at {last}: not caught up within {} s",
                    settled.watermark, args.catch_up_s
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let ids: Vec<u128> = settled.balances.keys().chain(settled.posting_sums.keys()).copied().collect();
        let engine = lookup(&node, &ids)?;
        if settled.watermark != last || last_sequence(&node)? != last {
            continue;
        }
        let mismatches = compare(&settled, &engine);
        for line in &mismatches {
            crate::outln!("{line}")?;
        }
        let accounts = ids.iter().collect::<std::collections::BTreeSet<_>>().len();
        if mismatches.is_empty() {
            crate::outln!("reconciled {accounts} accounts at sequence {last}: no mismatch")?;
            return Ok(());
        }
        return Err(CliError::Failed(format!(
            "{} mismatches in {accounts} accounts at sequence {last}",
            mismatches.len()
        )));
    }
    Err(CliError::Unverified(format!("the node kept moving: no quiet point in {ATTEMPTS_MAX} attempts")))
}

fn last_sequence(node: &Client) -> Result<u64, CliError> {
    let status = node.status().map_err(|error| CliError::Unverified(format!("node status: {error}")))?;
    Ok(status.last_sequence)
}

fn lookup(node: &Client, ids: &[u128]) -> Result<BTreeMap<u128, Account>, CliError> {
    let mut unique = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut found = BTreeMap::new();
    for chunk in unique.chunks(EVENTS_PER_REQUEST_MAX) {
        let accounts = node
            .lookup_accounts(chunk)
            .map_err(|error| CliError::Unverified(format!("looking up accounts: {error}")))?;
        found.extend(accounts.into_iter().map(|account| (account.id, account)));
    }
    Ok(found)
}

fn read_settled(database: &mut postgres::Client, schema: &str) -> Result<Settled, CliError> {
    let failed = |error: postgres::Error| CliError::Unverified(format!("reading schema {schema}: {error}"));
    let mut transaction = database
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(failed)?;
    let watermark: i64 = transaction
        .query_one(&format!("SELECT sequence FROM {schema}.watermark WHERE sink = 'settlement'"), &[])
        .map_err(failed)?
        .get(0);
    let balances = transaction
        .query(
            &format!(
                "SELECT id::text, debits_pending::text, debits_posted::text, credits_pending::text, \
                 credits_posted::text FROM {schema}.balances"
            ),
            &[],
        )
        .map_err(failed)?;
    let sums = transaction
        .query(
            &format!(
                "SELECT account_id::text, \
                 coalesce(sum(pending_delta) FILTER (WHERE side = 'debit'), 0)::text, \
                 coalesce(sum(posted_delta) FILTER (WHERE side = 'debit'), 0)::text, \
                 coalesce(sum(pending_delta) FILTER (WHERE side = 'credit'), 0)::text, \
                 coalesce(sum(posted_delta) FILTER (WHERE side = 'credit'), 0)::text \
                 FROM {schema}.postings GROUP BY account_id"
            ),
            &[],
        )
        .map_err(failed)?;
    transaction.commit().map_err(failed)?;
    let by_id = |rows: Vec<postgres::Row>| -> Result<BTreeMap<u128, Balances>, CliError> {
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                let id =
                    id.parse::<u128>().map_err(|_| CliError::Failed(format!("an account id {id:?} in {schema}")))?;
                Ok((id, std::array::from_fn(|column| row.get::<_, String>(column + 1))))
            })
            .collect()
    };
    Ok(Settled {
        watermark: u64::try_from(watermark).unwrap_or(0),
        balances: by_id(balances)?,
        posting_sums: by_id(sums)?,
    })
}

/// One line per account and source that disagrees with the engine.
fn compare(settled: &Settled, engine: &BTreeMap<u128, Account>) -> Vec<String> {
    let mut ids: Vec<u128> = settled.balances.keys().chain(settled.posting_sums.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let zeros: Balances = std::array::from_fn(|_| "0".to_string());
    let mut lines = Vec::new();
    for id in ids {
        let Some(account) = engine.get(&id) else {
            lines.push(format!("account {id}: in PostgreSQL but not in the engine"));
            continue;
        };
        let expected: Balances =
            [account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted]
                .map(|value| value.to_string());
        match settled.balances.get(&id) {
            None => lines.push(format!("account {id}: no row in balances")),
            Some(row) => lines.extend(differences(id, "balances", &expected, row)),
        }
        let sums = settled.posting_sums.get(&id).unwrap_or(&zeros);
        lines.extend(differences(id, "sum of postings", &expected, sums));
    }
    lines
}

fn differences(id: u128, source: &str, engine: &Balances, settled: &Balances) -> Option<String> {
    let differing: Vec<String> = COLUMNS
        .iter()
        .zip(engine.iter().zip(settled))
        .filter(|(_, (engine, settled))| engine != settled)
        .map(|(column, (engine, settled))| format!("{column} engine {engine} {source} {settled}"))
        .collect();
    (!differing.is_empty()).then(|| format!("account {id}: {}", differing.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balances(values: [u128; 4]) -> Balances {
        values.map(|value| value.to_string())
    }

    #[test]
    fn each_disagreeing_source_is_a_mismatch_and_agreement_is_none() {
        let account = Account { id: 7, debits_posted: 10, credits_pending: 3, ..Account::default() };
        let engine = BTreeMap::from([(7, account)]);
        let agreeing = Settled {
            watermark: 1,
            balances: BTreeMap::from([(7, balances([0, 10, 3, 0]))]),
            posting_sums: BTreeMap::from([(7, balances([0, 10, 3, 0]))]),
        };
        assert!(compare(&agreeing, &engine).is_empty());
        let altered = Settled { balances: BTreeMap::from([(7, balances([0, 11, 3, 0]))]), ..agreeing };
        let lines = compare(&altered, &engine);
        assert_eq!(lines, ["account 7: debits_posted engine 10 balances 11"]);
        let missing_postings = Settled {
            posting_sums: BTreeMap::new(),
            balances: BTreeMap::from([(7, balances([0, 10, 3, 0]))]),
            watermark: 1,
        };
        assert_eq!(compare(&missing_postings, &engine).len(), 1, "no postings sum to zero, not to the balances");
        let unknown = Settled { balances: BTreeMap::from([(8, balances([0; 4]))]), ..missing_postings };
        assert!(compare(&unknown, &engine).iter().any(|line| line.contains("not in the engine")));
    }
}
