//! A reference model of docs/design.md §3, written to be obviously right rather than fast:
//! ordered maps, a full copy of the state to undo a linked chain, linear scans for the
//! queries and for expiry, and checked arithmetic everywhere. It shares no code with
//! `engine/src`; only the record types and result codes come from `tally_codecs`.

use std::collections::{BTreeMap, BTreeSet};

use tally_codecs::flags::{account as account_flags, filter as filter_flags, transfer as transfer_flags};
use tally_codecs::{
    Account, AccountBalance, AccountFilter, EventResult, FilterError, LimitProfile, ResultCode, Transfer,
};
use tally_engine::PendingStatus;

use crate::rules::{
    account_exists, check_against_pending, check_overflows, check_transfer_fields, deadline, exceeds, headroom,
    transfer_exists, window_counts,
};

/// The most rows one query returns (§3.6).
const QUERY_ROWS_MAX: u32 = 8_189;

/// One row of an account's balance history and the side the account was on.
#[derive(Clone, Copy, Debug)]
struct HistoryRow {
    debit_side: bool,
    balance: AccountBalance,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    accounts: BTreeMap<u128, Account>,
    transfers: BTreeMap<u128, Transfer>,
    /// Transfer ids in the order they were created (= ascending timestamp).
    transfer_order: Vec<u128>,
    statuses: BTreeMap<u128, PendingStatus>,
    profiles: BTreeMap<u32, LimitProfile>,
    failed_account_ids: BTreeSet<u128>,
    failed_transfer_ids: BTreeSet<u128>,
    /// Per debit account: (timestamp, amount) of every debit it made, for the window limit.
    debits_made: BTreeMap<u128, Vec<(u64, u128)>>,
    /// Per account: its balances after each transfer and each expiry that touched it.
    history: BTreeMap<u128, Vec<HistoryRow>>,
    last_timestamp: u64,
}

impl Model {
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    pub fn account(&self, id: u128) -> Option<Account> {
        self.accounts.get(&id).copied()
    }

