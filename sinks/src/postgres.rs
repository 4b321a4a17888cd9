//! Settlement in PostgreSQL: every committed transfer, its postings and every account's
//! balances, in a schema the sink creates and migrates (`sinks/migrations/postgres/`).
//!
//! Each batch of outcomes goes in with one transaction: binary `COPY` for transfers and
//! postings (`binary.rs`), one multi-row upsert for the balances, and the watermark row, so after a crash of the
//! node, of the sink or of PostgreSQL the sink resumes right after the last committed
//! batch: no duplicate, no gap.

mod binary;

use std::collections::BTreeMap;
use std::time::Duration;

use postgres::{Client, NoTls, Transaction};
use tally_codecs::flags::transfer as flags;
use tally_codecs::outcome::Outcome;
use tally_codecs::{Account, Transfer};

use crate::sink::{Sink, SinkError};
use binary::BinaryRows;

/// The schema the tables live in unless told otherwise.
pub const SCHEMA_DEFAULT: &str = "tally";
/// The watermark row of this sink.
const WATERMARK_NAME: &str = "settlement";
/// The migrations, in order: (version, SQL with `{schema}` for the schema name).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_settlement.sql")),
    (2, include_str!("../migrations/postgres/0002_drop_postings_account_index.sql")),
    (3, include_str!("../migrations/postgres/0003_postings_keyed_by_sequence.sql")),
    (4, include_str!("../migrations/postgres/0004_balances_fillfactor.sql")),
    (5, include_str!("../migrations/postgres/0005_watermark_entry_checksum.sql")),
];
/// The columns of the transfers and postings `COPY` statements in `write_batch`.
const TRANSFER_COLUMNS: i16 = 14;
const POSTING_COLUMNS: i16 = 10;
/// A `COPY` is sent on in chunks of this many bytes (about 300 transfer rows): large
/// enough that the per-message cost is small, small enough that PostgreSQL starts on a
/// batch's rows while the sink is still encoding them.
const COPY_CHUNK_BYTES: usize = 64 * 1024;
/// Longest schema name PostgreSQL keeps (NAMEDATALEN - 1).
const SCHEMA_NAME_BYTES_MAX: usize = 63;
/// The columns of the migrations table `migrate` creates, by name, with their types as
/// `information_schema` spells them: a table of that name that differs is another tool's.
const MIGRATIONS_COLUMNS: [(&str, &str); 2] = [("applied_at", "timestamp with time zone"), ("version", "integer")];

// Bounds on a connection, so that a database that stops answering without closing the
// connection (a host gone, a firewall dropping packets) is seen as an error, counted and
// retried, instead of holding the sink thread (reported up) and the node's shutdown for the
// hours of the kernel's defaults. Each applies unless the URL sets it.
/// One connection attempt (per address) at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Data sent and not acknowledged for this long closes the connection (Linux).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// Keepalive probes on an idle connection (waiting for a reply): the first after 30 s of
/// silence, then every 10 s, the connection closed after 3 unanswered, about a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// Set per session unless the session already has one (from the URL's `options`, the
/// role or the database): a statement that waits this long (a lock held by a session the
/// server has not yet found dead, a stuck server) fails and is retried. A batch is at most
/// 65 536 events, seconds of work, far below it. Migrations run without it: rewriting a
/// large settled table takes as long as it takes.
const SESSION_BOUNDS_SQL: &str = "SELECT set_config('statement_timeout', '120s', false) \
                                  WHERE current_setting('statement_timeout') = '0'; \
                                  SELECT set_config('idle_in_transaction_session_timeout', '60s', false) \
                                  WHERE current_setting('idle_in_transaction_session_timeout') = '0'";

/// Where settlement goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// A `postgres://` URL (or a key=value connection string).
    pub url: String,
    pub schema: String,
}

impl PostgresConfig {
    /// Checks the schema name: lower-case letters, digits and `_`, not starting with a
    /// digit, at most 63 bytes (it is written into SQL, so nothing else is accepted).
    pub fn new(url: &str, schema: &str) -> Result<PostgresConfig, String> {
        let valid = !schema.is_empty()
            && schema.len() <= SCHEMA_NAME_BYTES_MAX
            && schema.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(format!(
                "invalid schema name {schema:?}: use a-z, 0-9 and _, up to 63, not starting with a digit"
            ));
        }
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(format!("the settlement URL must start with postgres:// ({url:?})"));
        }
        Ok(PostgresConfig { url: url.to_string(), schema: schema.to_string() })
    }
}

