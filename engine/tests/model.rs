//! The ledger against a reference model of docs/design.md §3.
//!
//! Random histories of account, limit profile and transfer batches and ticks run on both
//! the `Ledger` and the model in `model/reference.rs`. After every step the results,
//! every account, every transfer, every pending status and every limit profile must be
//! equal, and the invariants must hold on the ledger's own state: conservation per ledger,
//! the balance constraints, totals that fit a u128, and an incremental state hash equal to
//! the one computed from scratch. At the end of each history the account queries must
//! agree with the model.

#[path = "model/hot_cold.rs"]
mod hot_cold;
#[path = "model/plan.rs"]
mod plan;
#[path = "model/reference.rs"]
mod reference;
#[path = "model/rules.rs"]
mod rules;
#[path = "model/strategy.rs"]
mod strategy;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tally_codecs::flags::{account as account_flags, filter as filter_flags, transfer as transfer_flags};
use tally_codecs::{Account, AccountFilter, EventResult, FilterError, LimitProfile, ResultCode, Transfer};
use tally_engine::PendingStatus;

use hot_cold::HotCold;

use plan::{ACCOUNTS_MAX, PROFILES_MAX, Planner, Step};
use reference::Model;
use strategy::{Case, FilterPlan};

/// Steps in one generated history; a transfer step holds up to 8 events.
const STEPS_PER_CASE: std::ops::RangeInclusive<usize> = 50..=150;

/// The hot window the model test runs the ledger with, `(inputs, events)`: two inputs, so
/// that nearly every retry, post, void and query needs the history store (docs/design.md
/// §3.9).
const HOT_WINDOW: (u64, u64) = (2, u64::MAX);

/// A window cut by its events bound instead: six transfer events, fewer than one transfer
/// step can hold, over a long input bound.
const HOT_WINDOW_BY_EVENTS: (u64, u64) = (1_000, 6);