    pub fn transfer(&self, id: u128) -> Option<Transfer> {
        self.transfers.get(&id).copied()
    }

    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.statuses.get(&id).copied()
    }

    /// The deadlines of the transfers that are still pending, soonest first.
    pub fn pending_deadlines(&self) -> Vec<u64> {
        let live = self.statuses.iter().filter(|(_, status)| **status == PendingStatus::Pending);
        let mut deadlines: Vec<u64> = live.filter_map(|(id, _)| deadline(&self.transfers[id])).collect();
        deadlines.sort_unstable();
        deadlines
    }

    pub fn limit_profile(&self, id: u32) -> Option<LimitProfile> {
        self.profiles.get(&id).copied()
    }

    pub fn create_accounts(&mut self, timestamp: u64, events: &[Account], results: &mut Vec<EventResult>) {
        let linked = |event: &Account| event.flags & account_flags::LINKED != 0;
        self.run_batch(timestamp, events, linked, Model::create_account, results);
    }

    pub fn create_transfers(&mut self, timestamp: u64, events: &[Transfer], results: &mut Vec<EventResult>) {
        let linked = |event: &Transfer| event.flags & transfer_flags::LINKED != 0;
        self.run_batch(timestamp, events, linked, Model::create_transfer, results);
    }

    pub fn upsert_limit_profiles(&mut self, timestamp: u64, events: &[LimitProfile], results: &mut Vec<EventResult>) {
        // Limit profiles have no `linked` flag, so they never form chains.
        let upsert = |model: &mut Model, event: &LimitProfile, now: u64| {
            let code = model.upsert_limit_profile(event, now);
            let stored = model.profiles.get(&event.id).filter(|_| code == ResultCode::Exists);
            (code, stored.map_or(now, |profile| profile.timestamp))
        };
        self.run_batch(timestamp, events, |_| false, upsert, results);
    }

    /// §3.4: a tick commits one timestamp and expires what is due at it.
    pub fn tick(&mut self, timestamp: u64) {
        let now = timestamp.max(self.last_timestamp + 1);
        self.expire(now);
        self.last_timestamp = now;
    }

    /// The shared batch logic of §3 and §3.5: commit timestamps, expiry outside chains,
    /// chains that fail as a whole, and a chain left open at the end of the batch.
    fn run_batch<E>(
        &mut self,
        timestamp: u64,
        events: &[E],
        linked: impl Fn(&E) -> bool,
        apply: impl Fn(&mut Model, &E, u64) -> (ResultCode, u64),
        results: &mut Vec<EventResult>,
    ) {
        if events.is_empty() {
            return;
        }
        let base = timestamp.max(self.last_timestamp + 1);
        let first_result = results.len();
        // The chain's first index and the state to restore if it fails.
        let mut chain: Option<(usize, Box<Model>)> = None;
        let mut chain_broken = false;
        for (index, event) in events.iter().enumerate() {
            let now = base + index as u64;
            let event_linked = linked(event);
            let last_event = index == events.len() - 1;
            if chain.is_none() {
                // §3.4: expiry runs before each event that is not inside an open chain.
                self.expire(now);
                if event_linked {
                    chain = Some((index, Box::new(self.clone())));
                }
            }
            // §3.5: the last event of a chain left open gets `linked_event_chain_open`, even
            // when an earlier event of the chain failed; after a failure nothing more of the
            // chain is evaluated.
            let (code, reported) = if event_linked && last_event {
                (ResultCode::LinkedEventChainOpen, now)
            } else if chain_broken {
                (ResultCode::LinkedEventFailed, now)
            } else {
                apply(self, event, now)
            };
            if let Some((chain_first, saved)) = chain.as_ref().filter(|_| !code.is_ok() && !chain_broken) {
                self.undo_chain(saved);
                // Failed with the chain: each result carries its own commit timestamp again.
                for (position, result) in results[first_result + chain_first..].iter_mut().enumerate() {
                    result.status = ResultCode::LinkedEventFailed as u32;
                    result.timestamp = base + (chain_first + position) as u64;
                }
                chain_broken = true;
            }
            results.push(EventResult { timestamp: reported, status: code as u32, reserved: 0 });
            if chain.is_some() && (!event_linked || last_event) {
                // §3.5: the first event without `linked` closes the chain.
                chain = None;
                chain_broken = false;
                // §3.4: what fell due inside the chain is released just after it.
                self.expire(now);
            }
        }
        self.last_timestamp = base + events.len() as u64 - 1;
    }

    /// Restores the state from before a chain, except the ids that failed transiently
    /// inside it (§3.5: they stay remembered).
    fn undo_chain(&mut self, saved: &Model) {
        let failed_account_ids = std::mem::take(&mut self.failed_account_ids);
        let failed_transfer_ids = std::mem::take(&mut self.failed_transfer_ids);
        *self = saved.clone();
        self.failed_account_ids = failed_account_ids;
        self.failed_transfer_ids = failed_transfer_ids;
    }

    /// §3.4: releases every pending transfer whose deadline is at or before `now`, in
    /// deadline order, ties by creation order.
    fn expire(&mut self, now: u64) {
        let mut due: Vec<(u64, u64, u128)> = Vec::new();
        for (id, status) in &self.statuses {
            let record = self.transfers[id];
            let due_now = deadline(&record).filter(|deadline| *deadline <= now);
            if let (PendingStatus::Pending, Some(deadline)) = (status, due_now) {
                due.push((deadline, record.timestamp, *id));
            }
        }
        due.sort_unstable();
        for (_, _, id) in due {
            let record = self.transfers[&id];
            self.release_pending(&record, true);
            self.statuses.insert(id, PendingStatus::Expired);
            self.record_history(&record, now);
        }
    }

    /// Takes a pending transfer's amount out of both accounts' pending balances. When it
    /// is voided or expires (`reopen`), the accounts it closed are open again: §3.2 says
    /// so for a void; for an expiry design.md is silent and this model, like the engine,
    /// treats it as a void.
    fn release_pending(&mut self, pending: &Transfer, reopen: bool) {
        let debit = self.accounts.get_mut(&pending.debit_account_id).expect("pending debit account");
        debit.debits_pending = debit.debits_pending.checked_sub(pending.amount).expect("debits_pending underflow");
        if reopen && pending.flags & transfer_flags::CLOSING_DEBIT != 0 {
            debit.flags &= !account_flags::CLOSED;
        }
        let credit = self.accounts.get_mut(&pending.credit_account_id).expect("pending credit account");
        credit.credits_pending = credit.credits_pending.checked_sub(pending.amount).expect("credits_pending underflow");
        if reopen && pending.flags & transfer_flags::CLOSING_CREDIT != 0 {
            credit.flags &= !account_flags::CLOSED;
        }
    }

    // ---------------------------------------------------------------- accounts (§3.1)

    /// The code, and the timestamp the result carries: an `exists` answers with the stored
    /// record's original commit timestamp (issue 12).
    fn create_account(&mut self, event: &Account, now: u64) -> (ResultCode, u64) {
        let code = self.check_and_create_account(event, now);
        if code.is_transient() {
            self.failed_account_ids.insert(event.id);
        }
        match code {
            ResultCode::Exists => (code, self.accounts[&event.id].timestamp),
            _ => (code, now),
        }
    }

    fn check_and_create_account(&mut self, event: &Account, now: u64) -> ResultCode {
        use ResultCode as R;
        if event.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if event.flags & !account_flags::KNOWN != 0 {
            return R::ReservedFlag;
        }
        if event.id == 0 {
            return R::IdMustNotBeZero;
        }
        if event.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(stored) = self.accounts.get(&event.id) {
            return account_exists(event, stored);
        }
        if self.failed_account_ids.contains(&event.id) {
            return R::IdAlreadyFailed;
        }
        let both_limits = account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS | account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        if event.flags & both_limits == both_limits {
            return R::FlagsAreMutuallyExclusive;
        }
        let balance_checks = [
            (event.debits_pending, R::DebitsPendingMustBeZero),
            (event.debits_posted, R::DebitsPostedMustBeZero),
            (event.credits_pending, R::CreditsPendingMustBeZero),
            (event.credits_posted, R::CreditsPostedMustBeZero),
        ];
        if let Some((_, code)) = balance_checks.iter().find(|(value, _)| *value != 0) {
            return *code;
        }
        if event.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if event.code == 0 {
            return R::CodeMustNotBeZero;
        }
        if event.limit_profile != 0 {
            match self.profiles.get(&event.limit_profile) {
                None => return R::LimitProfileNotFound,
                Some(profile) if profile.ledger != event.ledger => return R::LimitProfileMustHaveTheSameLedger,
                Some(_) => {}
            }
        }
        self.accounts.insert(event.id, Account { timestamp: now, ..*event });
        R::Created
    }

    // --------------------------------------------------------------- transfers (§3.2)

    fn create_transfer(&mut self, event: &Transfer, now: u64) -> (ResultCode, u64) {
        let code = self.check_and_create_transfer(event, now);
        if code.is_transient() {
            self.failed_transfer_ids.insert(event.id);
        }
        match code {
            ResultCode::Exists => (code, self.transfers[&event.id].timestamp),
            _ => (code, now),
        }
    }

    fn check_and_create_transfer(&mut self, event: &Transfer, now: u64) -> ResultCode {
        use ResultCode as R;
        use transfer_flags as F;
        if event.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if event.flags & !F::KNOWN != 0 {
            return R::ReservedFlag;
        }
        if event.id == 0 {
            return R::IdMustNotBeZero;
        }
        if event.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(stored) = self.transfers.get(&event.id) {
            let post_or_void = stored.flags & (F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER) != 0;
            let pending = self.transfers.get(&stored.pending_id).filter(|_| post_or_void);
            return transfer_exists(event, stored, pending);
        }
        if self.failed_transfer_ids.contains(&event.id) {
            return R::IdAlreadyFailed;
        }
        let phases = [F::PENDING, F::POST_PENDING_TRANSFER, F::VOID_PENDING_TRANSFER];
        let phase_count = phases.iter().filter(|flag| event.flags & **flag != 0).count();
        let post_or_void = event.flags & (F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER) != 0;
        let balancing_or_closing = F::BALANCING_DEBIT | F::BALANCING_CREDIT | F::CLOSING_DEBIT | F::CLOSING_CREDIT;
        if phase_count > 1 || (post_or_void && event.flags & balancing_or_closing != 0) {
            return R::FlagsAreMutuallyExclusive;
        }
        if post_or_void {
            if event.pending_id == 0 {
                return R::PendingIdMustNotBeZero;
            }
            if event.pending_id == u128::MAX {
                return R::PendingIdMustNotBeIntMax;
            }
            if event.pending_id == event.id {
                return R::PendingIdMustBeDifferent;
            }
            if event.timeout != 0 {
                return R::TimeoutReservedForPendingTransfer;
            }
            return self.post_or_void(event, now);
        }
        let pending = event.flags & F::PENDING != 0;
        if event.pending_id != 0 {
            return R::PendingIdMustBeZero;
        }
        if event.timeout != 0 && !pending {
            return R::TimeoutReservedForPendingTransfer;
        }
        if event.flags & (F::CLOSING_DEBIT | F::CLOSING_CREDIT) != 0 && !pending {
            return R::ClosingTransferMustBePending;
        }
        self.single_phase_or_pending(event, now)
    }

    fn single_phase_or_pending(&mut self, event: &Transfer, now: u64) -> ResultCode {
        use ResultCode as R;
        if let Some(code) = check_transfer_fields(event) {
            return code;
        }
        let Some(debit) = self.accounts.get(&event.debit_account_id).copied() else {
            return R::DebitAccountNotFound;
        };
        let Some(credit) = self.accounts.get(&event.credit_account_id).copied() else {
            return R::CreditAccountNotFound;
        };
        if debit.ledger != credit.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if event.ledger != debit.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if debit.flags & account_flags::CLOSED != 0 {
            return R::DebitAccountAlreadyClosed;
        }
        if credit.flags & account_flags::CLOSED != 0 {
            return R::CreditAccountAlreadyClosed;
        }
        let amount = self.balanced_amount(event, &debit, &credit);
        let debit_profile = self.profile_of(&debit);
        if debit_profile.max_single_debit != 0 && amount > debit_profile.max_single_debit {
            return R::ExceedsSingleDebitLimit;
        }
        if let Some(code) = check_overflows(event, amount, &debit, &credit, now) {
            return code;
        }
        if let Some(code) = self.check_balance_limits(amount, &debit, &credit) {
            return code;
        }
        if debit_profile.window_debit_max != 0 {
            let counts = window_counts(debit_profile.window_seconds, now);
            let recent = self.debits_made.get(&debit.id).into_iter().flatten();
            let mut in_window = recent.filter(|(timestamp, _)| counts(*timestamp));
            let total = in_window.try_fold(amount, |sum, (_, made)| sum.checked_add(*made));
            if total.is_none_or(|total| total > debit_profile.window_debit_max) {
                return R::ExceedsWindowDebitLimit;
            }
        }
        self.apply_single_phase_or_pending(event, amount, now);
        R::Created
    }

    /// §3.2 step 11: the amount a balancing transfer may move. Read literally: the clamp
    /// applies whatever the account's flags, in exact arithmetic (a limit + overdraft above
    /// `u128::MAX` clamps nothing), and the overdraft is a debit-side allowance only (the
    /// limit profile's own comment says so), so `balancing_credit` has none.
    fn balanced_amount(&self, event: &Transfer, debit: &Account, credit: &Account) -> u128 {
        let mut amount = event.amount;
        if event.flags & transfer_flags::BALANCING_DEBIT != 0 {
            let overdraft = self.profile_of(debit).overdraft_max;
            let used = debit.debits_pending + debit.debits_posted;
            if let Some(available) = headroom(debit.credits_posted, overdraft, used) {
                amount = amount.min(available);
            }
        }
        if event.flags & transfer_flags::BALANCING_CREDIT != 0 {
            let used = credit.credits_pending + credit.credits_posted;
            if let Some(available) = headroom(credit.debits_posted, 0, used) {
                amount = amount.min(available);
            }
        }
        amount
    }

    /// §3.2 steps 14 and 15: an overdraft binds the account whatever its flags; the mirror
    /// rule of step 15 has no overdraft (see above).
    fn check_balance_limits(&self, amount: u128, debit: &Account, credit: &Account) -> Option<ResultCode> {
        let overdraft = self.profile_of(debit).overdraft_max;
        if debit.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0 || overdraft != 0 {
            let used = debit.debits_pending + debit.debits_posted;
            if exceeds(amount, debit.credits_posted, overdraft, used) {
                return Some(if overdraft != 0 { ResultCode::ExceedsOverdraft } else { ResultCode::ExceedsCredits });
            }
        }
        if credit.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0 {
            let used = credit.credits_pending + credit.credits_posted;
            if exceeds(amount, credit.debits_posted, 0, used) {
                return Some(ResultCode::ExceedsDebits);
            }
        }
        None
    }

    fn apply_single_phase_or_pending(&mut self, event: &Transfer, amount: u128, now: u64) {
        let pending = event.flags & transfer_flags::PENDING != 0;
        let debit = self.accounts.get_mut(&event.debit_account_id).expect("debit account");
        if pending {
            debit.debits_pending += amount;
            if event.flags & transfer_flags::CLOSING_DEBIT != 0 {
                debit.flags |= account_flags::CLOSED;
            }
        } else {
            debit.debits_posted += amount;
        }
        let credit = self.accounts.get_mut(&event.credit_account_id).expect("credit account");
        if pending {
            credit.credits_pending += amount;
            if event.flags & transfer_flags::CLOSING_CREDIT != 0 {
                credit.flags |= account_flags::CLOSED;
            }
        } else {
            credit.credits_posted += amount;
        }
        self.debits_made.entry(event.debit_account_id).or_default().push((now, amount));
        if pending {
            self.statuses.insert(event.id, PendingStatus::Pending);
        }
        self.store(Transfer { amount, timestamp: now, ..*event });
    }

    fn post_or_void(&mut self, event: &Transfer, now: u64) -> ResultCode {
        use ResultCode as R;
        let Some(pending) = self.transfers.get(&event.pending_id).copied() else {
            return R::PendingTransferNotFound;
        };
        if pending.flags & transfer_flags::PENDING == 0 {
            return R::PendingTransferNotPending;
        }
        if let Some(code) = check_against_pending(event, &pending) {
            return code;
        }
        match self.statuses[&pending.id] {
            PendingStatus::Posted => return R::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return R::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return R::PendingTransferExpired,
            PendingStatus::Pending => {}
        }
        if deadline(&pending).is_some_and(|deadline| deadline <= now) {
            return R::PendingTransferExpired;
        }
        let post = event.flags & transfer_flags::POST_PENDING_TRANSFER != 0;
        let amount = if post && event.amount != 0 { event.amount } else { pending.amount };
        if post {
            let debit = self.accounts[&pending.debit_account_id];
            let credit = self.accounts[&pending.credit_account_id];
            // A post into a closed account is refused; a void is not.
            if debit.flags & account_flags::CLOSED != 0 {
                return R::DebitAccountAlreadyClosed;
            }
            if credit.flags & account_flags::CLOSED != 0 {
                return R::CreditAccountAlreadyClosed;
            }
            if debit.debits_posted.checked_add(amount).is_none() {
                return R::OverflowsDebitsPosted;
            }
            if credit.credits_posted.checked_add(amount).is_none() {
                return R::OverflowsCreditsPosted;
            }
        }
        self.apply_post_or_void(event, &pending, post, amount, now);
        R::Created
    }

    fn apply_post_or_void(&mut self, event: &Transfer, pending: &Transfer, post: bool, amount: u128, now: u64) {
        self.release_pending(pending, !post);
        if post {
            self.accounts.get_mut(&pending.debit_account_id).expect("debit account").debits_posted += amount;
            self.accounts.get_mut(&pending.credit_account_id).expect("credit account").credits_posted += amount;
        }
        let status = if post { PendingStatus::Posted } else { PendingStatus::Voided };
        self.statuses.insert(pending.id, status);
        // User data left zero is the pending transfer's.
        let user_data_128 = if event.user_data_128 == 0 { pending.user_data_128 } else { event.user_data_128 };
        let user_data_64 = if event.user_data_64 == 0 { pending.user_data_64 } else { event.user_data_64 };
        let user_data_32 = if event.user_data_32 == 0 { pending.user_data_32 } else { event.user_data_32 };
        self.store(Transfer {
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            ledger: pending.ledger,
            code: pending.code,
            amount,
            user_data_128,
            user_data_64,
            user_data_32,
            timestamp: now,
            ..*event
        });
    }

    fn store(&mut self, record: Transfer) {
        self.transfer_order.push(record.id);
        self.transfers.insert(record.id, record);
        self.record_history(&record, record.timestamp);
    }

    /// Appends both accounts' balances, right after `transfer` moved or released money.
    fn record_history(&mut self, transfer: &Transfer, now: u64) {
        for (account_id, debit_side) in [(transfer.debit_account_id, true), (transfer.credit_account_id, false)] {
            let account = &self.accounts[&account_id];
            let balance = AccountBalance {
                debits_pending: account.debits_pending,
                debits_posted: account.debits_posted,
                credits_pending: account.credits_pending,
                credits_posted: account.credits_posted,
                timestamp: now,
                reserved: [0; 7],
            };
            self.history.entry(account_id).or_default().push(HistoryRow { debit_side, balance });
        }
    }

    fn profile_of(&self, account: &Account) -> LimitProfile {
        if account.limit_profile == 0 {
            return LimitProfile::default();
        }
        self.profiles[&account.limit_profile]
    }

    // ----------------------------------------------------------- limit profiles (§3.3)

    fn upsert_limit_profile(&mut self, event: &LimitProfile, now: u64) -> ResultCode {
        use ResultCode as R;
        if event.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if event.flags != 0 {
            return R::ReservedFlag;
        }
        if event.id == 0 {
            return R::IdMustNotBeZero;
        }
        if event.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if event.window_debit_max != 0 && event.window_seconds == 0 {
            return R::WindowSecondsMustNotBeZero;
        }
        if let Some(stored) = self.profiles.get(&event.id) {
            if stored.ledger != event.ledger {
                return R::ExistsWithDifferentLedger;
            }
            // §3.3: the stored version with the same limits is a retry; any other version
            // at or below the stored one is stale.
            if (LimitProfile { timestamp: 0, ..*stored }) == *event {
                return R::Exists;
            }
            if event.version <= stored.version {
                return R::LimitProfileVersionStale;
            }
        }
        self.profiles.insert(event.id, LimitProfile { timestamp: now, ..*event });
        R::Created
    }

    // ------------------------------------------------------------------ queries (§3.6)

    /// §3.6: a filter that is not a valid question is refused before anything is read.
    fn check_filter(filter: &AccountFilter) -> Result<(), FilterError> {
        use filter_flags as F;
        let sides = F::DEBITS | F::CREDITS;
        let checks = [
            (
                filter.flags & !(sides | F::REVERSED) != 0,
                FilterError::UnknownFlags { bits: filter.flags & !(sides | F::REVERSED) },
            ),
            (filter.reserved.iter().any(|byte| *byte != 0), FilterError::ReservedNotZero),
            (filter.flags & sides == 0, FilterError::NoSide),
            (filter.limit == 0, FilterError::LimitZero),
            (filter.limit > QUERY_ROWS_MAX, FilterError::LimitAboveMax { limit: filter.limit }),
            (
                filter.timestamp_max != 0 && filter.timestamp_min > filter.timestamp_max,
                FilterError::EmptyRange { min: filter.timestamp_min, max: filter.timestamp_max },
            ),
        ];
        checks.iter().find(|(fails, _)| *fails).map_or(Ok(()), |(_, error)| Err(*error))
    }

    /// The rows of §3.6 that `filter` selects, in the order asked, limit applied.
    fn select<T: Copy>(filter: &AccountFilter, rows: impl DoubleEndedIterator<Item = (bool, u64, T)>) -> Vec<T> {
        let wanted = |debit_side: bool| {
            let flag = if debit_side { filter_flags::DEBITS } else { filter_flags::CREDITS };
            filter.flags & flag != 0
        };
        let in_range = |timestamp: u64| {
            (filter.timestamp_min == 0 || timestamp >= filter.timestamp_min)
                && (filter.timestamp_max == 0 || timestamp <= filter.timestamp_max)
        };
        let mut selected: Vec<T> = rows
            .filter(|(debit_side, timestamp, _)| wanted(*debit_side) && in_range(*timestamp))
            .map(|(_, _, row)| row)
            .collect();
        if filter.flags & filter_flags::REVERSED != 0 {
            selected.reverse();
        }
        selected.truncate(filter.limit as usize);
        selected
    }

    pub fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<Transfer>, FilterError> {
        Model::check_filter(filter)?;
        let account_id = filter.account_id;
        let sides = self.transfer_order.iter().map(|id| &self.transfers[id]).flat_map(|transfer| {
            let debit = (transfer.debit_account_id == account_id).then_some((true, transfer.timestamp, *transfer));
            let credit = (transfer.credit_account_id == account_id).then_some((false, transfer.timestamp, *transfer));
            debit.into_iter().chain(credit)
        });
        // A transfer is one row even when both of its sides are wanted (its accounts differ).
        Ok(Model::select(filter, sides))
    }

    pub fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>, FilterError> {
        Model::check_filter(filter)?;
        let has_history =
            self.accounts.get(&filter.account_id).is_some_and(|account| account.flags & account_flags::HISTORY != 0);
        let Some(rows) = self.history.get(&filter.account_id).filter(|_| has_history) else {
            return Ok(Vec::new());
        };
        Ok(Model::select(filter, rows.iter().map(|row| (row.debit_side, row.balance.timestamp, row.balance))))
    }
}
