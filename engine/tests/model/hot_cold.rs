//! The ledger as the pipeline runs it, with a tiny hot window: every input gets its own
//! sequence, its cold facts are gathered from an in-memory fake of the history store, and
//! what it committed is written to that store afterwards. The model test drives this
//! instead of a bare `Ledger`, so evictions happen all the time and every answer that needs
//! history goes through the cold-lookup seam.

use std::collections::BTreeMap;

use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, AccountBalance, AccountFilter, EventResult, FilterError, LimitProfile, Transfer};
use tally_engine::pipeline::{Command, apply, apply_collecting};
use tally_engine::{Effects, HistoryLookup, Ledger, PendingStatus, StoredBalance, StoredTransfer, cold};

/// An in-memory history store: what a real one holds, with the same read methods.
#[derive(Default)]
pub struct FakeStore {
    transfers: BTreeMap<u128, StoredTransfer>,
    failed: BTreeMap<u128, (u32, u64)>,
    resolutions: BTreeMap<u128, (PendingStatus, u64)>,
    /// Per account: transfer numbers, and balance rows.
    account_transfers: BTreeMap<u128, Vec<u128>>,
    account_balances: BTreeMap<u128, Vec<StoredBalance>>,
}

impl FakeStore {
    pub fn record(&mut self, effects: &Effects) {
        for stored in &effects.transfers {
            self.transfers.insert(stored.transfer.id, *stored);
            for account in [stored.transfer.debit_account_id, stored.transfer.credit_account_id] {
                self.account_transfers.entry(account).or_default().push(stored.transfer.id);
            }
        }
        for (id, code) in &effects.failed {
            self.failed.insert(*id, (*code, effects.sequence));
        }
        for (id, status) in &effects.resolutions {
            self.resolutions.insert(*id, (*status, effects.sequence));
        }
        for (account, row) in &effects.balances {
            self.account_balances.entry(*account).or_default().push(*row);
        }
    }
}

fn in_range(filter: &AccountFilter, timestamp: u64) -> bool {
    let max = if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max };
    timestamp >= filter.timestamp_min && timestamp <= max
}

fn side_wanted(filter: &AccountFilter, debit: bool) -> bool {
    use tally_codecs::flags::filter as flags;
    if debit { filter.flags & flags::DEBITS != 0 } else { filter.flags & flags::CREDITS != 0 }
}

fn reversed(filter: &AccountFilter) -> bool {
    filter.flags & tally_codecs::flags::filter::REVERSED != 0
}

impl HistoryLookup for FakeStore {
    fn transfer(&self, id: u128) -> Option<StoredTransfer> {
        self.transfers.get(&id).copied()
    }

    fn failed(&self, id: u128) -> Option<(u32, u64)> {
        self.failed.get(&id).copied()
    }

    fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)> {
        self.resolutions.get(&pending_id).copied()
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Vec<StoredTransfer> {
        let ids = self.account_transfers.get(&filter.account_id).cloned().unwrap_or_default();
        let rows = ids.iter().filter_map(|id| self.transfers.get(id)).filter(|stored| {
            in_range(filter, stored.transfer.timestamp)
                && side_wanted(filter, stored.transfer.debit_account_id == filter.account_id)
        });
        let limit = filter.limit as usize;
        if reversed(filter) { rows.rev().take(limit).copied().collect() } else { rows.take(limit).copied().collect() }
    }

    fn account_balances(&self, filter: &AccountFilter) -> Vec<StoredBalance> {
        let rows = self.account_balances.get(&filter.account_id).cloned().unwrap_or_default();
        let rows =
            rows.into_iter().filter(|row| in_range(filter, row.balance.timestamp) && side_wanted(filter, row.debit));
        let limit = filter.limit as usize;
        if reversed(filter) { rows.rev().take(limit).collect() } else { rows.take(limit).collect() }
    }
}

/// A ledger run input by input with sequences, a hot window and the fake store.
pub struct HotCold {
    pub ledger: Ledger,
    pub store: FakeStore,
    sequence: u64,
}

impl HotCold {
    /// A window of at most `inputs` inputs holding at most `events` transfer events.
    pub fn new(inputs: u64, events: u64) -> HotCold {
        let mut ledger = Ledger::new();
        ledger.set_hot_window(inputs, events);
        HotCold { ledger, store: FakeStore::default(), sequence: 0 }
    }

