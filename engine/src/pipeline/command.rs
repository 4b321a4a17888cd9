//! What flows through the input ring, and how the business logic applies it.

use tally_codecs::wire::{Reply, Request};
use tally_codecs::{EventResult, Operation};

use crate::Ledger;
use crate::cold::ColdFacts;

/// One input of the pipeline: a client's request, or a tick that advances time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Request(Request),
    Tick,
}

impl Command {
    pub fn operation(&self) -> Operation {
        match self {
            Command::Request(request) => request.operation(),
            Command::Tick => Operation::Tick,
        }
    }

    /// Mutations go through the journal; queries only need their place in the order. A
    /// create or upsert with no events changes nothing, so it is not one: it is answered
    /// without a journal record, and [`apply`] keeps it away from the ledger.
    pub fn is_mutation(&self) -> bool {
        match self {
            Command::Tick => true,
            Command::Request(request) => request.operation().is_mutation() && self.events() > 0,
        }
    }

    /// How many events (records, ids or filters) the command carries.
    pub fn events(&self) -> usize {
        match self {
            Command::Request(Request::CreateAccounts(events)) => events.len(),
            Command::Request(Request::CreateTransfers(events)) => events.len(),
            Command::Request(Request::UpsertLimitProfiles(events)) => events.len(),
            Command::Request(Request::LookupAccounts(ids) | Request::LookupTransfers(ids)) => ids.len(),
            Command::Request(Request::GetAccountTransfers(_) | Request::GetAccountBalances(_)) => 1,
            Command::Tick => 0,
        }
    }
}

/// Applies one input, the mutation at journal `sequence` (or a query, for which
/// `sequence` is ignored), at its sequencer timestamp, with the cold facts gathered for it
/// ([`crate::cold::gather`]; empty when nothing can have left the hot window): the single
/// definition of what an input does, used by the business-logic thread and by replay
/// alike.
pub fn apply(ledger: &mut Ledger, sequence: u64, timestamp: u64, command: &Command, cold: ColdFacts) -> Option<Reply> {
    let sequence = if command.is_mutation() { sequence } else { 0 };
    ledger.begin_input(sequence, crate::hot_window::window_events(command), cold);
    let reply = apply_input(ledger, timestamp, command);
    ledger.end_input();
    reply
}

fn apply_input(ledger: &mut Ledger, timestamp: u64, command: &Command) -> Option<Reply> {
    let request = match command {
        Command::Tick => {
            ledger.tick(timestamp);
            return None;
        }
        Command::Request(request) => request,
    };
    let reply = match request {
        Request::CreateAccounts(events) => Reply::CreateAccounts(results(events.len(), |results| {
            ledger.create_accounts(timestamp, events, results);
        })),
        Request::CreateTransfers(events) => Reply::CreateTransfers(results(events.len(), |results| {
            ledger.create_transfers(timestamp, events, results);
        })),
        Request::UpsertLimitProfiles(events) => Reply::UpsertLimitProfiles(results(events.len(), |results| {
            ledger.upsert_limit_profiles(timestamp, events, results);
        })),
        Request::LookupAccounts(ids) => {
            let mut found = Vec::with_capacity(ids.len());
            ledger.lookup_accounts(ids, &mut found);
            Reply::LookupAccounts(found)
        }
        Request::LookupTransfers(ids) => {
            let mut found = Vec::with_capacity(ids.len());
            ledger.lookup_transfers(ids, &mut found);
            Reply::LookupTransfers(found)
        }
        // The gateway and `tally exec` refuse an invalid filter with its own error before it
        // is submitted (docs/design.md §3.6); one that gets here anyway selects nothing.
        Request::GetAccountTransfers(filter) => {
            let mut found = Vec::new();
            if ledger.get_account_transfers(filter, &mut found).is_err() {
                found.clear();
            }
            Reply::GetAccountTransfers(found)
        }
        Request::GetAccountBalances(filter) => {
            let mut found = Vec::new();
            if ledger.get_account_balances(filter, &mut found).is_err() {
                found.clear();
            }
            Reply::GetAccountBalances(found)
        }
    };
    Some(reply)
}

/// The results of a batch of `count` events. An empty batch does not reach the ledger:
/// the ledger would spend a commit timestamp on it, a change of state that the journal
/// (which skips empty batches, see [`Command::is_mutation`]) would not hold.
fn results(count: usize, apply_batch: impl FnOnce(&mut Vec<EventResult>)) -> Vec<EventResult> {
    let mut results = Vec::with_capacity(count);
    if count > 0 {
        apply_batch(&mut results);
    }
    results
}
