//! The ledger's time when the clock that stamps its inputs steps back: commit timestamps
//! stay strictly increasing and nothing expires early (docs/design.md §3).

use tally_codecs::flags::transfer as transfer_flags;
use tally_codecs::{Account, EventResult, ResultCode, Transfer};
use tally_engine::Ledger;

const NS_PER_S: u64 = 1_000_000_000;

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Account::default() }
}

fn transfer(id: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: 1, credit_account_id: 2, amount, ledger: 1, code: 1, ..Transfer::default() }
}

fn created_at(results: &[EventResult]) -> Vec<u64> {
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32), "{results:?}");
    results.iter().map(|result| result.timestamp).collect()
}

#[test]
fn inputs_stamped_before_the_last_commit_commit_after_it_and_expire_nothing_early() {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    let start = 100 * NS_PER_S;
    ledger.create_accounts(start, &[account(1), account(2)], &mut results);
    assert_eq!(created_at(&results), [start, start + 1]);

    // A pending transfer of 10 s, then the clock steps back a minute.
    let pending = Transfer { flags: transfer_flags::PENDING, timeout: 10, ..transfer(10, 7) };
    results.clear();
    ledger.create_transfers(start + 5, &[pending], &mut results);
    assert_eq!(created_at(&results), [start + 5]);
    let deadline = start + 5 + 10 * NS_PER_S;

    let back = start - 60 * NS_PER_S;
    results.clear();
    ledger.create_transfers(back, &[transfer(11, 1), transfer(12, 1)], &mut results);
    assert_eq!(created_at(&results), [start + 6, start + 7], "the batch commits after the last commit");
    ledger.tick(back + NS_PER_S);
    assert_eq!(ledger.last_timestamp(), start + 8, "a tick stamped in the past still takes the next timestamp");
    assert_eq!(ledger.next_expiry(), Some(deadline), "a tick stamped in the past expires nothing");

    // The stored records carry the commit timestamps, not the stepped-back ones.
    let mut stored = Vec::new();
    ledger.lookup_transfers(&[10, 11, 12], &mut stored);
    let stamps: Vec<u64> = stored.iter().map(|transfer| transfer.timestamp).collect();
    assert_eq!(stamps, [start + 5, start + 6, start + 7]);

    // Once the clock is past the deadline again, the pending transfer expires.
    ledger.tick(deadline);
    assert_eq!(ledger.next_expiry(), None);
    let mut accounts = Vec::new();
    ledger.lookup_accounts(&[1], &mut accounts);
    assert_eq!((accounts[0].debits_pending, accounts[0].debits_posted), (0, 2));
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash());
}
