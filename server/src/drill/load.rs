//! The drill's load: threads that send transfers through the Rust client (which follows
//! `not_primary` and retries with the same ids) and record the fate of every id: acknowledged
//! (`created` or `exists`), rejected with another code, or in doubt (the client gave up).
//!
//! Every transfer moves exactly 1 unit, so the excess of an account's posted debits over the
//! distinct transfers found for it counts transfers applied more than once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use tally_client::Client;
use tally_codecs::{Account, ResultCode, Transfer};

/// The ledgers (currencies) the drill moves money on, and accounts on each.
pub const LEDGERS: [u32; 2] = [1, 2];
const ACCOUNTS_PER_LEDGER: u128 = 4;
/// Threads sending transfers: the machines this runs on in CI have 2 cores, shared with
/// three nodes.
const LOAD_THREADS: usize = 2;
/// Transfers per call (the client merges concurrent calls into one request).
const TRANSFERS_PER_CALL: u64 = 100;
/// Errors quoted in a report; the rest are only counted.
const ERRORS_KEPT: usize = 5;

/// Every account the drill uses.
pub fn accounts() -> Vec<Account> {
    LEDGERS
        .iter()
        .flat_map(|&ledger| {
            (1..=ACCOUNTS_PER_LEDGER).map(move |index| Account {
                id: u128::from(ledger) * 1_000 + index,
                ledger,
                code: 1,
                ..Account::default()
            })
        })
        .collect()
}

/// The transfer with id `id`: on ledger 1 or 2 by parity, between two different accounts of
/// that ledger, 1 unit.
pub fn transfer(id: u128) -> Transfer {
    let ledger = LEDGERS[usize::from(id % 2 == 1)];
    let base = u128::from(ledger) * 1_000;
    let spread = id / 2;
    Transfer {
        id,
        debit_account_id: base + 1 + spread % ACCOUNTS_PER_LEDGER,
        credit_account_id: base + 1 + (spread + 1) % ACCOUNTS_PER_LEDGER,
        amount: 1,
        ledger,
        code: 1,
        ..Transfer::default()
    }
}

/// One call's span, for calls that got at least one acknowledgement.
#[derive(Clone, Copy)]
pub struct AckedCall {
    pub started: Instant,
    pub finished: Instant,
}

/// What happened to every id a round sent.
#[derive(Default)]
pub struct Record {
    pub acked: Vec<u128>,
    pub in_doubt: Vec<u128>,
    pub rejected: Vec<(u128, String)>,
    pub acked_calls: Vec<AckedCall>,
    pub errors: Vec<String>,
    pub error_count: u64,
}

impl Record {
    /// The moment of the first acknowledgement of a call that started after `instant`.
    pub fn first_ack_started_after(&self, instant: Instant) -> Option<Instant> {
        self.acked_calls.iter().filter(|call| call.started > instant).map(|call| call.finished).min()
    }
}

/// A round's load: ids `first_id .. first_id + count`, sent until all were sent once.
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    client: Client,
    first_id: u128,
    count: u64,
    /// Offset of the next id to send.
    next: AtomicU64,
    acked: AtomicU64,
    stop: AtomicBool,
    record: Mutex<Record>,
}

impl Load {
    pub fn start(client: Client, first_id: u128, count: u64) -> Load {
        let shared = Arc::new(Shared {
            client,
            first_id,
            count,
            next: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            record: Mutex::new(Record::default()),
        });
        let threads = (0..LOAD_THREADS)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || shared.send_until_done())
            })
            .collect();
        Load { shared, threads }
    }

    /// Ids acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// Whether every id has been sent and answered (or given up on).
    pub fn is_done(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Stops sending new calls, waits for those in flight, and returns the record.
    pub fn finish(self) -> Record {
        self.shared.stop.store(true, Ordering::Release);
        for thread in self.threads {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.shared.record())
    }
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send_until_done(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let offset = self.next.fetch_add(TRANSFERS_PER_CALL, Ordering::AcqRel);
            if offset >= self.count {
                return;
            }
            let end = (offset + TRANSFERS_PER_CALL).min(self.count);
            let transfers: Vec<Transfer> =
                (offset..end).map(|offset| transfer(self.first_id + u128::from(offset))).collect();
            self.send(&transfers);
        }
    }

    fn send(&self, transfers: &[Transfer]) {
        let started = Instant::now();
        let answer = self.client.create_transfers(transfers);
        let finished = Instant::now();
        let mut record = self.record();
        match answer {
            Ok(results) if results.len() == transfers.len() => {
                let mut acked = 0;
                for (transfer, result) in transfers.iter().zip(&results) {
                    match ResultCode::from_u32(result.status) {
                        Some(code) if code.is_ok() => {
                            record.acked.push(transfer.id);
                            acked += 1;
                        }
                        code => record.rejected.push((transfer.id, code.map_or("unknown".into(), |c| c.to_string()))),
                    }
                }
                if acked > 0 {
                    record.acked_calls.push(AckedCall { started, finished });
                    self.acked.fetch_add(acked, Ordering::AcqRel);
                }
            }
            Ok(results) => {
                record.in_doubt.extend(transfers.iter().map(|transfer| transfer.id));
                let count = results.len();
                note_error(&mut record, format!("{count} results for {} transfers", transfers.len()));
            }
            Err(error) => {
                record.in_doubt.extend(transfers.iter().map(|transfer| transfer.id));
                note_error(&mut record, error.to_string());
            }
        }
    }
}

fn note_error(record: &mut Record, error: String) {
    record.error_count += 1;
    if record.errors.len() < ERRORS_KEPT {
        record.errors.push(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transfer_moves_one_unit_between_two_accounts_of_its_ledger() {
        let accounts = accounts();
        for id in 1..1_000 {
            let transfer = transfer(id);
            let ledger_of = |account_id| accounts.iter().find(|a| a.id == account_id).map(|a| a.ledger);
            assert_eq!(transfer.amount, 1);
            assert_ne!(transfer.debit_account_id, transfer.credit_account_id);
            assert_eq!(ledger_of(transfer.debit_account_id), Some(transfer.ledger));
            assert_eq!(ledger_of(transfer.credit_account_id), Some(transfer.ledger));
        }
    }
}