/// The PostgreSQL settlement sink.
pub struct PostgresSink {
    config: PostgresConfig,
    client: Option<Client>,
    /// The entry at the watermark and its checksum, when the watermark row keeps one.
    held: Option<(u64, u32)>,
}

impl PostgresSink {
    pub fn new(config: PostgresConfig) -> PostgresSink {
        PostgresSink { config, client: None, held: None }
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{schema}", &self.config.schema)
    }

    fn connect(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = connection_config(&self.config.url)?.connect(NoTls).map_err(destination)?;
            client.batch_execute(SESSION_BOUNDS_SQL).map_err(destination)?;
            migrate(&mut client, &self.config.schema)?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| SinkError::Destination("not connected".into()))
    }

    fn write_batch(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
        let [copy_transfers, copy_postings, resolve, expire, upsert, watermark] = [
            "COPY {schema}.transfers (id, debit_account_id, credit_account_id, amount, pending_id, user_data_128, \
             user_data_64, user_data_32, timeout, ledger, code, flags, timestamp, sequence) FROM STDIN (FORMAT binary)",
            "COPY {schema}.postings (transfer_id, kind, side, account_id, ledger, resolves, pending_delta, \
             posted_delta, sequence, position) FROM STDIN (FORMAT binary)",
            "UPDATE {schema}.postings p SET pending_delta = -t.amount FROM {schema}.transfers t \
             WHERE p.pending_delta IS NULL AND t.id = p.resolves",
            "INSERT INTO {schema}.postings (transfer_id, kind, side, account_id, ledger, resolves, pending_delta, \
             posted_delta, sequence, position) \
             SELECT t.id, 'expiry', s.side, CASE s.side WHEN 'debit' THEN t.debit_account_id ELSE t.credit_account_id END, \
             t.ledger, t.id, -t.amount, 0, e.sequence, e.position + s.shift \
             FROM unnest($1::text[], $2::bigint[], $3::integer[]) AS e(id, sequence, position) \
             JOIN {schema}.transfers t ON t.id = e.id::numeric \
             CROSS JOIN (VALUES ('debit', 0), ('credit', 1)) AS s(side, shift)",
            "INSERT INTO {schema}.balances (id, debits_pending, debits_posted, credits_pending, credits_posted, sequence) \
             SELECT a::numeric, b::numeric, c::numeric, d::numeric, e::numeric, s \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) AS u(a, b, c, d, e, s) \
             ON CONFLICT (id) DO UPDATE SET debits_pending = EXCLUDED.debits_pending, \
             debits_posted = EXCLUDED.debits_posted, credits_pending = EXCLUDED.credits_pending, \
             credits_posted = EXCLUDED.credits_posted, sequence = EXCLUDED.sequence",
            "UPDATE {schema}.watermark SET sequence = $1, entry_sequence = $1, entry_checksum = $4 \
             WHERE sink = $2 AND sequence = $3",
        ]
        .map(|template| self.sql(template));
        let rows = Rows::of(batch)?;
        let first = batch.first().map_or(0, |outcome| outcome.sequence);
        let last = batch.last().map_or(0, |outcome| outcome.sequence);
        let client = self.connect()?;
        let mut transaction = client.transaction().map_err(destination)?;
        if batch.iter().any(|outcome| !outcome.transfers.is_empty()) {
            copy(&mut transaction, &copy_transfers, TRANSFER_COLUMNS, batch, transfer_row)?;
            copy(&mut transaction, &copy_postings, POSTING_COLUMNS, batch, posting_rows)?;
        }
        if rows.resolving {
            transaction.execute(&resolve, &[]).map_err(destination)?;
        }
        if !rows.expired_ids.is_empty() {
            let columns: [&(dyn postgres::types::ToSql + Sync); 3] =
                [&rows.expired_ids, &rows.expired_sequences, &rows.expired_positions];
            transaction.execute(&expire, &columns).map_err(destination)?;
        }
        if !rows.balances.is_empty() {
            let columns: [Vec<String>; 5] = std::array::from_fn(|column| {
                rows.balances.values().map(|(account, _)| balance_column(account, column)).collect()
            });
            let sequences: Vec<i64> = rows.balances.values().map(|(_, sequence)| *sequence).collect();
            let [ids, debits_pending, debits_posted, credits_pending, credits_posted] = &columns;
            transaction
                .execute(&upsert, &[ids, debits_pending, debits_posted, credits_pending, credits_posted, &sequences])
                .map_err(destination)?;
        }
        // The watermark moves only from where this batch starts: a second writer, or a
        // batch that was in fact committed before, makes this fail instead of duplicate.
        let (from, to) = (sequence_column(first.saturating_sub(1))?, sequence_column(last)?);
        let checksum = batch.last().map_or(0, |outcome| i64::from(outcome.checksum));
        let moved = transaction.execute(&watermark, &[&to, &WATERMARK_NAME, &from, &checksum]).map_err(destination)?;
        if moved != 1 {
            return Err(SinkError::Destination(format!("the watermark is not at {from}: another writer?")));
        }
        transaction.commit().map_err(destination)
    }
}

