//! The cold-lookup rule in the running pipeline (docs/design.md §3.9): the stage ahead of
//! the business logic waits until the history store holds every record that left the hot
//! window before the input, so a retry of an evicted id is recognised even when the
//! history stage is slow.

#[path = "model/hot_cold.rs"]
#[allow(dead_code)]
mod hot_cold;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel;
use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, AccountFilter, ResultCode, Transfer};
use tally_engine::pipeline::{
    Command, Durability, History, HistoryWriter, InputLog, OutcomeLog, Pipeline, PipelineConfig, ReplyTo, Watermarks,
};
use tally_engine::{Effects, HistoryLookup, Ledger, PendingStatus, StoredBalance, StoredTransfer};

use hot_cold::FakeStore;

#[derive(Default)]
struct MemoryLog {
    appended: u64,
    watermarks: Watermarks,
}

impl InputLog for MemoryLog {
    fn append(&mut self, _: u64, _: &Command) -> u64 {
        self.appended += 1;
        self.watermarks.appended.store(self.appended, Ordering::Release);
        self.appended
    }

    fn commit(&mut self, _: Durability) {
        self.watermarks.flushed.store(self.appended, Ordering::Release);
    }

    fn watermarks(&self) -> Watermarks {
        self.watermarks.clone()
    }
}

struct NoOutcomes;

impl OutcomeLog for NoOutcomes {
    fn record(&mut self, _: u64, _: u64, _: &Command, _: Option<&Reply>, _: &tally_engine::pipeline::Committed) {}
    fn end_of_batch(&mut self) {}
}

/// The fake store behind a lock, shared by the lookup and the writer.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<FakeStore>>);

impl HistoryLookup for Shared {
    fn transfer(&self, id: u128) -> Option<StoredTransfer> {
        self.0.lock().unwrap().transfer(id)
    }
    fn failed(&self, id: u128) -> Option<(u32, u64)> {
        self.0.lock().unwrap().failed(id)
    }
    fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)> {
        self.0.lock().unwrap().resolution(pending_id)
    }
    fn account_transfers(&self, filter: &AccountFilter) -> Vec<StoredTransfer> {
        self.0.lock().unwrap().account_transfers(filter)
    }
    fn account_balances(&self, filter: &AccountFilter) -> Vec<StoredBalance> {
        self.0.lock().unwrap().account_balances(filter)
    }
}

/// A history stage that takes its time: each batch reaches the store (and the mark moves)
/// only `SLOW` after the batch ended.
struct SlowWriter {
    store: Shared,
    mark: Arc<AtomicU64>,
    batch: Vec<Effects>,
}

const SLOW: Duration = Duration::from_millis(50);

impl HistoryWriter for SlowWriter {
    fn record(&mut self, effects: Effects) {
        self.batch.push(effects);
    }

    fn end_of_batch(&mut self) {
        std::thread::sleep(SLOW);
        let mut store = self.store.0.lock().unwrap();
        for effects in self.batch.drain(..) {
            store.record(&effects);
            self.mark.fetch_max(effects.sequence, Ordering::AcqRel);
        }
    }
}

struct Collect(channel::Sender<(u64, Reply)>);

impl ReplyTo for Collect {
    fn reply(&self, request_id: u64, reply: &Reply) {
        let _ = self.0.send((request_id, reply.clone()));
    }
}

fn transfer(id: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: 1, credit_account_id: 2, amount, ledger: 1, code: 1, ..Transfer::default() }
}

/// With a hot window of one input, transfer 10 leaves the hot state two inputs after it is
/// made; its retry right behind them must still answer `exists`, and the balances must
/// show it once, however far behind the history stage is.
#[test]
fn a_retry_of_an_evicted_id_waits_for_the_history_store_and_answers_exists() {
    let store = Shared::default();
    let mark = Arc::new(AtomicU64::new(0));
    let writer = SlowWriter { store: store.clone(), mark: mark.clone(), batch: Vec::new() };
    let mut ledger = Ledger::new();
    ledger.set_hot_window(1, u64::MAX);
    let history = History { lookup: Arc::new(store.clone()), writer: Box::new(writer), mark: mark.clone() };
    let config = PipelineConfig { tick_interval: Duration::from_secs(3600), ..PipelineConfig::default() };
    let pipeline = Pipeline::start_with_history(
        config,
        ledger,
        Box::new(MemoryLog::default()),
        Box::new(NoOutcomes),
        Some(history),
    );
    let submitter = pipeline.submitter();
    let accounts = (1..=2u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
    assert!(matches!(submitter.execute(Request::CreateAccounts(accounts)).unwrap(), Reply::CreateAccounts(_)));

    // All in the ring at once: the original, two fillers, then the retry.
    let (sender, replies) = channel::unbounded();
    let reply_to: Arc<dyn ReplyTo> = Arc::new(Collect(sender));
    let requests = [transfer(10, 5), transfer(11, 1), transfer(12, 1), transfer(10, 5), transfer(10, 6)];
    for (request_id, event) in requests.iter().enumerate() {
        submitter.submit(Request::CreateTransfers(vec![*event]), request_id as u64, reply_to.clone()).unwrap();
    }
    let mut codes = vec![None; requests.len()];
    for _ in 0..requests.len() {
        let (request_id, reply) = replies.recv().unwrap();
        let Reply::CreateTransfers(results) = reply else { panic!("unexpected reply") };
        codes[request_id as usize] = ResultCode::from_u32(results[0].status);
    }
    let ledger = pipeline.shutdown();
    let created = Some(ResultCode::Created);
    assert_eq!(
        codes,
        [created, created, created, Some(ResultCode::Exists), Some(ResultCode::ExistsWithDifferentAmount)],
        "the retries of the evicted transfer 10"
    );
    assert_eq!(ledger.hot_transfers_count(), 0, "transfer 10 had left the hot window");
    let mut accounts = Vec::new();
    ledger.lookup_accounts(&[1], &mut accounts);
    assert_eq!(accounts[0].debits_posted, 7, "transfer 10 applied once");
}
