//! Periodic checkpoints: they appear while the node runs (also after the load has stopped), and a
//! node killed afterwards restarts from one, with the same state.

mod common;

use std::time::{Duration, Instant};

use tally_codecs::{ResultCode, Transfer};

use common::{ServerProcess, TempDir, account, client, free_address, transfer};

const ACCOUNTS: u128 = 16;

fn serve(data: &std::path::Path, address: std::net::SocketAddr) -> ServerProcess {
    let args = ["--durability", "local", "--tick-interval-ms", "3600000", "--snapshot-interval-s", "1"];
    ServerProcess::start(data, address, &args)
}

/// A node on `data` at `address` with the test's accounts created, and a client of it.
fn serve_with_accounts(data: &std::path::Path, address: std::net::SocketAddr) -> (ServerProcess, tally_client::Client) {
    let server = serve(data, address);
    let node = client(&[address], Duration::from_secs(20));
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    assert!(node.create_accounts(&accounts).expect("create accounts").iter().all(|r| r.status == 0));
    (server, node)
}

fn snapshot_files(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("snapshots")).map_or(0, |entries| {
        entries.filter_map(Result::ok).filter(|entry| entry.path().extension().is_some_and(|ext| ext == "snap")).count()
    })
}

fn batch(first_id: u128, count: u128) -> Vec<Transfer> {
    (first_id..first_id + count)
        .map(|id| transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, id % 97 + 1))
        .collect()
}

#[test]
fn node_restarts_from_a_periodic_snapshot_with_the_same_state() {
    let dir = TempDir::new("periodic-snapshot");
    let data = dir.path().join("data");
    let address = free_address();
    let (server, node) = serve_with_accounts(&data, address);
    let results = node.create_transfers(&batch(1, 2_000)).expect("create transfers");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status) == Some(ResultCode::Created)));

    let deadline = Instant::now() + Duration::from_secs(20);
    while snapshot_files(&data) == 0 {
        assert!(Instant::now() < deadline, "no periodic snapshot appeared:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // More inputs after the snapshot: the restart must replay them on top of it.
    let results = node.create_transfers(&batch(10_000, 500)).expect("create more transfers");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status) == Some(ResultCode::Created)));
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let before = (node.lookup_accounts(&ids).expect("lookup"), node.status().expect("status").state_hash);
    drop(node);
    server.kill();

    let server = serve(&data, address);
    // The listener is bound before recovery runs, so the recovery line may come a little later.
    let node = client(&[address], Duration::from_secs(20));
    node.status().expect("the restarted node answers");
    let log = server.log();
    assert!(log.contains("recovered from the snapshot at sequence"), "the restart used a snapshot:\n{log}");
    drop(node);
    let node = client(&[address], Duration::from_secs(20));
    let after = (node.lookup_accounts(&ids).expect("lookup"), node.status().expect("status").state_hash);
    assert_eq!(before, after, "the restarted node has the same balances and state hash");
}

#[test]
fn sigterm_stops_cleanly_and_the_restart_starts_from_its_snapshot() {
    let dir = TempDir::new("sigterm");
    let data = dir.path().join("data");
    let address = free_address();
    let args = ["--durability", "local", "--tick-interval-ms", "3600000", "--snapshot-interval-s", "0"];
    let server = ServerProcess::start(&data, address, &args);
    let node = client(&[address], Duration::from_secs(20));
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    assert!(node.create_accounts(&accounts).expect("create accounts").iter().all(|r| r.status == 0));
    let results = node.create_transfers(&batch(1, 1_000)).expect("create transfers");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status) == Some(ResultCode::Created)));
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let before = (node.lookup_accounts(&ids).expect("lookup"), node.status().expect("status").state_hash);
    drop(node);
    assert_eq!(snapshot_files(&data), 0, "periodic snapshots are off in this test");
    assert!(server.terminate(), "SIGTERM ends the node with exit code 0");
    assert_eq!(snapshot_files(&data), 1, "a clean stop writes a snapshot");

    let server = ServerProcess::start(&data, address, &args);
    let node = client(&[address], Duration::from_secs(20));
    let after = (node.lookup_accounts(&ids).expect("lookup"), node.status().expect("status").state_hash);
    assert_eq!(before, after);
    let log = server.log();
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(log.contains("recovered from the snapshot at sequence"), "{log}");
}

/// The newest snapshot on disk is damaged (one flipped bit): the node names it, starts
/// from the one before it and replays the journal from there, to the same state.
#[test]
fn a_damaged_newest_snapshot_is_named_and_the_restart_reaches_the_same_state_from_the_one_before() {
    let dir = TempDir::new("damaged-snapshot");
    let data = dir.path().join("data");
    let address = free_address();
    let (server, node) = serve_with_accounts(&data, address);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = 1;
    while snapshot_files(&data) < 2 {
        assert!(Instant::now() < deadline, "two periodic snapshots never appeared:\n{}", server.log());
        let results = node.create_transfers(&batch(first, 200)).expect("create transfers");
        assert!(results.iter().all(|result| ResultCode::from_u32(result.status) == Some(ResultCode::Created)));
        first += 200;
        std::thread::sleep(Duration::from_millis(100));
    }
    let results = node.create_transfers(&batch(first, 500)).expect("create more transfers");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status) == Some(ResultCode::Created)));
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let before = (node.lookup_accounts(&ids).expect("lookup"), node.status().expect("status").state_hash);
    drop(node);
    server.kill();

    let newest = std::fs::read_dir(data.join("snapshots"))
        .expect("the snapshot directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "snap"))
        .max()
        .expect("a snapshot");
    let mut bytes = std::fs::read(&newest).expect("read the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&newest, bytes).expect("damage the snapshot");

    let server = serve(&data, address);
    let node = client(&[address], Duration::from_secs(20));
    let after = (node.lookup_accounts(&ids).expect("lookup"), node.status().expect("status").state_hash);
    assert_eq!(before, after, "the restart reaches the same balances and state hash");
    let log = server.log();
    let name = newest.file_name().and_then(|name| name.to_str()).expect("a file name");
    assert!(log.contains("skipped a damaged snapshot") && log.contains(name), "the damage is named:\n{log}");
    assert!(log.contains("recovered from the snapshot at sequence"), "an older snapshot was used:\n{log}");
}
