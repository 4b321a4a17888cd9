//! The JSON forms of outcome entries that the file and events sinks publish. Records use
//! the JSON names of `tally_codecs::json` (u128 values as decimal strings, flags as names,
//! a result's status as its code's name).

use serde::Serialize;
use tally_codecs::outcome::{Outcome, OutcomeEvents};
use tally_codecs::{Account, EventResult, LimitProfile, Transfer};

/// The name of the operation an entry records.
pub fn operation_name(events: &OutcomeEvents) -> &'static str {
    match events {
        OutcomeEvents::Accounts(_) => "create_accounts",
        OutcomeEvents::Transfers(_) => "create_transfers",
        OutcomeEvents::LimitProfiles(_) => "upsert_limit_profiles",
        OutcomeEvents::Tick => "tick",
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Records<'a> {
    Accounts(&'a [Account]),
    Transfers(&'a [Transfer]),
    LimitProfiles(&'a [LimitProfile]),
}

/// One whole entry: `{"sequence", "timestamp", "operation", "events", "results",
/// "transfers", "accounts", "expired"}`.
#[derive(Serialize)]
struct EntryForm<'a> {
    sequence: u64,
    timestamp: u64,
    operation: &'static str,
    events: Records<'a>,
    results: &'a [EventResult],
    transfers: &'a [Transfer],
    accounts: &'a [Account],
    expired: Vec<String>,
}

/// Appends the entry as one line of JSON (with its newline) to `out`.
pub fn write_entry_line(outcome: &Outcome, out: &mut Vec<u8>) {
    let events = match &outcome.events {
        OutcomeEvents::Accounts(accounts) => Records::Accounts(accounts),
        OutcomeEvents::Transfers(transfers) => Records::Transfers(transfers),
        OutcomeEvents::LimitProfiles(profiles) => Records::LimitProfiles(profiles),
        OutcomeEvents::Tick => Records::Transfers(&[]),
    };
    let form = EntryForm {
        sequence: outcome.sequence,
        timestamp: outcome.timestamp,
        operation: operation_name(&outcome.events),
        events,
        results: &outcome.results,
        transfers: &outcome.transfers,
        accounts: &outcome.accounts,
        expired: outcome.expired.iter().map(u128::to_string).collect(),
    };
    // Serializing plain records into a Vec cannot fail.
    serde_json::to_writer(&mut *out, &form).expect("invariant: an entry serializes");
    out.push(b'\n');
}

/// One event of an entry, as the events sink publishes it: the input record's place,
/// its result, and the record as the ledger stored it when it was created (else the
/// record as submitted).
#[derive(Serialize)]
pub struct EventForm<'a, R: Serialize> {
    pub sequence: u64,
    pub index: usize,
    pub timestamp: u64,
    pub operation: &'static str,
    pub result: &'a EventResult,
    pub record: &'a R,
}

/// A pending transfer that a tick expired.
#[derive(Serialize)]
pub struct ExpiryForm {
    pub sequence: u64,
    pub index: usize,
    pub timestamp: u64,
    pub operation: &'static str,
    pub expired_id: String,
}