struct Harness {
    ledger: HotCold,
    model: Model,
    planner: Planner,
    /// The largest `overdraft_max` each profile has had: a lowered overdraft leaves
    /// balances that were allowed when they were made.
    overdraft_max_ever: BTreeMap<u32, u128>,
    /// The profiles whose `overdraft_max` has been 0 at some time: only while it is not
    /// does an overdraft bind an account without `debits_must_not_exceed_credits`.
    overdraft_zero_ever: BTreeSet<u32>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_window(HOT_WINDOW)
    }

    fn with_window((inputs, events): (u64, u64)) -> Harness {
        Harness {
            ledger: HotCold::new(inputs, events),
            model: Model::default(),
            planner: Planner::default(),
            overdraft_max_ever: BTreeMap::new(),
            overdraft_zero_ever: BTreeSet::new(),
        }
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let mut got = Vec::new();
        let mut want = Vec::new();
        let events = match step {
            Step::Accounts(advance, events) => {
                let timestamp = advance.timestamp(&self.model);
                self.ledger.create_accounts(timestamp, events, &mut got);
                self.model.create_accounts(timestamp, events, &mut want);
                format!("{events:?}")
            }
            Step::Profiles(advance, events) => {
                let timestamp = advance.timestamp(&self.model);
                self.ledger.upsert_limit_profiles(timestamp, events, &mut got);
                self.model.upsert_limit_profiles(timestamp, events, &mut want);
                format!("{events:?}")
            }
            Step::Transfers(advance, plans) => {
                let timestamp = advance.timestamp(&self.model);
                let events: Vec<Transfer> = plans.iter().map(|plan| self.planner.resolve(&self.model, plan)).collect();
                self.ledger.create_transfers(timestamp, &events, &mut got);
                self.model.create_transfers(timestamp, &events, &mut want);
                format!("{events:?}")
            }
            Step::Tick(advance) => {
                let timestamp = advance.timestamp(&self.model);
                self.ledger.tick(timestamp);
                self.model.tick(timestamp);
                String::new()
            }
        };
        prop_assert_eq!(describe(&got), describe(&want), "results of {}", events);
        for id in 0..=PROFILES_MAX {
            if let Some(profile) = self.model.limit_profile(id) {
                let ever = self.overdraft_max_ever.entry(id).or_default();
                *ever = (*ever).max(profile.overdraft_max);
                if profile.overdraft_max == 0 {
                    self.overdraft_zero_ever.insert(id);
                }
            }
        }
        self.check_state()
            .map_err(|error| TestCaseError::fail(format!("{error}\nafter {step:?}\nresolved as {events}")))
    }

    /// Sends one batch of transfers to both, checks the results and the state, and returns
    /// the codes, for the named tests below.
    fn send(&mut self, timestamp: u64, events: &[Transfer]) -> Vec<ResultCode> {
        let mut got = Vec::new();
        let mut want = Vec::new();
        self.ledger.create_transfers(timestamp, events, &mut got);
        self.model.create_transfers(timestamp, events, &mut want);
        events.iter().for_each(|event| self.planner.record(*event));
        assert_eq!(describe(&got), describe(&want), "ledger (left) and model (right) disagree on {events:?}");
        if let Err(error) = self.check_state() {
            panic!("after {events:?}: {error}");
        }
        got.iter().map(|result| ResultCode::from_u32(result.status).expect("a known code")).collect()
    }

    fn check_state(&mut self) -> Result<(), TestCaseError> {
        let (ledger, model) = (&mut self.ledger, &self.model);
        prop_assert_eq!(ledger.last_timestamp(), model.last_timestamp());

        let account_ids: Vec<u128> = (0..=ACCOUNTS_MAX + 1).chain([u128::MAX]).collect();
        let mut accounts = Vec::new();
        ledger.lookup_accounts(&account_ids, &mut accounts);
        let want: Vec<Account> = account_ids.iter().filter_map(|id| model.account(*id)).collect();
        prop_assert_eq!(&accounts, &want);

        let mut transfer_ids = self.planner.sent_ids();
        transfer_ids.extend([0, 1, u128::MAX]);
        let mut transfers = Vec::new();
        ledger.lookup_transfers(&transfer_ids, &mut transfers);
        let want: Vec<Transfer> = transfer_ids.iter().filter_map(|id| model.transfer(*id)).collect();
        prop_assert_eq!(transfers, want);
        for id in &transfer_ids {
            prop_assert_eq!(ledger.pending_status(*id), model.pending_status(*id), "pending status of {}", id);
        }

        for id in 0..=PROFILES_MAX + 1 {
            prop_assert_eq!(ledger.lookup_limit_profile(id), model.limit_profile(id), "limit profile {}", id);
        }

        check_conservation(&accounts)?;
        let (state_hash, recomputed) = (ledger.state_hash(), ledger.recompute_state_hash());
        self.check_balance_constraints(&accounts)?;
        prop_assert_eq!(state_hash, recomputed, "incremental state hash");
        Ok(())
    }

    /// The constraints of §3.2 steps 13–15 hold on every account, whatever happened since;
    /// an overdraft binds an account without balance flags too.
    fn check_balance_constraints(&self, accounts: &[Account]) -> Result<(), TestCaseError> {
        for account in accounts {
            let debits = account.debits_pending.checked_add(account.debits_posted);
            let credits = account.credits_pending.checked_add(account.credits_posted);
            prop_assert!(debits.is_some() && credits.is_some(), "totals overflow: {:?}", account);
            let (debits, credits) = (debits.unwrap_or_default(), credits.unwrap_or_default());
            let profile = account.limit_profile;
            let overdraft_binds = profile != 0 && !self.overdraft_zero_ever.contains(&profile);
            if account.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0 || overdraft_binds {
                let overdraft = self.overdraft_max_ever.get(&profile).copied().unwrap_or(0);
                let allowed = account.credits_posted.saturating_add(overdraft);
                prop_assert!(debits <= allowed, "debits exceed credits + overdraft {}: {:?}", overdraft, account);
            }
            if account.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0 {
                prop_assert!(credits <= account.debits_posted, "credits exceed debits: {:?}", account);
            }
        }
        Ok(())
    }

    fn check_queries(&mut self, filters: &[FilterPlan]) -> Result<(), TestCaseError> {
        let mut timestamps: Vec<u64> =
            self.planner.sent_ids().iter().filter_map(|id| self.model.transfer(*id)).map(|t| t.timestamp).collect();
        timestamps.sort_unstable();
        let every = [
            filter_flags::DEBITS | filter_flags::CREDITS,
            filter_flags::DEBITS | filter_flags::CREDITS | filter_flags::REVERSED,
            filter_flags::DEBITS,
            filter_flags::CREDITS,
        ];
        let mut all = Vec::new();
        for account_id in 1..=ACCOUNTS_MAX + 1 {
            for flags in every {
                all.push(AccountFilter { account_id, flags, limit: 8_189, ..AccountFilter::default() });
            }
        }
        let planned = filters.iter().map(|plan| {
            let bound = |pick: usize| if timestamps.is_empty() { 0 } else { timestamps[pick % timestamps.len()] };
            let (timestamp_min, timestamp_max) = plan.bounds.map_or((0, 0), |(min, max)| (bound(min), bound(max)));
            AccountFilter {
                account_id: plan.account_id,
                flags: plan.flags,
                limit: plan.limit,
                timestamp_min,
                timestamp_max,
                ..AccountFilter::default()
            }
        });
        for filter in all.into_iter().chain(planned) {
            let mut transfers = Vec::new();
            let transfers = self.ledger.get_account_transfers(&filter, &mut transfers).map(|()| transfers);
            prop_assert_eq!(transfers, self.model.account_transfers(&filter), "transfers for {:?}", filter);
            let mut balances = Vec::new();
            let balances = self.ledger.get_account_balances(&filter, &mut balances).map(|()| balances);
            prop_assert_eq!(balances, self.model.account_balances(&filter), "balances for {:?}", filter);
        }
        Ok(())
    }
}

