//! What the ledger committed because of one input, gathered on the business-logic thread
//! for the outcome stream (the only thread that can read the ledger).

use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, ResultCode, Transfer};

use super::{Command, apply};
use crate::Ledger;
use crate::cold::ColdFacts;

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
pub fn apply_collecting(
    ledger: &mut Ledger,
    sequence: u64,
    timestamp: u64,
    command: &Command,
    cold: ColdFacts,
) -> (Option<Reply>, Committed) {
    let mut committed = Committed::default();
    let reply =
        ledger.collect_expired(&mut committed.expired, |ledger| apply(ledger, sequence, timestamp, command, cold));
    let mut touched = Vec::new();
    // A pending transfer that just expired is still held (its state stays hot for the hot
    // window after it is resolved), even when its own commit has left the hot state.
    let expired = committed.expired.iter().filter_map(|id| ledger.held_pending_transfer(*id));
    for pending in expired {
        touched.extend([pending.debit_account_id, pending.credit_account_id]);
    }
    match (command, &reply) {
        (Command::Request(Request::CreateTransfers(_)), Some(Reply::CreateTransfers(_))) => {
            // The transfers it created are the newest of the hot window (the ledger
            // appends each as it commits it): the records the events answered `created`
            // name, in event order (checked against the look-up by id in the tests below).
            ledger.input_transfers(&mut committed.transfers);
            touched.reserve(2 * committed.transfers.len());
            for transfer in &committed.transfers {
                touched.extend([transfer.debit_account_id, transfer.credit_account_id]);
            }
        }
        (Command::Request(Request::CreateAccounts(events)), Some(Reply::CreateAccounts(results))) => {
            touched.extend(created(results).map(|index| events[index].id));
        }
        _ => {}
    }
    touched.sort_unstable();
    touched.dedup();
    ledger.lookup_accounts(&touched, &mut committed.accounts);
    (reply, committed)
}

/// Indices of the events that were created (not those that already existed or failed).
fn created(results: &[tally_codecs::EventResult]) -> impl Iterator<Item = usize> + '_ {
    let created = ResultCode::Created as u32;
    results.iter().enumerate().filter(move |(_, result)| result.status == created).map(|(index, _)| index)
}
