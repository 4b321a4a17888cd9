//! A real `tally serve` process, killed with SIGKILL and restarted on the same data
//! directory: every acknowledged input is still there, with the same state hash.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tally_client::Client;
use tally_codecs::{Account, ResultCode, Transfer};

use common::{ServerProcess, TempDir, account, client, free_address, transfer};

/// No ticks during the test: a tick advances the ledger's clock and so its state hash,
/// and the hashes compared here must differ only if the data does.
const NO_TICKS: [&str; 2] = ["--tick-interval-ms", "3600000"];
const ACCOUNTS: u128 = 8;

fn serve(data: &std::path::Path, address: std::net::SocketAddr) -> ServerProcess {
    ServerProcess::start(data, address, &["--durability", "local", NO_TICKS[0], NO_TICKS[1]])
}

/// Everything a client can see of the ledger that this test writes.
fn observe(client: &Client, transfer_ids: &[u128]) -> (Vec<Account>, Vec<Transfer>, u128) {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let accounts = client.lookup_accounts(&ids).expect("lookup accounts");
    let transfers: Vec<Transfer> =
        transfer_ids.chunks(4000).flat_map(|chunk| client.lookup_transfers(chunk).expect("lookup transfers")).collect();
    let state_hash = client.status().expect("status").state_hash;
    (accounts, transfers, state_hash)
}

fn create_accounts_embedded(data: &std::path::Path) {
    let accounts: Vec<Account> = (1..=ACCOUNTS).map(account).collect();
    let line = tally_codecs::json::request_line(&tally_codecs::wire::Request::CreateAccounts(accounts));
    let mut exec = std::process::Command::new(common::TALLY)
        .args(["exec", "--data"])
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tally exec starts");
    let mut stdin = exec.stdin.take().expect("piped stdin");
    std::io::Write::write_all(&mut stdin, format!("{line}\n").as_bytes()).expect("write the request");
    drop(stdin);
    let output = exec.wait_with_output().expect("tally exec finishes");
    assert!(output.status.success());
    let reply = String::from_utf8_lossy(&output.stdout);
    assert_eq!(reply.matches(r#""status":"created""#).count(), ACCOUNTS as usize, "{reply}");
}

fn snapshot_count(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("snapshots")).map_or(0, |entries| entries.filter_map(Result::ok).count())
}

fn assert_all_created(results: &[tally_codecs::EventResult]) {
    for result in results {
        assert_eq!(ResultCode::from_u32(result.status), Some(ResultCode::Created), "{result:?}");
    }
}

#[test]
fn acknowledged_transfers_survive_sigkill() {
    let dir = TempDir::new("sigkill");
    let data = dir.path().join("data");
    let address = free_address();

    // The accounts come from an embedded run that ends cleanly, with a snapshot: the
    // recoveries below start from it and replay the journal after it.
    create_accounts_embedded(&data);
    assert!(snapshot_count(&data) > 0, "a clean shutdown writes a snapshot");

    // Phase 1: a quiescent ledger, compared in full across a SIGKILL.
    let server = serve(&data, address);
    let node = client(&[address], Duration::from_secs(10));
    let mut transfer_ids = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u128)
            .map(|worker| {
                let node = node.clone();
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for batch in 0..25u128 {
                        let transfers: Vec<Transfer> = (0..8u128)
                            .map(|i| {
                                let id = 1_000 + worker * 10_000 + batch * 100 + i;
                                let debit = 1 + (id % ACCOUNTS);
                                let credit = 1 + ((id / 3 + 1) % ACCOUNTS);
                                let credit = if credit == debit { 1 + (debit % ACCOUNTS) } else { credit };
                                transfer(id, debit, credit, id % 97 + 1)
                            })
                            .collect();
                        assert_all_created(&node.create_transfers(&transfers).expect("create transfers"));
                        ids.extend(transfers.iter().map(|transfer| transfer.id));
                    }
                    ids
                })
            })
            .collect();
        for worker in workers {
            transfer_ids.extend(worker.join().expect("worker finishes"));
        }
    });
    let before = observe(&node, &transfer_ids);
    assert_eq!(before.1.len(), transfer_ids.len());
    drop(node);
    server.kill();

    let server = serve(&data, address);
    let node = client(&[address], Duration::from_secs(10));
    let after = observe(&node, &transfer_ids);
    assert_eq!(after.0, before.0, "balances after restart");
    assert_eq!(after.1, before.1, "transfers after restart");
    assert_eq!(after.2, before.2, "state hash after restart");

    // Phase 2: killed while a client is writing. Whatever was acknowledged is there.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let node = client(&[address], Duration::from_secs(2));
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut id = 1_000_000u128;
            while !stop.load(Ordering::Relaxed) {
                let transfers: Vec<Transfer> = (0..16).map(|i| transfer(id + i, 1, 2, 1)).collect();
                match node.create_transfers(&transfers) {
                    Ok(results) => {
                        assert_all_created(&results);
                        acknowledged.extend(transfers.iter().map(|transfer| transfer.id));
                    }
                    // The node is gone; this batch may or may not have been applied.
                    Err(_) => return (acknowledged, id + 16),
                }
                id += 16;
            }
            (acknowledged, id)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    drop(node);
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, next_id) = writer.join().expect("writer finishes");
    assert!(!acknowledged.is_empty(), "the writer got some transfers acknowledged before the kill");

    let server = serve(&data, address);
    let node = client(&[address], Duration::from_secs(10));
    let attempted: Vec<u128> = (1_000_000..next_id).collect();
    let found: Vec<Transfer> =
        attempted.chunks(4000).flat_map(|chunk| node.lookup_transfers(chunk).expect("lookup")).collect();
    let found_ids: std::collections::HashSet<u128> = found.iter().map(|transfer| transfer.id).collect();
    for id in &acknowledged {
        assert!(found_ids.contains(id), "acknowledged transfer {id} lost in the crash");
    }
    // Conservation across the crash: account 2 holds exactly the phase-1 credits plus one
    // unit per phase-2 transfer that survived.
    let credits_before = before.0[1].credits_posted;
    let account_2 = node.lookup_accounts(&[2]).expect("lookup")[0];
    assert_eq!(account_2.credits_posted, credits_before + found.len() as u128);

    // Replaying the same journal again gives the same state hash.
    let hash = node.status().expect("status").state_hash;
    drop(node);
    server.kill();
    let _server = serve(&data, address);
    let node = client(&[address], Duration::from_secs(10));
    assert_eq!(node.status().expect("status").state_hash, hash, "replay is deterministic");
}