impl Sink for PostgresSink {
    fn resume(&mut self) -> Result<u64, SinkError> {
        let query = self.sql("SELECT sequence, entry_sequence, entry_checksum FROM {schema}.watermark WHERE sink = $1");
        let client = self.connect()?;
        let row = client.query_one(&query, &[&WATERMARK_NAME]).map_err(destination)?;
        let sequence: i64 = row.try_get(0).map_err(destination)?;
        let entry_sequence: Option<i64> = row.try_get(1).map_err(destination)?;
        // A checksum left by an earlier batch, under a watermark an earlier release moved
        // on without it, names another entry: not compared.
        let checksum: Option<i64> =
            if entry_sequence == Some(sequence) { row.try_get(2).map_err(destination)? } else { None };
        let sequence =
            u64::try_from(sequence).map_err(|_| SinkError::Destination(format!("a negative watermark: {sequence}")))?;
        let checksum = checksum
            .map(|checksum| {
                u32::try_from(checksum)
                    .map_err(|_| SinkError::Destination(format!("a watermark checksum beyond 32 bits: {checksum}")))
            })
            .transpose()?;
        self.held = checksum.map(|checksum| (sequence, checksum));
        Ok(sequence)
    }

    fn held_entry(&self) -> Option<(u64, u32)> {
        self.held
    }

    fn write(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
        let result = self.write_batch(batch);
        if result.is_err() {
            // A failed transaction leaves the session unusable; the next attempt reconnects.
            self.client = None;
        }
        result
    }
}

