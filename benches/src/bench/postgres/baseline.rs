//! The baseline workload against PostgreSQL: an accounts table, a transfers table, and one
//! PL/pgSQL function that takes a batch of transfers, locks their accounts in id order
//! (no deadlocks between sessions), and for each transfer checks idempotency by id, checks
//! the debit account's balance constraint, moves the money and records the transfer; all
//! of a call in one transaction. `synchronous_commit = on` makes a commit wait for the
//! WAL flush (durability equal to Tally's `local`); `off` matches `none`.
//!
//! Two variants: one transfer per transaction from many sessions, and the run's batches,
//! one transaction per batch. Both send the same transfer sequence as the Tally run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_codecs::Transfer;

use super::wire::{Connection, Url};
use crate::bench::summary::Measured;
use crate::load::report::{histogram, merge};
use crate::load::wire::Tally;
use crate::workload::Workload;

/// Sessions of the one-transfer-per-transaction variant at least ("many clients").
pub const SESSIONS_MIN: usize = 8;

const SCHEMA: &str = "
DROP TABLE IF EXISTS tally_bench_transfers;
DROP TABLE IF EXISTS tally_bench_accounts;
CREATE TABLE tally_bench_accounts (
    id numeric(39) PRIMARY KEY,
    debits_posted numeric(39) NOT NULL DEFAULT 0,
    credits_posted numeric(39) NOT NULL DEFAULT 0,
    debits_must_not_exceed_credits boolean NOT NULL DEFAULT false
);
CREATE TABLE tally_bench_transfers (
    id numeric(39) PRIMARY KEY,
    debit_account_id numeric(39) NOT NULL,
    credit_account_id numeric(39) NOT NULL,
    amount numeric(39) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION tally_bench_transfer(ids numeric[], debits numeric[], credits numeric[], amounts numeric[])
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    results text[] := '{}';
    debit_row tally_bench_accounts%ROWTYPE;
    found_credit boolean;
BEGIN
    PERFORM 1 FROM tally_bench_accounts WHERE id = ANY(debits || credits) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        IF EXISTS (SELECT 1 FROM tally_bench_transfers WHERE id = ids[i]) THEN
            results := results || 'exists'::text;
            CONTINUE;
        END IF;
        SELECT * INTO debit_row FROM tally_bench_accounts WHERE id = debits[i];
        IF NOT FOUND THEN
            results := results || 'debit_account_not_found'::text;
            CONTINUE;
        END IF;
        SELECT true INTO found_credit FROM tally_bench_accounts WHERE id = credits[i];
        IF found_credit IS NULL THEN
            results := results || 'credit_account_not_found'::text;
            CONTINUE;
        END IF;
        IF debit_row.debits_must_not_exceed_credits
           AND debit_row.debits_posted + amounts[i] > debit_row.credits_posted THEN
            results := results || 'exceeds_credits'::text;
            CONTINUE;
        END IF;
        UPDATE tally_bench_accounts SET debits_posted = debits_posted + amounts[i] WHERE id = debits[i];
        UPDATE tally_bench_accounts SET credits_posted = credits_posted + amounts[i] WHERE id = credits[i];
        INSERT INTO tally_bench_transfers (id, debit_account_id, credit_account_id, amount)
            VALUES (ids[i], debits[i], credits[i], amounts[i]);
        results := results || 'created'::text;
    END LOOP;
    RETURN results;
END $$;
";

/// The two ways the baseline sends the transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// One transfer per transaction, from `max(callers, SESSIONS_MIN)` sessions.
    OnePerTransaction,
    /// The Tally run's batches, one transaction each, from as many sessions as Tally's callers.
    Batched,
}

/// What the baseline is given.
pub struct Setup<'a> {
    pub url: &'a Url,
    pub accounts: u64,
    pub workload: &'a Workload,
    pub batch: usize,
    /// Tally's calling threads (clients × in flight).
    pub callers: usize,
    /// `on` or `off`.
    pub synchronous_commit: &'static str,
    /// The most transfers to send (the Tally run's count), and the most time per variant.
    pub transfers_max: Option<u64>,
    pub time_max: Duration,
}

/// Creates the schema and the accounts afresh.
fn prepare(setup: &Setup) -> Result<(), String> {
    let mut connection = Connection::connect(setup.url)?;
    connection.query(SCHEMA)?;
    connection.query(&format!(
        "INSERT INTO tally_bench_accounts (id) SELECT generate_series(1, {}); ANALYZE tally_bench_accounts;",
        setup.accounts
    ))?;
    Ok(())
}

