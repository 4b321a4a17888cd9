//! Builders and assertions shared by the result code tests.

pub use tally_codecs::flags::{account as account_flags, transfer as transfer_flags};
pub use tally_codecs::{Account, EventResult, LimitProfile, ResultCode, Transfer};
pub use tally_engine::{Ledger, PendingStatus};

pub use ResultCode as R;

pub const NS_PER_S: u64 = 1_000_000_000;

pub fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Account::default() }
}

pub fn account_with(id: u128, flags: u16, limit_profile: u32) -> Account {
    Account { flags, limit_profile, ..account(id) }
}

pub fn transfer(id: u128, debit_account_id: u128, credit_account_id: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id, credit_account_id, amount, ledger: 1, code: 1, ..Transfer::default() }
}

pub fn with_flags(transfer: Transfer, flags: u16) -> Transfer {
    Transfer { flags, ..transfer }
}

pub fn pending(id: u128, debit_account_id: u128, credit_account_id: u128, amount: u128) -> Transfer {
    with_flags(transfer(id, debit_account_id, credit_account_id, amount), transfer_flags::PENDING)
}

/// A post (or void, with `void`) that says nothing but its pending id and amount.
pub fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer { id, pending_id, amount, flags: transfer_flags::POST_PENDING_TRANSFER, ..Transfer::default() }
}

pub fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer { id, pending_id, flags: transfer_flags::VOID_PENDING_TRANSFER, ..Transfer::default() }
}

pub fn profile(id: u32) -> LimitProfile {
    LimitProfile { id, ledger: 1, ..LimitProfile::default() }
}

pub fn codes(results: &[EventResult]) -> Vec<ResultCode> {
    results.iter().map(|result| ResultCode::from_u32(result.status).expect("a known result code")).collect()
}

pub fn create_accounts(ledger: &mut Ledger, events: &[Account]) -> Vec<ResultCode> {
    let mut results = Vec::new();
    ledger.create_accounts(0, events, &mut results);
    codes(&results)
}

pub fn create_transfers(ledger: &mut Ledger, events: &[Transfer]) -> Vec<ResultCode> {
    let mut results = Vec::new();
    ledger.create_transfers(0, events, &mut results);
    codes(&results)
}

pub fn upsert_profiles(ledger: &mut Ledger, events: &[LimitProfile]) -> Vec<ResultCode> {
    let mut results = Vec::new();
    ledger.upsert_limit_profiles(0, events, &mut results);
    codes(&results)
}

/// A ledger with these profiles and accounts, all created.
pub fn ledger_with(profiles: &[LimitProfile], accounts: &[Account]) -> Ledger {
    let mut ledger = Ledger::new();
    if !profiles.is_empty() {
        assert!(upsert_profiles(&mut ledger, profiles).iter().all(|code| *code == R::Created));
    }
    if !accounts.is_empty() {
        assert!(create_accounts(&mut ledger, accounts).iter().all(|code| *code == R::Created));
    }
    ledger
}

/// Accounts 1 and 2 on ledger 1, without flags.
pub fn two_accounts() -> Ledger {
    ledger_with(&[], &[account(1), account(2)])
}

pub fn succeed(ledger: &mut Ledger, events: &[Transfer]) {
    assert_eq!(create_transfers(ledger, events), vec![R::Created; events.len()], "{events:?}");
}

pub fn lookup_account(ledger: &Ledger, id: u128) -> Account {
    let mut found = Vec::new();
    ledger.lookup_accounts(&[id], &mut found);
    found.pop().expect("the account exists")
}

pub fn balances(ledger: &Ledger) -> Vec<(u128, u128, u128, u128, u16)> {
    let mut accounts = Vec::new();
    ledger.lookup_accounts(&(1..=9).collect::<Vec<u128>>(), &mut accounts);
    accounts.iter().map(|a| (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.flags)).collect()
}

/// `event` fails with `code`, is not stored, and no balance or account flag changes.
pub fn transfer_fails(ledger: &mut Ledger, event: Transfer, code: ResultCode) {
    let before = balances(ledger);
    let stored_before = lookup_transfer(ledger, event.id);
    assert_eq!(create_transfers(ledger, &[event]), vec![code], "{event:?}");
    assert_eq!(balances(ledger), before, "a failed transfer changed balances: {event:?}");
    assert_eq!(lookup_transfer(ledger, event.id), stored_before, "a failed transfer was stored: {event:?}");
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash());
}

pub fn account_fails(ledger: &mut Ledger, event: Account, code: ResultCode) {
    let before = balances(ledger);
    assert_eq!(create_accounts(ledger, &[event]), vec![code], "{event:?}");
    assert_eq!(balances(ledger), before, "a failed account changed the ledger: {event:?}");
}

pub fn profile_fails(ledger: &mut Ledger, event: LimitProfile, code: ResultCode) {
    let before = ledger.lookup_limit_profile(event.id);
    assert_eq!(upsert_profiles(ledger, &[event]), vec![code], "{event:?}");
    assert_eq!(ledger.lookup_limit_profile(event.id), before, "a failed upsert changed the profile: {event:?}");
}

pub fn lookup_transfer(ledger: &Ledger, id: u128) -> Option<Transfer> {
    let mut found = Vec::new();
    ledger.lookup_transfers(&[id], &mut found);
    found.pop()
}
