//! What the ledger committed because of one input, gathered on the business-logic thread
//! for the outcome stream (the only thread that can read the ledger).

use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, ResultCode, Transfer};

use super::{Command, apply};
use crate::Ledger;

/// The transfers an input committed (as stored), the accounts it created or changed (as
/// they are after it) and the pending transfers a tick expired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub transfers: Vec<Transfer>,
    pub accounts: Vec<Account>,
    pub expired: Vec<u128>,
}

/// Applies one input exactly as [`apply`] does, and gathers what it committed. The
/// business-logic thread and replay both use it, so a rebuilt outcome stream holds the
/// same entries as the one written live.
pub fn apply_collecting(ledger: &mut Ledger, timestamp: u64, command: &Command) -> (Option<Reply>, Committed) {
    let mut committed = Committed::default();
    let reply = match command {
        Command::Tick => {
            ledger.tick_collecting(timestamp, &mut committed.expired);
            let mut pendings = Vec::with_capacity(committed.expired.len());
            ledger.lookup_transfers(&committed.expired, &mut pendings);
            touched_accounts(ledger, &pendings, &mut committed.accounts);
            return (None, committed);
        }
        Command::Request(request) => apply(ledger, timestamp, command).map(|reply| (request, reply)),
    };
    let Some((request, reply)) = reply else { return (None, committed) };
    match (request, &reply) {
        (Request::CreateTransfers(events), Reply::CreateTransfers(results)) => {
            let ids: Vec<u128> = created(results).map(|index| events[index].id).collect();
            ledger.lookup_transfers(&ids, &mut committed.transfers);
            touched_accounts(ledger, &committed.transfers, &mut committed.accounts);
        }
        (Request::CreateAccounts(events), Reply::CreateAccounts(results)) => {
            let ids: Vec<u128> = created(results).map(|index| events[index].id).collect();
            ledger.lookup_accounts(&ids, &mut committed.accounts);
        }
        _ => {}
    }
    (Some(reply), committed)
}

/// Indices of the events that were created (not those that already existed or failed).
fn created(results: &[tally_codecs::EventResult]) -> impl Iterator<Item = usize> + '_ {
    let created = ResultCode::Created as u32;
    results.iter().enumerate().filter(move |(_, result)| result.status == created).map(|(index, _)| index)
}

/// The accounts on either side of `transfers`, each once, as they are now.
fn touched_accounts(ledger: &Ledger, transfers: &[Transfer], accounts: &mut Vec<Account>) {
    let mut ids: Vec<u128> =
        transfers.iter().flat_map(|transfer| [transfer.debit_account_id, transfer.credit_account_id]).collect();
    ids.sort_unstable();
    ids.dedup();
    ledger.lookup_accounts(&ids, accounts);
}
