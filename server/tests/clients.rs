//! Many clients at once against a real node, through a proxy that keeps cutting their
//! connections: requests are pipelined, batched and retried, and every id takes effect
//! exactly once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use tally_client::{Client, ClientConfig};
use tally_codecs::{Account, ResultCode, Transfer};

use common::proxy::Proxy;
use common::{ServerProcess, TempDir, account, free_address, transfer};

const ACCOUNTS: u128 = 16;
const CLIENTS: u128 = 3;
const THREADS_PER_CLIENT: u128 = 3;
const BATCHES_PER_THREAD: u128 = 40;
const TRANSFERS_PER_BATCH: u128 = 12;
/// Connections cut mid-stream while the clients run.
const CUTS: usize = 12;

/// The transfer with this id: accounts and amount follow from the id, so the expected
/// balances can be computed from the ids alone.
fn transfer_for(id: u128) -> Transfer {
    let debit = 1 + id % ACCOUNTS;
    let credit = 1 + (debit + id / ACCOUNTS % (ACCOUNTS - 1)) % ACCOUNTS;
    transfer(id, debit, credit, id % 1_000 + 1)
}

/// Creates its share of transfers; every result must be `created`, or `exists` when a
/// retry resent events that an earlier attempt had applied.
fn create_share(client: &Client, first_id: u128) -> Vec<u128> {
    let mut ids = Vec::new();
    for batch in 0..BATCHES_PER_THREAD {
        let start = first_id + batch * TRANSFERS_PER_BATCH;
        let transfers: Vec<Transfer> = (start..start + TRANSFERS_PER_BATCH).map(transfer_for).collect();
        let results = client.create_transfers(&transfers).expect("create transfers (retried through cuts)");
        assert_eq!(results.len(), transfers.len());
        for result in results {
            let code = ResultCode::from_u32(result.status);
            assert!(matches!(code, Some(ResultCode::Created | ResultCode::Exists)), "unexpected result {code:?}");
        }
        ids.extend(transfers.iter().map(|transfer| transfer.id));
    }
    ids
}

#[test]
fn many_clients_pipelined_with_retries_apply_each_id_once() {
    let dir = TempDir::new("many-clients");
    let server = ServerProcess::start(&dir.path().join("data"), free_address(), &["--durability", "none"]);
    let proxy = Proxy::start(server.address, CUTS);
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        give_up_after: Duration::from_secs(30),
        in_flight_max: 4,
        ..ClientConfig::new(&[proxy.address])
    };
    let clients: Vec<Client> =
        (0..CLIENTS).map(|_| Client::with_config(config.clone()).expect("the proxy is reachable")).collect();
    let accounts: Vec<Account> = (1..=ACCOUNTS).map(account).collect();
    clients[0].create_accounts(&accounts).expect("create accounts");

    let mut ids = Vec::new();
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            for thread in 0..THREADS_PER_CLIENT {
                let share = (index as u128 * THREADS_PER_CLIENT + thread) * 1_000_000 + 1;
                workers.push(scope.spawn(move || create_share(client, share)));
            }
        }
        for worker in workers {
            ids.extend(worker.join().expect("worker finishes"));
        }
    });

    assert_eq!(proxy.cuts(), CUTS, "every planned cut happened while the clients ran");

    // Every transfer exists once, as sent.
    let direct = Client::connect(&[server.address]).expect("the node is reachable");
    for chunk in ids.chunks(4000) {
        let found = direct.lookup_transfers(chunk).expect("lookup transfers");
        assert_eq!(found.len(), chunk.len());
        for (id, stored) in chunk.iter().zip(&found) {
            let sent = transfer_for(*id);
            assert_eq!(
                (stored.id, stored.amount, stored.debit_account_id),
                (sent.id, sent.amount, sent.debit_account_id)
            );
        }
    }
    // Applied twice, a transfer would count twice here.
    let mut expected: HashMap<u128, (u128, u128)> = HashMap::new();
    for id in &ids {
        let sent = transfer_for(*id);
        expected.entry(sent.debit_account_id).or_default().0 += sent.amount;
        expected.entry(sent.credit_account_id).or_default().1 += sent.amount;
    }
    let ledger_ids: Vec<u128> = (1..=ACCOUNTS).collect();
    for stored in direct.lookup_accounts(&ledger_ids).expect("lookup accounts") {
        let (debits, credits) = expected.get(&stored.id).copied().unwrap_or_default();
        assert_eq!((stored.debits_posted, stored.credits_posted), (debits, credits), "account {}", stored.id);
    }
    let status = direct.status().expect("status");
    assert!(status.applied_events >= ids.len() as u64);
}