/// A sum that cannot overflow: the balances near u128::MAX add up past it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WideSum {
    carries: u32,
    low: u128,
}

impl WideSum {
    fn add(&mut self, value: u128) {
        let (low, carried) = self.low.overflowing_add(value);
        self.low = low;
        self.carries += u32::from(carried);
    }
}

/// Invariant 1 of the house design: per ledger, Σ debits = Σ credits, pending and posted.
fn check_conservation(accounts: &[Account]) -> Result<(), TestCaseError> {
    let mut sums: BTreeMap<u32, [WideSum; 4]> = BTreeMap::new();
    for account in accounts {
        let sum = sums.entry(account.ledger).or_default();
        sum[0].add(account.debits_pending);
        sum[1].add(account.credits_pending);
        sum[2].add(account.debits_posted);
        sum[3].add(account.credits_posted);
    }
    for (ledger, sum) in sums {
        prop_assert_eq!(sum[0], sum[1], "pending not conserved on ledger {}", ledger);
        prop_assert_eq!(sum[2], sum[3], "posted not conserved on ledger {}", ledger);
    }
    Ok(())
}

/// Results as `(timestamp, code name)`, so that a mismatch reads well.
fn describe(results: &[EventResult]) -> Vec<(u64, String)> {
    let name = |status: u32| {
        ResultCode::from_u32(status).map_or_else(|| format!("unknown {status}"), |code| code.name().into())
    };
    results.iter().map(|result| (result.timestamp, name(result.status))).collect()
}

fn run_case(case: &Case, window: (u64, u64)) -> Result<(), TestCaseError> {
    let mut harness = Harness::with_window(window);
    harness.run(&Step::Profiles(plan::Advance::By(1), case.profiles.clone()))?;
    harness.run(&Step::Accounts(plan::Advance::By(1), case.accounts.clone()))?;
    for (index, step) in case.steps.iter().enumerate() {
        harness.run(step).map_err(|error| TestCaseError::fail(format!("step {index}: {error}")))?;
    }
    harness.check_queries(&case.filters)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // The regressions file would land outside this test's files; a failure prints
        // its minimal case instead, to be turned into a named test.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn ledger_matches_reference_model(case in strategy::case(STEPS_PER_CASE)) {
        run_case(&case, HOT_WINDOW)?;
    }

    #[test]
    fn ledger_matches_reference_model_with_a_window_bounded_by_events(case in strategy::case(STEPS_PER_CASE)) {
        run_case(&case, HOT_WINDOW_BY_EVENTS)?;
    }
}

/// Accounts 1 to 3 on ledger 1, with `history`, as the named tests below start.
fn three_accounts() -> Harness {
    let mut harness = Harness::new();
    let accounts: Vec<Account> = (1..=3)
        .map(|id| Account { id, ledger: 1, code: 1, flags: account_flags::HISTORY, ..Account::default() })
        .collect();
    harness.run(&Step::Accounts(plan::Advance::By(1), accounts)).expect("accounts");
    harness
}