/// `url` parsed, with [`CONNECT_TIMEOUT`], [`TCP_USER_TIMEOUT`] and the keepalive bounds
/// wherever the URL leaves them unset (a keepalive idle time equal to the driver's default,
/// two hours, counts as unset; `keepalives=0` in the URL is kept).
pub fn connection_config(url: &str) -> Result<postgres::Config, SinkError> {
    let mut config: postgres::Config = url.parse().map_err(destination)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives() {
        if config.get_keepalives_idle() == postgres::Config::new().get_keepalives_idle() {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
    }
    Ok(config)
}

/// Creates the schema and applies the migrations it lacks, each in its own transaction,
/// under an advisory lock so two sinks starting together do not race. A schema whose
/// `migrations` table is not the one this creates (another tool's, in a shared schema) is
/// an error: its versions would be misread, and Tally's would be written into it.
pub fn migrate(client: &mut Client, schema: &str) -> Result<(), SinkError> {
    let mut transaction = client.transaction().map_err(destination)?;
    transaction.batch_execute("SET LOCAL statement_timeout = 0").map_err(destination)?;
    transaction.execute("SELECT pg_advisory_xact_lock(7406003)", &[]).map_err(destination)?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE IF NOT EXISTS {schema}.migrations \
             (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .map_err(destination)?;
    let columns_query = "SELECT column_name::text, data_type::text FROM information_schema.columns \
                         WHERE table_schema = $1 AND table_name = 'migrations' ORDER BY column_name";
    let columns = transaction
        .query(columns_query, &[&schema])
        .map_err(destination)?
        .iter()
        .map(|row| Ok((row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?)))
        .collect::<Result<Vec<(String, String)>, postgres::Error>>()
        .map_err(destination)?;
    if !columns.iter().map(|(name, kind)| (name.as_str(), kind.as_str())).eq(MIGRATIONS_COLUMNS) {
        return Err(SinkError::Destination(format!(
            "{schema}.migrations is not the sink's migrations table (its columns: {columns:?}; expected \
             {MIGRATIONS_COLUMNS:?}): another tool's? Settle into a schema of Tally's own (--settlement-schema)"
        )));
    }
    let applied = transaction
        .query(&format!("SELECT version FROM {schema}.migrations"), &[])
        .map_err(destination)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<Vec<i32>, postgres::Error>>()
        .map_err(destination)?;
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| !applied.contains(version)) {
        transaction.batch_execute(&sql.replace("{schema}", schema)).map_err(destination)?;
        transaction
            .execute(&format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"), &[version])
            .map_err(destination)?;
    }
    transaction.commit().map_err(destination)
}

fn destination(error: postgres::Error) -> SinkError {
    SinkError::Destination(error.to_string())
}

fn sequence_column(sequence: u64) -> Result<i64, SinkError> {
    i64::try_from(sequence).map_err(|_| SinkError::Destination(format!("sequence {sequence} exceeds bigint")))
}

/// Streams one binary `COPY` of `add`'s rows for each transfer of `batch`, in chunks of
/// `COPY_CHUNK_BYTES`: PostgreSQL parses and inserts one chunk while the next is encoded,
/// and the sink never holds a whole batch's payload.
fn copy(
    transaction: &mut Transaction<'_>,
    statement: &str,
    columns: i16,
    batch: &[Outcome],
    add: fn(&mut BinaryRows, &Transfer, i64, i32),
) -> Result<(), SinkError> {
    let failed = |error: std::io::Error| SinkError::Destination(error.to_string());
    let mut writer = transaction.copy_in(statement).map_err(destination)?;
    let mut rows = BinaryRows::new(columns);
    for outcome in batch {
        let sequence = sequence_column(outcome.sequence)?;
        for (index, transfer) in outcome.transfers.iter().enumerate() {
            add(&mut rows, transfer, sequence, position(index)?);
            if rows.buffered_bytes() >= COPY_CHUNK_BYTES {
                rows.drain_to(&mut writer).map_err(failed)?;
            }
        }
    }
    rows.finish();
    rows.drain_to(&mut writer).map_err(failed)?;
    writer.finish().map_err(destination)?;
    Ok(())
}

/// The position of the `index`-th pair of postings of an entry (migration 3): its debit
/// posting's; the credit's is one more. An entry holds at most 8 189 transfers and as many
/// expiries, far below `i32::MAX / 2`.
fn position(index: usize) -> Result<i32, SinkError> {
    i32::try_from(index)
        .ok()
        .and_then(|index| index.checked_mul(2))
        .ok_or_else(|| SinkError::Destination(format!("posting position {index} exceeds integer")))
}

/// Whether `transfer` posts or voids a pending transfer: its postings' pending release is
/// filled in by SQL from the pending transfer's row.
fn resolves_pending(transfer: &Transfer) -> bool {
    transfer.flags & (flags::POST_PENDING_TRANSFER | flags::VOID_PENDING_TRANSFER) != 0
}

/// `transfer`'s row, in the column order of the transfers `COPY` in `write_batch`.
fn transfer_row(rows: &mut BinaryRows, transfer: &Transfer, sequence: i64, _position: i32) {
    let t = transfer;
    rows.row();
    for value in [t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.user_data_128] {
        rows.numeric(value);
    }
    rows.numeric(u128::from(t.user_data_64));
    for value in [t.user_data_32, t.timeout, t.ledger] {
        rows.bigint(i64::from(value));
    }
    rows.integer(i32::from(t.code));
    rows.integer(i32::from(t.flags));
    rows.numeric(u128::from(t.timestamp));
    rows.bigint(sequence);
}

/// `transfer`'s debit and credit postings, at `position` and `position + 1`, in the column
/// order of the postings `COPY` in `write_batch`.
fn posting_rows(rows: &mut BinaryRows, transfer: &Transfer, sequence: i64, position: i32) {
    let t = transfer;
    // None: NULL, filled with minus the pending amount once the batch's rows are in.
    let (pending_delta, posted_delta) = if resolves_pending(t) {
        (None, if t.flags & flags::POST_PENDING_TRANSFER != 0 { t.amount } else { 0 })
    } else if t.flags & flags::PENDING != 0 {
        (Some(t.amount), 0)
    } else {
        (Some(0), t.amount)
    };
    let resolves = if resolves_pending(t) { t.pending_id } else { 0 };
    for (side, account, offset) in [("debit", t.debit_account_id, 0), ("credit", t.credit_account_id, 1)] {
        rows.row();
        rows.numeric(t.id);
        rows.text("transfer");
        rows.text(side);
        rows.numeric(account);
        rows.bigint(i64::from(t.ledger));
        rows.numeric(resolves);
        match pending_delta {
            Some(delta) => rows.numeric(delta),
            None => rows.null(),
        }
        rows.numeric(posted_delta);
        rows.bigint(sequence);
        // position is even and below i32::MAX / 2 (see `position`).
        rows.integer(position + offset);
    }
}

fn balance_column(account: &Account, column: usize) -> String {
    let value = match column {
        0 => account.id,
        1 => account.debits_pending,
        2 => account.debits_posted,
        3 => account.credits_pending,
        _ => account.credits_posted,
    };
    value.to_string()
}

/// What a batch needs besides its `COPY` rows: whether it resolves pending transfers, the
/// expired ids, and each account's last state in the batch.
struct Rows {
    /// Whether some posting releases a pending transfer (its amount is filled in by SQL
    /// from the pending transfer's row).
    resolving: bool,
    expired_ids: Vec<String>,
    expired_sequences: Vec<i64>,
    /// The position of each expiry's debit posting in its entry (the credit's is one more).
    expired_positions: Vec<i32>,
    balances: BTreeMap<u128, (Account, i64)>,
}

impl Rows {
    fn of(batch: &[Outcome]) -> Result<Rows, SinkError> {
        let mut rows = Rows {
            resolving: false,
            expired_ids: Vec::new(),
            expired_sequences: Vec::new(),
            expired_positions: Vec::new(),
            balances: BTreeMap::new(),
        };
        for outcome in batch {
            let sequence = sequence_column(outcome.sequence)?;
            rows.resolving |= outcome.transfers.iter().any(resolves_pending);
            // Expiries' postings follow the entry's transfers' (migration 3).
            for (index, &id) in outcome.expired.iter().enumerate() {
                // Saturated, `position` refuses it.
                let index = outcome.transfers.len().saturating_add(index);
                rows.expired_ids.push(id.to_string());
                rows.expired_sequences.push(sequence);
                rows.expired_positions.push(position(index)?);
            }
            for account in &outcome.accounts {
                rows.balances.insert(account.id, (*account, sequence));
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_outside_the_safe_set_are_refused() {
        let url = "postgres://root@127.0.0.1:5432/test";
        assert!(PostgresConfig::new(url, "tally").is_ok());
        assert!(PostgresConfig::new(url, "tally_test_2").is_ok());
        let too_long = "a".repeat(64);
        for bad in ["", "Tally", "1tally", "tally; DROP TABLE x", "tally.x", "tal-ly", "\"t\"", too_long.as_str()] {
            assert!(PostgresConfig::new(url, bad).is_err(), "{bad:?} is refused");
        }
        assert!(PostgresConfig::new("mysql://x", "tally").is_err(), "only postgres URLs");
    }

    #[test]
    fn a_connection_is_bounded_unless_the_url_says_otherwise() {
        let bounded = connection_config("postgres://root@127.0.0.1:5432/test").expect("a valid URL");
        assert_eq!(bounded.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(bounded.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(bounded.get_keepalives());
        assert_eq!(bounded.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(bounded.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(bounded.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        let url = "postgres://root@127.0.0.1:5432/test?connect_timeout=3&tcp_user_timeout=4&keepalives_idle=5";
        let own = connection_config(url).expect("a valid URL");
        assert_eq!(own.get_connect_timeout(), Some(&Duration::from_secs(3)), "the URL's own bound is kept");
        assert_eq!(own.get_tcp_user_timeout(), Some(&Duration::from_secs(4)));
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(5));
        let off = connection_config("postgres://root@127.0.0.1:5432/test?keepalives=0").expect("a valid URL");
        assert!(!off.get_keepalives(), "keepalives turned off stay off");
    }
}