    fn mutate(&mut self, timestamp: u64, command: Command) -> Option<Reply> {
        self.sequence += 1;
        let cutoff = self.ledger.hot_cutoff(self.sequence);
        let facts = cold::gather(&self.store, &command, cutoff);
        let (reply, committed) = apply_collecting(&mut self.ledger, self.sequence, timestamp, &command, facts);
        if let (Command::Request(Request::CreateTransfers(events)), Some(Reply::CreateTransfers(results))) =
            (&command, &reply)
        {
            // What the outcome stream records as committed: the records of the events
            // answered `created`, in event order, read by id.
            let created = tally_codecs::ResultCode::Created as u32;
            let ids: Vec<u128> =
                events.iter().zip(results).filter(|(_, result)| result.status == created).map(|(e, _)| e.id).collect();
            let mut by_id = Vec::new();
            self.ledger.lookup_transfers(&ids, &mut by_id);
            assert_eq!(by_id.len(), ids.len(), "every created transfer is hot while its input is applied");
            assert_eq!(committed.transfers, by_id, "the transfers collected as committed by input {}", self.sequence);
        }
        // The accounts it changed, once each in id order: both sides of each committed
        // transfer, of each pending transfer that expired, and each account created.
        let expired: Vec<Transfer> =
            committed.expired.iter().filter_map(|id| self.ledger.held_pending_transfer(*id)).collect();
        let mut ids: Vec<u128> = (committed.transfers.iter().chain(&expired))
            .flat_map(|transfer| [transfer.debit_account_id, transfer.credit_account_id])
            .collect();
        if let (Command::Request(Request::CreateAccounts(events)), Some(Reply::CreateAccounts(results))) =
            (&command, &reply)
        {
            let created = tally_codecs::ResultCode::Created as u32;
            ids.extend(events.iter().zip(results).filter(|(_, result)| result.status == created).map(|(e, _)| e.id));
        }
        ids.sort_unstable();
        ids.dedup();
        let mut accounts = Vec::new();
        self.ledger.lookup_accounts(&ids, &mut accounts);
        assert_eq!(committed.accounts, accounts, "the accounts collected as changed by input {}", self.sequence);
        self.store.record(&self.ledger.effects());
        reply
    }

    fn query(&mut self, request: Request) -> Reply {
        let command = Command::Request(request);
        let cutoff = self.ledger.hot_cutoff(0);
        let facts = cold::gather(&self.store, &command, cutoff);
        apply(&mut self.ledger, 0, 0, &command, facts).expect("a query is answered")
    }

    fn results(reply: Option<Reply>, out: &mut Vec<EventResult>) {
        match reply {
            Some(Reply::CreateAccounts(results))
            | Some(Reply::CreateTransfers(results))
            | Some(Reply::UpsertLimitProfiles(results)) => out.extend(results),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub fn create_accounts(&mut self, timestamp: u64, events: &[Account], out: &mut Vec<EventResult>) {
        if events.is_empty() {
            return;
        }
        let reply = self.mutate(timestamp, Command::Request(Request::CreateAccounts(events.to_vec())));
        HotCold::results(reply, out);
    }

    pub fn upsert_limit_profiles(&mut self, timestamp: u64, events: &[LimitProfile], out: &mut Vec<EventResult>) {
        if events.is_empty() {
            return;
        }
        let reply = self.mutate(timestamp, Command::Request(Request::UpsertLimitProfiles(events.to_vec())));
        HotCold::results(reply, out);
    }

    pub fn create_transfers(&mut self, timestamp: u64, events: &[Transfer], out: &mut Vec<EventResult>) {
        if events.is_empty() {
            return;
        }
        let reply = self.mutate(timestamp, Command::Request(Request::CreateTransfers(events.to_vec())));
        HotCold::results(reply, out);
    }

    pub fn tick(&mut self, timestamp: u64) {
        self.mutate(timestamp, Command::Tick);
    }

    pub fn lookup_transfers(&mut self, ids: &[u128], out: &mut Vec<Transfer>) {
        match self.query(Request::LookupTransfers(ids.to_vec())) {
            Reply::LookupTransfers(found) => out.extend(found),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub fn get_account_transfers(
        &mut self,
        filter: &AccountFilter,
        out: &mut Vec<Transfer>,
    ) -> Result<(), FilterError> {
        filter.validate()?;
        match self.query(Request::GetAccountTransfers(*filter)) {
            Reply::GetAccountTransfers(found) => out.extend(found),
            other => panic!("unexpected reply {other:?}"),
        }
        Ok(())
    }

    pub fn get_account_balances(
        &mut self,
        filter: &AccountFilter,
        out: &mut Vec<AccountBalance>,
    ) -> Result<(), FilterError> {
        filter.validate()?;
        match self.query(Request::GetAccountBalances(*filter)) {
            Reply::GetAccountBalances(found) => out.extend(found),
            other => panic!("unexpected reply {other:?}"),
        }
        Ok(())
    }

    /// Hot first (every open pending transfer is hot), else how the store says it was resolved.
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.ledger.pending_status(id).or_else(|| self.store.resolution(id).map(|(status, _)| status))
    }

    pub fn lookup_accounts(&self, ids: &[u128], out: &mut Vec<Account>) {
        self.ledger.lookup_accounts(ids, out)
    }

    pub fn lookup_limit_profile(&self, id: u32) -> Option<LimitProfile> {
        self.ledger.lookup_limit_profile(id)
    }

    pub fn last_timestamp(&self) -> u64 {
        self.ledger.last_timestamp()
    }

    pub fn state_hash(&self) -> u128 {
        self.ledger.state_hash()
    }

    pub fn recompute_state_hash(&self) -> u128 {
        self.ledger.recompute_state_hash()
    }
}