fn transfer(id: u128, debit_account_id: u128, credit_account_id: u128, amount: u128, flags: u16) -> Transfer {
    Transfer { id, debit_account_id, credit_account_id, amount, flags, ledger: 1, code: 1, ..Transfer::default() }
}

/// §3.5: "the first event without [`linked`] closes the chain", so a failed chain says
/// nothing about the events after it.
#[test]
fn a_failed_chain_does_not_fail_the_events_after_it() {
    let mut harness = three_accounts();
    let batch = [transfer(10, 1, 2, 5, transfer_flags::LINKED), transfer(11, 0, 2, 5, 0), transfer(12, 1, 2, 5, 0)];
    let codes = harness.send(0, &batch);
    assert_eq!(codes, [ResultCode::LinkedEventFailed, ResultCode::DebitAccountIdMustNotBeZero, ResultCode::Created]);
}

/// §3.4: "Inside a chain, a post or void of a transfer whose deadline has passed is still
/// `pending_transfer_expired`; the release itself happens just after the chain."
#[test]
fn expiry_inside_a_chain_is_released_just_after_it() {
    let mut harness = three_accounts();
    let pending = Transfer { timeout: 1, ..transfer(10, 1, 2, 5, transfer_flags::PENDING) };
    assert_eq!(harness.send(1_000, &[pending]), [ResultCode::Created]);
    let deadline = 1_000 + 1_000_000_000;
    // The chain starts 1 ns before the deadline; its second event is at the deadline.
    let post = Transfer { pending_id: 10, ..transfer(12, 0, 0, 0, transfer_flags::POST_PENDING_TRANSFER) };
    let chain = [transfer(11, 1, 3, 1, transfer_flags::LINKED), post];
    let codes = harness.send(deadline - 1, &chain);
    assert_eq!(codes, [ResultCode::LinkedEventFailed, ResultCode::PendingTransferExpired]);
    assert_eq!(harness.ledger.last_timestamp(), deadline);
    assert_eq!(harness.ledger.pending_status(10), Some(PendingStatus::Expired), "released after the chain");
}

/// §3.2 step 11: "clamped down to … credits_posted + overdraft − debits_pending −
/// debits_posted": when that is above `u128::MAX` nothing is clamped, and the transfer
/// then overflows instead of being clamped to what fits.
#[test]
fn balancing_clamp_is_exact_near_u128_max() {
    let mut harness = Harness::new();
    let profile = LimitProfile { id: 1, ledger: 1, overdraft_max: u128::MAX, ..LimitProfile::default() };
    harness.run(&Step::Profiles(plan::Advance::By(1), vec![profile])).expect("profile");
    let limited = Account {
        id: 1,
        ledger: 1,
        code: 1,
        flags: account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        limit_profile: 1,
        ..Account::default()
    };
    let other = Account { id: 2, ledger: 1, code: 1, ..Account::default() };
    harness.run(&Step::Accounts(plan::Advance::By(1), vec![limited, other])).expect("accounts");
    // Credits 10, debits 5: the clamp is 10 + u128::MAX − 5, above u128::MAX.
    let balancing = transfer(12, 1, 2, u128::MAX - 2, transfer_flags::BALANCING_DEBIT);
    let codes = harness.send(0, &[transfer(10, 2, 1, 10, 0), transfer(11, 1, 2, 5, 0), balancing]);
    assert_eq!(codes, [ResultCode::Created, ResultCode::Created, ResultCode::OverflowsDebitsPosted]);
}

/// design.md names only the void as reopening what a closing transfer closed; this model
/// (and the engine) reopen on expiry as well, as an expiry is a void the ledger makes.
#[test]
fn expiry_of_a_closing_transfer_reopens_the_account() {
    let mut harness = three_accounts();
    let closing =
        Transfer { timeout: 1, ..transfer(10, 1, 2, 5, transfer_flags::PENDING | transfer_flags::CLOSING_DEBIT) };
    assert_eq!(harness.send(1_000, &[closing]), [ResultCode::Created]);
    assert_eq!(harness.send(0, &[transfer(11, 1, 2, 5, 0)]), [ResultCode::DebitAccountAlreadyClosed]);
    assert_eq!(harness.send(1_000 + 1_000_000_000, &[transfer(12, 1, 2, 5, 0)]), [ResultCode::Created]);
}