/// What one session measured: its latencies, its results, and when its last call ended.
type SessionRun = (hdrhistogram::Histogram<u64>, Tally, Duration);

/// Runs one variant on a fresh schema.
pub fn run(setup: &Setup, variant: Variant, completed: &AtomicU64) -> Result<Measured, String> {
    prepare(setup)?;
    let sessions = match variant {
        Variant::OnePerTransaction => setup.callers.max(SESSIONS_MIN),
        Variant::Batched => setup.callers.max(1),
    };
    let next_batch = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + setup.time_max;
    let outcomes: Vec<Result<SessionRun, String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..sessions)
            .map(|_| scope.spawn(|| session(setup, variant, (&next_batch, completed), (start, deadline))))
            .collect();
        threads.into_iter().map(|thread| thread.join().unwrap_or_else(|_| Err("a session panicked".into()))).collect()
    });
    let mut latency = histogram();
    let mut results = Tally::default();
    let mut elapsed = Duration::ZERO;
    for outcome in outcomes {
        let (part, tally, last) = outcome?;
        merge(&mut latency, &part);
        results.merge(tally);
        elapsed = elapsed.max(last);
    }
    let (label, latency_of) = match variant {
        Variant::OnePerTransaction => {
            (format!("postgres: one transfer per transaction, {sessions} sessions"), "one transaction (one transfer)")
        }
        Variant::Batched => (
            format!("postgres: batches of {} per transaction, {sessions} sessions", setup.batch),
            "one transaction (one batch)",
        ),
    };
    Ok(Measured::new(label, latency_of, elapsed, &results, latency))
}

/// One session: takes the sequence's next batch until the time or the transfers run out.
fn session(
    setup: &Setup,
    variant: Variant,
    (next_batch, completed): (&AtomicU64, &AtomicU64),
    (start, deadline): (Instant, Instant),
) -> Result<SessionRun, String> {
    let mut connection = Connection::connect(setup.url)?;
    connection.query(&format!("SET synchronous_commit = {}", setup.synchronous_commit))?;
    let mut latency = histogram();
    let mut tally = Tally::default();
    let mut last = Duration::ZERO;
    'batches: while Instant::now() < deadline {
        let index = next_batch.fetch_add(1, Ordering::Relaxed);
        let first = index * setup.batch as u64;
        let count = match setup.transfers_max {
            Some(total) if first >= total => break,
            Some(total) => (total - first).min(setup.batch as u64) as usize,
            None => setup.batch,
        };
        let mut transfers = setup.workload.batch(index, setup.batch);
        transfers.truncate(count);
        let calls: Vec<&[Transfer]> = match variant {
            Variant::OnePerTransaction => transfers.chunks(1).collect(),
            Variant::Batched => vec![&transfers[..]],
        };
        for call in calls {
            if Instant::now() >= deadline {
                break 'batches;
            }
            let sent = Instant::now();
            let rows = connection.query(&call_sql(call))?;
            latency.saturating_record(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
            last = start.elapsed();
            count_results(&rows, call.len(), &mut tally);
            completed.fetch_add(call.len() as u64, Ordering::Relaxed);
        }
    }
    Ok((latency, tally, last))
}

/// `SELECT tally_bench_transfer('{…}', '{…}', '{…}', '{…}')` for `transfers`.
fn call_sql(transfers: &[Transfer]) -> String {
    let column = |field: fn(&Transfer) -> u128| {
        let values: Vec<String> = transfers.iter().map(|transfer| field(transfer).to_string()).collect();
        format!("'{{{}}}'", values.join(","))
    };
    format!(
        "SELECT tally_bench_transfer({}, {}, {}, {})",
        column(|transfer| transfer.id),
        column(|transfer| transfer.debit_account_id),
        column(|transfer| transfer.credit_account_id),
        column(|transfer| transfer.amount)
    )
}

/// Counts the statuses of the function's `text[]` result, `{created,exists,…}`.
fn count_results(rows: &[Vec<Option<String>>], expected: usize, tally: &mut Tally) {
    let array = rows.first().and_then(|row| row.first()).and_then(Option::as_deref).unwrap_or("{}");
    let statuses: Vec<&str> = array.trim_matches(['{', '}']).split(',').filter(|status| !status.is_empty()).collect();
    for status in &statuses {
        if *status == "created" {
            tally.created += 1;
        } else {
            tally.add_failure(1, (*status).to_owned());
        }
    }
    if statuses.len() != expected {
        tally.add_failure(0, format!("{} results for {expected} transfers", statuses.len()));
    }
}