/// §3.6 "balances right after each of those transfers (including posts, voids and
/// expiries)": read as one balance row per expiry too, at the timestamp it was released.
#[test]
fn balance_history_has_a_row_for_an_expiry() {
    let mut harness = three_accounts();
    let pending = Transfer { timeout: 1, ..transfer(10, 1, 2, 5, transfer_flags::PENDING) };
    assert_eq!(harness.send(1_000, &[pending]), [ResultCode::Created]);
    harness.run(&Step::Tick(plan::Advance::By(2_000_000_000))).expect("tick");
    let filter = AccountFilter { account_id: 1, flags: filter_flags::DEBITS, limit: 10, ..AccountFilter::default() };
    let mut rows = Vec::new();
    harness.ledger.get_account_balances(&filter, &mut rows).expect("a valid filter");
    assert_eq!(Ok(rows.clone()), harness.model.account_balances(&filter));
    let pending_then_released: Vec<(u128, u64)> = rows.iter().map(|row| (row.debits_pending, row.timestamp)).collect();
    assert_eq!(pending_then_released, [(5, 1_000), (0, harness.ledger.last_timestamp())]);
}

/// §3.6: a filter may ask for up to 8 189 rows, which needs more transfers than a
/// generated history makes; asking for more is refused, not silently cut.
#[test]
fn account_transfers_return_up_to_8189_rows_and_refuse_a_larger_limit() {
    let mut harness = Harness::new();
    let accounts: Vec<Account> = (1..=2)
        .map(|id| Account { id, ledger: 1, code: 1, flags: account_flags::HISTORY, ..Account::default() })
        .collect();
    harness.run(&Step::Accounts(plan::Advance::By(1), accounts)).expect("accounts");
    let transfers: Vec<Transfer> = (1..=8_200)
        .map(|id| Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 1,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .collect();
    let mut results = Vec::new();
    harness.ledger.create_transfers(10, &transfers, &mut results);
    harness.model.create_transfers(10, &transfers, &mut Vec::new());
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
    for (account_id, flags) in [(1, filter_flags::DEBITS), (2, filter_flags::CREDITS | filter_flags::REVERSED)] {
        let filter = AccountFilter { account_id, flags, limit: 8_189, ..AccountFilter::default() };
        let mut rows = Vec::new();
        harness.ledger.get_account_transfers(&filter, &mut rows).expect("a valid filter");
        assert_eq!(rows.len(), 8_189);
        assert_eq!(Ok(rows), harness.model.account_transfers(&filter));
        let mut balances = Vec::new();
        harness.ledger.get_account_balances(&filter, &mut balances).expect("a valid filter");
        assert_eq!(Ok(balances), harness.model.account_balances(&filter));

        let too_many = AccountFilter { limit: 8_190, ..filter };
        let refused = Err(FilterError::LimitAboveMax { limit: 8_190 });
        assert_eq!(harness.ledger.get_account_transfers(&too_many, &mut Vec::new()), refused);
        assert_eq!(harness.model.account_transfers(&too_many), refused.map(|()| Vec::new()));
        assert_eq!(harness.ledger.get_account_balances(&too_many, &mut Vec::new()), refused);
    }
}

/// §3.2 step 16 for a window of up to 1 024 s: whole seconds. A debit made in second 10
/// counts through second 10 + 60 and not from second 71 on, on the engine and the model.
#[test]
fn window_edge_is_the_end_of_the_last_second_that_counts() {
    let mut harness = Harness::new();
    let profile =
        LimitProfile { id: 1, ledger: 1, window_debit_max: 100, window_seconds: 60, ..LimitProfile::default() };
    harness.run(&Step::Profiles(plan::Advance::By(1), vec![profile])).expect("profile");
    let payer = Account { id: 1, ledger: 1, code: 1, limit_profile: 1, ..Account::default() };
    let payee = Account { id: 2, ledger: 1, code: 1, ..Account::default() };
    harness.run(&Step::Accounts(plan::Advance::By(1), vec![payer, payee])).expect("accounts");
    let second = 1_000_000_000;
    assert_eq!(harness.send(10 * second + second / 2, &[transfer(10, 1, 2, 100, 0)]), [ResultCode::Created]);
    let last_counted = 71 * second - 1;
    assert_eq!(harness.send(last_counted, &[transfer(11, 1, 2, 1, 0)]), [ResultCode::ExceedsWindowDebitLimit]);
    assert_eq!(harness.send(last_counted + 1, &[transfer(12, 1, 2, 100, 0)]), [ResultCode::Created]);
}
