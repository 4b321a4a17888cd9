//! Multi-process replication tests on loopback: real `tally serve` / `tally standby`
//! processes with a fault proxy on every directed link between two nodes
//! (`common::cluster`), driven through the command line of the replication contract.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tally_client::Client;
use tally_codecs::wire::{Body, FrameDecoder, Reply, Request};
use tally_codecs::{ResultCode, Transfer};

use common::cluster::TestCluster;
use common::{ServerProcess, TempDir, account, client, free_address, transfer};

const ACCOUNTS: u128 = 8;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

fn batch(first_id: u128, count: u128) -> Vec<Transfer> {
    (first_id..first_id + count).map(|id| transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, 1)).collect()
}

fn all_acknowledged(node: &Client, transfers: &[Transfer]) {
    let results = node.create_transfers(transfers).expect("the transfers are answered");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
}

fn create_accounts(node: &Client) {
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    let results = node.create_accounts(&accounts).expect("the accounts are answered");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
}

/// Whether any of `transfers` got acknowledged (`created` or `exists`) by the node.
fn any_acknowledged(answer: Result<Vec<tally_codecs::EventResult>, tally_client::ClientError>) -> bool {
    answer.is_ok_and(|results| {
        results.iter().any(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok))
    })
}

/// `tally rebuild --data DATA ARGS --yes`, which must succeed.
fn rebuild(data: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new(common::TALLY)
        .args(["rebuild", "--data"])
        .arg(data)
        .args(args)
        .arg("--yes")
        .output()
        .expect("tally rebuild runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn ids(transfers: &[Transfer]) -> Vec<u128> {
    transfers.iter().map(|transfer| transfer.id).collect()
}

/// A primary and two standbys under `replicated:1`, converged after some acknowledged load.
fn three_nodes(name: &str) -> TestCluster {
    three_nodes_under(name, "replicated:1")
}

/// [`three_nodes`] under another durability policy.
fn three_nodes_under(name: &str, durability: &str) -> TestCluster {
    let mut cluster = TestCluster::new(name, 3, durability);
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0, 2], &[]);
    cluster.start_standby(2, &[0, 1], &[]);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&node);
    all_acknowledged(&node, &batch(1, 500));
    cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    cluster
}

#[test]
fn partitioned_old_primary_acknowledges_nothing_after_the_promotion() {
    let cluster = three_nodes("partitioned-primary");
    // Node 1 loses the primary; node 2 still hears it, so the primary still gets the one
    // standby acknowledgement replicated:1 needs.
    for link in [cluster.link(0, 1), cluster.link(1, 0)] {
        link.cut();
    }
    let old_primary = client(&[cluster.addresses[0]], Duration::from_secs(3));
    all_acknowledged(&old_primary, &batch(1_000, 100));

    cluster.promote_ok(1);
    // Node 2 promised the new epoch: the old primary, still connected to it, must never
    // again collect an acknowledgement.
    let late = batch(2_000, 100);
    assert!(!any_acknowledged(old_primary.create_transfers(&late)), "the old primary acknowledged after the promotion");
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(10));
    assert!(
        new_primary.lookup_transfers(&ids(&late)).expect("lookup").is_empty(),
        "no late transfer reached the new primary"
    );
    all_acknowledged(&new_primary, &batch(3_000, 100));
    let found = new_primary.lookup_transfers(&ids(&batch(1_000, 100))).expect("lookup");
    assert_eq!(found.len(), 100, "what the old primary acknowledged before the promotion survives it");
}

/// A primary that stops running without dying (SIGSTOP: a frozen virtual machine, a
/// stalled disk) while a standby is promoted, then runs on as if nothing happened. The
/// request it finds waiting when it resumes must not be acknowledged: its standbys have
/// left it for the new primary, and what it hears of the newer epoch fences it (its gate
/// halts); it then rejoins as a standby. Today the waiting request gets no answer at all
/// (the client's own timeout ends the wait), which this test accepts.
#[test]
fn primary_paused_past_the_promotion_acknowledges_nothing_when_resumed() {
    let cluster = three_nodes("paused-primary");
    let mut waiting = TcpStream::connect(cluster.addresses[0]).expect("the primary accepts");
    waiting.set_read_timeout(Some(Duration::from_secs(20))).expect("a timeout");
    let before = cluster.status(0).expect("the primary answers");

    cluster.signal(0, libc::SIGSTOP);
    cluster.promote_ok(1);
    // Sent while the old primary is paused: the bytes wait in its socket for the resume.
    let late = batch(2_000, 100);
    let mut request = Vec::new();
    Request::CreateTransfers(late.clone()).encode(1, 7, &mut request).expect("a valid request");
    waiting.write_all(&request).expect("the kernel takes the request");
    cluster.signal(0, libc::SIGCONT);

    let answer = read_answer(&mut waiting);
    if let Some(Body::Reply(Reply::CreateTransfers(results))) = &answer {
        let acknowledged =
            results.iter().any(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok));
        assert!(!acknowledged, "the resumed old primary acknowledged: {results:?}\n{}", cluster.logs());
    }
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(10));
    assert!(
        new_primary.lookup_transfers(&ids(&late)).expect("lookup").is_empty(),
        "nothing late reached the new primary"
    );
    all_acknowledged(&new_primary, &batch(3_000, 100));

    let converged = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert!(converged.epoch > before.epoch, "every node is in the new epoch: {converged:?}");
    let old = cluster.status(0).expect("the old primary answers");
    assert_eq!(old.role, "standby", "the old primary follows: {old:?}\n{}", cluster.logs());
    assert!(new_primary.lookup_transfers(&ids(&late)).expect("lookup").is_empty(), "and the late batch never did");
    assert_eq!(new_primary.lookup_transfers(&ids(&batch(1, 500))).expect("lookup").len(), 500);
}

/// The node's answer to the one request sent on `stream`, or `None` if it closed the
/// connection or said nothing within the stream's read timeout.
fn read_answer(stream: &mut TcpStream) -> Option<Body> {
    let mut decoder = FrameDecoder::new();
    let mut buffer = [0u8; 4096];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Some(frame.body),
            Ok(None) => {}
            Err(_) => return None,
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(read) => decoder.feed(&buffer[..read]),
        }
    }
}

/// The gap this guards: a primary replaced by a forced promotion while it was down (its
/// machine died; the operator promoted a standby with `--force`), restarted with `tally
/// serve` as an init system would, served in its old epoch and, under `local`,
/// acknowledged writes alone until it next asked its peers' epochs (a second later):
/// writes the new primary never held, lost once it rejoined. It now asks before it serves.
#[test]
fn a_primary_replaced_while_it_was_down_acknowledges_nothing_when_restarted() {
    let mut cluster = three_nodes_under("replaced-while-down", "local");
    cluster.kill(0);
    // Under `local` a promotion needs every node's promise: node 0's is missing.
    let output = cluster.promote_with(1, &["--force", "--timeout-ms", "2000"]);
    assert!(output.status.success(), "{}{}", String::from_utf8_lossy(&output.stderr), cluster.logs());
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    all_acknowledged(&new_primary, &batch(1_000, 100));

    // The standbys cannot reach node 0 (their subscriptions would tell it the new epoch
    // at once); node 0 can reach them.
    for standby in [1, 2] {
        cluster.link(standby, 0).cut();
    }
    cluster.start_primary(0, &[]);
    let mut stream = TcpStream::connect(cluster.addresses[0]).expect("node 0 accepts");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a timeout");
    let late = batch(2_000, 100);
    let mut request = Vec::new();
    Request::CreateTransfers(late.clone()).encode(1, 7, &mut request).expect("a valid request");
    stream.write_all(&request).expect("the request is sent");
    if let Some(Body::Reply(Reply::CreateTransfers(results))) = read_answer(&mut stream) {
        let acknowledged =
            results.iter().any(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok));
        assert!(!acknowledged, "the replaced primary acknowledged in its old epoch:\n{}", cluster.logs());
    }

    cluster.heal_all();
    let converged = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert_eq!(cluster.status(0).expect("node 0 answers").role, "standby", "{converged:?}");
    assert!(new_primary.lookup_transfers(&ids(&late)).expect("lookup").is_empty());
    assert_eq!(new_primary.lookup_transfers(&ids(&batch(1_000, 100))).expect("lookup").len(), 100);
    assert_eq!(new_primary.lookup_transfers(&ids(&batch(1, 100))).expect("lookup").len(), 100);
}

/// The gap this guards: a standby whose primary went silent without closing the
/// connection (its machine lost power, or the link went dark: no reset arrives) waited on
/// that connection for ever, even after it promised a newer epoch, so it never followed
/// the new primary, which under `replicated:1` then acknowledged nothing. It now leaves
/// at once after a promise, and after a few seconds of silence in any case.
#[test]
fn a_standby_whose_primary_went_silent_follows_the_new_primary() {
    let cluster = three_nodes("silent-primary");
    for standby in [1, 2] {
        cluster.link(standby, 0).drop_traffic();
        cluster.link(0, standby).drop_traffic();
    }
    cluster.promote_ok(1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    // Acknowledged only once node 2 follows node 1.
    all_acknowledged(&new_primary, &batch(9_000, 100));
    assert_eq!(new_primary.lookup_transfers(&ids(&batch(1, 500))).expect("lookup").len(), 500);
}

/// Waits until node `index` reports `role`; panics with every log after 30 s.
fn wait_for_role(cluster: &TestCluster, index: usize, role: &str) {
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while cluster.status(index).is_none_or(|status| status.role != role) {
        assert!(std::time::Instant::now() < deadline, "node {index} never became {role}:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The gap this guards: a standby's auto-promotion watch ended for good once its node had
/// been promoted, so a node promoted once, then replaced and rejoined as a standby, never
/// stood again by itself. Two nodes under `replicated:1`: a promotion needs only the
/// candidate's own promise.
#[test]
fn a_node_promoted_once_auto_promotes_again_after_it_rejoined() {
    let mut cluster = TestCluster::new("auto-again", 2, "replicated:1");
    let auto = ["--auto-promote-after-ms", "400"];
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &auto);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&node);
    all_acknowledged(&node, &batch(1, 50));
    drop(node);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // The primary dies: node 1 promotes itself; node 0 returns as its standby.
    cluster.kill(0);
    wait_for_role(&cluster, 1, "primary");
    cluster.start_standby(0, &[1], &auto);
    all_acknowledged(&client(&[cluster.addresses[1]], Duration::from_secs(20)), &batch(1_000, 50));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    // An operator switches back to node 0 (once it has caught up and is promotable);
    // node 1 is fenced and rejoins as a standby.
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while !cluster.promote(0).status.success() {
        assert!(std::time::Instant::now() < deadline, "node 0 was never promoted:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_role(&cluster, 1, "standby");
    let before = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // Node 0 dies: node 1, promoted once before, must promote itself again (and, alone
    // under `replicated:1`, acknowledges nothing until a standby returns).
    cluster.kill(0);
    wait_for_role(&cluster, 1, "primary");
    let after = cluster.status(1).expect("node 1 answers");
    assert!(after.epoch > before.epoch, "a new epoch: {after:?} after {before:?}");
}

/// A standby whose state is not the one its journal gives (here: its snapshot was swapped
/// for one of another history at the same sequence, a stand-in for a bug or a bad disk
/// under a ledger) must not go on serving as a copy of the primary. The primary sends its
/// state hash every `CHECKPOINT_INTERVAL` records; the standby compares it with its own at
/// that sequence (kept for its last records, as the hash usually arrives after the standby
/// has passed it) and stops loudly.
#[test]
fn a_standby_whose_state_hash_disagrees_with_the_primarys_stops_loudly() {
    let mut cluster = TestCluster::new("diverged-state", 2, "local");
    let quiet = ["--snapshot-interval-s", "0", "--tick-interval-ms", "3600000"];
    cluster.start_primary(0, &quiet);
    cluster.start_standby(1, &[0], &quiet);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary);
    all_acknowledged(&primary, &batch(1, 100));
    let converged = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    // A clean stop: the standby's history store then holds everything its snapshot
    // covers, so its next start trusts the snapshot (a killed one may replay instead).
    assert!(cluster.terminate(1), "the standby stops cleanly");

    // Another node with the same number of inputs and other amounts: its snapshot at
    // the same sequence holds a different state.
    let other = TempDir::new("diverged-state-other");
    let other_data = other.path().join("data");
    let node = ServerProcess::start(&other_data, free_address(), &quiet);
    let other_client = client(&[node.address], Duration::from_secs(20));
    create_accounts(&other_client);
    let doubled: Vec<Transfer> = batch(1, 100).into_iter().map(|transfer| Transfer { amount: 2, ..transfer }).collect();
    all_acknowledged(&other_client, &doubled);
    assert_eq!(other_client.status().expect("status").last_sequence, converged.last_sequence, "the same sequence");
    drop(other_client);
    assert!(node.terminate(), "a clean stop writes a snapshot");
    let snapshots = cluster.data(1).join("snapshots");
    std::fs::create_dir_all(&snapshots).expect("the standby's snapshot directory");
    for entry in std::fs::read_dir(other_data.join("snapshots")).expect("the other node's snapshots") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "snap") {
            std::fs::copy(&path, snapshots.join(path.file_name().expect("a name"))).expect("copied");
        }
    }

    cluster.start_standby(1, &[0], &quiet);
    // The load must meet a standby that follows live, not one that catches up afterwards.
    all_acknowledged(&primary, &batch(900, 1));
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while cluster.status(1).is_none_or(|status| status.applied_sequence <= converged.last_sequence) {
        assert!(std::time::Instant::now() < deadline, "the standby follows again:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Up to three state-hash intervals of records, one per request, back to back from
    // four clients at once. The primary sends the hash after the sequence it has applied,
    // which then trails what it has journaled and shipped: the standby has usually passed
    // that sequence when the hash arrives and compares it with the hash it kept for it.
    let address = cluster.addresses[0];
    std::thread::scope(|scope| {
        for sender in 0..4u128 {
            let cluster = &cluster;
            scope.spawn(move || {
                let primary = client(&[address], Duration::from_secs(20));
                for id in (1_000 + sender * 1_000..).take(48) {
                    if cluster.log(1).contains("STANDBY STOPPED") {
                        break;
                    }
                    all_acknowledged(&primary, &batch(id, 1));
                }
            });
        }
    });
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while cluster.status(1).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby goes on: {:?} vs the primary's {:?}\n{}",
            cluster.status(1),
            cluster.status(0),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = cluster.log(1);
    assert!(log.contains("STANDBY STOPPED") && log.contains("state diverged at sequence"), "it says why:\n{log}");
    all_acknowledged(&primary, &batch(5_000, 10));
}

#[test]
fn cut_off_standby_catches_up_when_healed() {
    let cluster = three_nodes("cut-off-standby");
    for link in cluster.links_of(2) {
        link.cut();
    }
    // The other standby is slow but connected: the primary still acknowledges through it.
    cluster.link(0, 1).delay(Duration::from_millis(5));
    cluster.link(1, 0).delay(Duration::from_millis(5));
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    for first in (10_000..12_000).step_by(200) {
        all_acknowledged(&primary, &batch(first, 200));
    }
    let ahead = cluster.status(0).expect("the primary answers");
    let behind = cluster.status(2).expect("the cut-off standby answers");
    assert!(behind.last_sequence < ahead.last_sequence, "the cut really cut: {behind:?} vs {ahead:?}");

    cluster.heal_all();
    let converged = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert!(converged.applied_sequence >= ahead.last_sequence, "the standby caught up past what it missed");
}

#[test]
fn diverged_old_primary_truncates_its_unacknowledged_suffix_and_converges() {
    let mut cluster = three_nodes("diverged-primary");
    // The standbys lose the primary's stream at once; what the primary itself sends to
    // them goes into a black hole.
    for standby in [1, 2] {
        cluster.link(standby, 0).cut();
        cluster.link(0, standby).drop_traffic();
    }
    // The cut-off primary journals these but can never get them acknowledged.
    let unacknowledged = batch(20_000, 300);
    let old_primary = client(&[cluster.addresses[0]], Duration::from_secs(2));
    assert!(!any_acknowledged(old_primary.create_transfers(&unacknowledged)));
    let diverged = cluster.status(0).expect("the old primary answers");
    let follower = cluster.status(1).expect("the standby answers");
    assert!(
        diverged.last_sequence > follower.last_sequence,
        "the old primary has a suffix: {diverged:?} vs {follower:?}"
    );

    cluster.promote_ok(1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let acknowledged = batch(30_000, 300);
    all_acknowledged(&new_primary, &acknowledged);
    cluster.kill(0);
    cluster.heal_all();
    cluster.start_standby(0, &[1, 2], &[]);

    let converged = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert!(converged.epoch > diverged.epoch, "the old primary follows the new epoch: {converged:?}");
    assert!(new_primary.lookup_transfers(&ids(&unacknowledged)).expect("lookup").is_empty(), "the suffix is gone");
    assert_eq!(new_primary.lookup_transfers(&ids(&acknowledged)).expect("lookup").len(), acknowledged.len());
}

#[test]
fn standby_from_an_empty_directory_gets_the_checkpoint_and_converges() {
    let mut cluster = TestCluster::new("empty-standby", 2, "local");
    // Small segments roll over often; each snapshot lets the primary delete the segments
    // below the oldest one it keeps.
    cluster.start_primary(0, &["--snapshot-interval-s", "1", "--journal-segment-mib", "4"]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary);
    let mut first = 100_000;
    // On a loaded machine checkpoints take seconds: after enough transfers, stop sending
    // and give the next checkpoint time to let the primary drop its first segment.
    let give_up = std::time::Instant::now() + Duration::from_secs(90);
    while oldest_segment(&cluster.data(0).join("journal")) <= 1 {
        assert!(
            std::time::Instant::now() < give_up,
            "the primary never dropped its first segment:\n{:?}\n{}",
            std::fs::read_dir(cluster.data(0).join("journal"))
                .map(|entries| entries.filter_map(Result::ok).map(|entry| entry.file_name()).collect::<Vec<_>>()),
            cluster.log(0)
        );
        if first < 100_000 + 400_000 {
            all_acknowledged(&primary, &bulky_batch(first, 8_000));
            first += 8_000;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let oldest = oldest_segment(&cluster.data(0).join("journal"));
    // The idle primary's next checkpoint covers its last record: the standby then starts
    // from it with no record after it.
    let last = cluster.status(0).expect("the primary answers").last_sequence;
    let snapshot = cluster.data(0).join("snapshots").join(format!("{last:020}.snap"));
    while !snapshot.exists() {
        assert!(std::time::Instant::now() < give_up, "no checkpoint at {last}:\n{}", cluster.log(0));
        std::thread::sleep(Duration::from_millis(100));
    }

    cluster.start_standby(1, &[0], &[]);
    let converged = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert!(converged.applied_sequence >= oldest, "the standby holds what the primary holds");
    assert!(
        std::fs::read_dir(cluster.data(1).join("snapshots")).is_ok_and(|mut entries| entries.next().is_some()),
        "the standby holds the checkpoint it started from"
    );
    assert!(
        oldest_segment(&cluster.data(1).join("journal")) > 1,
        "the standby's journal starts after the checkpoint, not at sequence 1"
    );
    assert!(cluster.log(1).contains("installed the checkpoint"), "the standby says what it did:\n{}", cluster.log(1));
    // Until a record arrives, its journal cannot say the epoch of the checkpoint's last
    // record: it would promise a log of epoch 0, so it stays recovering.
    let marker = cluster.data(1).join("RECOVERING");
    assert_eq!(oldest_segment(&cluster.data(1).join("journal")), last + 1, "no record after the checkpoint");
    assert!(marker.exists(), "a standby holding only a checkpoint left recovering:\n{}", cluster.log(1));

    // It follows from there: new transfers reach it, and a restart resumes from its disk.
    all_acknowledged(&primary, &batch(first, 1_000));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while marker.exists() {
        assert!(std::time::Instant::now() < deadline, "it never left recovering:\n{}", cluster.log(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.kill(1);
    cluster.start_standby(1, &[0], &[]);
    all_acknowledged(&primary, &batch(first + 1_000, 1_000));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // A crash in the middle of an install leaves the staging directory: the next start
    // trusts nothing it holds, clears it and installs the checkpoint again.
    cluster.kill(1);
    std::fs::create_dir(cluster.data(1).join("checkpoint-incoming")).expect("created");
    cluster.start_standby(1, &[0], &[]);
    all_acknowledged(&primary, &batch(first + 2_000, 1_000));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    let log = cluster.log(1);
    assert!(log.contains("interrupted checkpoint install"), "{log}");
    assert!(!cluster.data(1).join("checkpoint-incoming").exists(), "the staging directory is gone");
}

/// A replica rebuilt from an empty disk may have held inputs only it and the dead primary
/// had: counted as a promise of its empty log, it would let a promotion lose them.
#[test]
fn a_rebuilt_standby_promises_nothing_until_it_has_caught_up_with_a_primary() {
    let mut cluster = three_nodes("rebuilt-standby");
    // Node 2 stops hearing the primary: what follows is held by the primary and node 1.
    for link in [cluster.link(0, 2), cluster.link(2, 0)] {
        link.cut();
    }
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let acknowledged = batch(1_000, 100);
    all_acknowledged(&primary, &acknowledged);
    drop(primary);
    // Stopped cleanly: a primary killed under `replicated:1` may have lost what it
    // acknowledged before its own flush, and would come back recovering too.
    assert!(cluster.terminate(0), "the primary stops cleanly");
    // Node 1's journal is lost; the operator rebuilds it and starts it again.
    cluster.kill(1);
    rebuild(&cluster.data(1), &[]);
    cluster.start_standby(1, &[0, 2], &[]);

    // The rule needs N − k = 2 promises: node 2's own and node 1's, which may not count.
    let refused = cluster.promote(2);
    let text = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(!refused.status.success(), "a promotion counted the rebuilt node's empty log:\n{text}");
    let log = cluster.log(2);
    assert!(log.contains("refused to promise: recovering"), "the candidate's log says why: {text}\n{log}");

    // The old primary returns as a standby: with its promise the promotion takes its log.
    cluster.heal_all();
    cluster.start_standby(0, &[1, 2], &[]);
    cluster.promote_ok(2);
    let new_primary = client(&[cluster.addresses[2]], Duration::from_secs(20));
    let found = new_primary.lookup_transfers(&ids(&acknowledged)).expect("lookup");
    assert_eq!(found.len(), acknowledged.len(), "every acknowledged transfer survives");

    // Node 1 catches up from the new primary, and then promises again: with node 2 gone,
    // nodes 1 and 0 promote node 1.
    cluster.wait_converged(&[2, 0, 1], CONVERGE_TIMEOUT);
    let marker = cluster.data(1).join("RECOVERING");
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while marker.exists() {
        assert!(std::time::Instant::now() < deadline, "node 1 never left recovering:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(new_primary);
    cluster.kill(2);
    cluster.promote_ok(1);
    let promoted = client(&[cluster.addresses[1]], Duration::from_secs(20));
    assert_eq!(promoted.lookup_transfers(&ids(&acknowledged)).expect("lookup").len(), acknowledged.len());
}

/// A node that lost its disk lost its epoch and its promises with it. Back at epoch 0 and
/// able to reach only a primary that a promotion deposed while it was away (the promotion
/// counted on its promise), it would complete that primary's acknowledgements: two
/// primaries acknowledging at once. It first hears k + 1 peers' epochs.
#[test]
fn a_node_that_lost_its_disk_never_completes_a_deposed_primarys_acknowledgements() {
    let mut cluster = three_nodes("lost-disk");
    // The primary is cut off; nodes 1 and 2 promote node 1.
    for link in cluster.links_of(0) {
        link.cut();
    }
    cluster.promote_ok(1);
    cluster.wait_converged(&[1, 2], CONVERGE_TIMEOUT);
    // Node 2 loses its disk and returns reaching only the deposed primary.
    cluster.kill(2);
    std::fs::remove_dir_all(cluster.data(2)).expect("node 2's disk is gone");
    for link in [cluster.link(2, 1), cluster.link(1, 2)] {
        link.cut();
    }
    for link in [cluster.link(2, 0), cluster.link(0, 2)] {
        link.heal();
    }
    cluster.start_standby(2, &[0, 1], &[]);
    let deposed = client(&[cluster.addresses[0]], Duration::from_secs(5));
    let late = batch(5_000, 10);
    assert!(
        !any_acknowledged(deposed.create_transfers(&late)),
        "the deposed primary acknowledged with a node that lost its disk:\n{}",
        cluster.logs()
    );
    assert!(cluster.log(2).contains("waiting for 2 peers' epochs") || cluster.log(2).contains("asking 2 of"));

    // Healed, it hears the new epoch and follows the new primary.
    cluster.heal_all();
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    all_acknowledged(&new_primary, &batch(6_000, 10));
    cluster.wait_converged(&[1, 2], CONVERGE_TIMEOUT);
    assert!(new_primary.lookup_transfers(&ids(&late)).expect("lookup").is_empty(), "nothing of the deposed primary");
}

/// A candidate copies what its best peer holds beyond its own log (a `Fetch`). The answer
/// was cut only by count (1 024 records), never by bytes: a dozen records of full
/// `create_accounts` batches (≈ 1 MiB each) went out as one frame above the 8 MiB the
/// candidate's decoder accepts, and the promotion failed the same way on every try.
#[test]
fn a_promotion_catches_up_over_more_than_one_frame_of_records() {
    let mut cluster = three_nodes("large-catch-up");
    // Node 1 stops hearing the primary: node 2 alone holds what follows.
    for link in [cluster.link(0, 1), cluster.link(1, 0)] {
        link.cut();
    }
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let first = 1_000u128;
    let batches = 12u128;
    for index in 0..batches {
        let start = first + index * 8_189;
        let accounts: Vec<_> = (start..start + 8_189).map(account).collect();
        let results = primary.create_accounts(&accounts).expect("the accounts are answered");
        assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
    }
    drop(primary);
    cluster.wait_converged(&[0, 2], CONVERGE_TIMEOUT);
    cluster.kill(0);
    cluster.heal_all();
    cluster.promote_ok(1);
    let promoted = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let last = first + batches * 8_189 - 1;
    let found = promoted.lookup_accounts(&[first, last]).expect("lookup");
    assert_eq!(found.len(), 2, "the promoted node lacks what node 2 held:\n{}", cluster.logs());
}

/// `tally rebuild --epoch E` on a replaced disk with `E` above every epoch of the set (a
/// typo) wrote `E` to the epoch file: the rebuilt standby's first subscription told the
/// live primary of a newer epoch, and the primary fenced itself. The claim now waits for
/// the peers to hold it: only the rebuilt node stays out, and says why.
#[test]
fn a_mistyped_rebuild_epoch_keeps_the_rebuilt_node_out_and_the_primary_serving() {
    let mut cluster = three_nodes("rebuild-claim");
    let epoch = cluster.status(0).expect("the primary answers").epoch;
    cluster.kill(2);
    std::fs::remove_dir_all(cluster.data(2)).expect("node 2's disk is gone");
    let data = cluster.data(2);
    rebuild(&data, &["--epoch", &(epoch + 40).to_string()]);
    cluster.start_standby(2, &[0, 1], &[]);
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while !cluster.log(2).contains("an epoch above every peer's") {
        assert!(std::time::Instant::now() < deadline, "node 2 never said why it waits:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    all_acknowledged(&primary, &batch(5_000, 100));
    for node in [0, 1] {
        let status = cluster.status(node).expect("the node answers");
        assert_eq!(status.epoch, epoch, "node {node} moved to the mistyped epoch:\n{}", cluster.logs());
    }
    assert_eq!(cluster.status(0).expect("the primary answers").role, "primary", "{}", cluster.logs());
    let waiting = cluster.status(2).expect("node 2 answers");
    assert_eq!(waiting.epoch, 0, "node 2 shows no epoch it was only told: {waiting:?}");

    // Rebuilt again with the set's epoch, it follows.
    cluster.kill(2);
    rebuild(&data, &["--epoch", &epoch.to_string()]);
    cluster.start_standby(2, &[0, 1], &[]);
    all_acknowledged(&primary, &batch(6_000, 100));
    cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert_eq!(cluster.status(2).expect("node 2 answers").epoch, epoch);
}

/// The gap this guards: a node returning while the only primary it can reach is one a
/// promotion deposed (cut off, it has not heard of the promotion) compared its log with
/// that primary's and truncated the newer epoch's records, acknowledged ones among them:
/// under `replicated:1` it may be the one standby that holds them. Its probes now carry
/// the epoch it knows; a primary of an older epoch refuses them (and learns it was
/// replaced), and the node keeps its log.
#[test]
fn a_returning_node_never_truncates_the_newer_epochs_records_against_a_deposed_primary() {
    let mut cluster = three_nodes("deposed-probe");
    for link in cluster.links_of(0) {
        link.cut();
    }
    cluster.promote_ok(1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let acknowledged = batch(7_000, 300);
    all_acknowledged(&new_primary, &acknowledged);
    drop(new_primary);
    let held = cluster.wait_converged(&[1, 2], CONVERGE_TIMEOUT);

    // Node 2 restarts able to reach only the deposed primary, which reaches nobody.
    cluster.kill(2);
    for link in [cluster.link(2, 1), cluster.link(1, 2)] {
        link.cut();
    }
    cluster.link(2, 0).heal();
    cluster.start_standby(2, &[0, 1], &[]);
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while !["could not compare this journal with", "diverges from"].iter().any(|said| cluster.log(2).contains(said)) {
        assert!(std::time::Instant::now() < deadline, "node 2 never compared its log:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = cluster.status(2).expect("node 2 answers");
    assert!(
        back.last_sequence >= held.last_sequence,
        "node 2 truncated the newer epoch's records: {back:?} against {held:?}\n{}",
        cluster.logs()
    );

    // The new primary's machine is lost for good: node 2, with the deposed primary's
    // promise, takes over, and what was acknowledged survives.
    cluster.kill(1);
    cluster.promote_ok(2);
    let last = client(&[cluster.addresses[2]], Duration::from_secs(20));
    let found = last.lookup_transfers(&ids(&acknowledged)).expect("lookup");
    assert_eq!(found.len(), acknowledged.len(), "acknowledged transfers lost:\n{}", cluster.logs());
}

/// A standby whose restart cuts records from its journal's tail (damage in the last
/// records, as a torn write or rot leaves them) cannot vouch for them: they lie above the
/// durable mark on disk, which lags one flush, so it may have acknowledged them. It is
/// recovering until it has caught up with a primary.
#[test]
fn a_standby_whose_restart_cut_its_journals_tail_is_recovering() {
    let mut cluster = TestCluster::new("cut-tail", 2, "replicated:1");
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &[]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary);
    all_acknowledged(&primary, &batch(1, 100));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    // Killed, not stopped: a clean stop would record the last flush as durable. The
    // primary stops cleanly, so that it may serve again (killed under `replicated:1`, it
    // would come back recovering: its journal may lack what it acknowledged).
    cluster.kill(1);
    assert!(cluster.terminate(0), "the primary stops cleanly");
    flip_last_journal_byte(&cluster.data(1));

    cluster.start_standby(1, &[0], &[]);
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while !cluster.log(1).contains("tail was cut") {
        assert!(std::time::Instant::now() < deadline, "no cut reported:\n{}", cluster.log(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cluster.data(1).join("RECOVERING").exists(), "it may lack what it acknowledged:\n{}", cluster.log(1));
    // Back with its primary, it catches up and leaves recovering.
    cluster.start_primary(0, &[]);
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while cluster.data(1).join("RECOVERING").exists() {
        assert!(std::time::Instant::now() < deadline, "never caught up:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Flips the last byte written to the journal in `data`: its last record is damaged and
/// nothing intact follows it (a torn write, or rot on a record flushed last).
fn flip_last_journal_byte(data: &std::path::Path) {
    let newest = std::fs::read_dir(data.join("journal"))
        .expect("the journal directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .max()
        .expect("a segment");
    let mut bytes = std::fs::read(&newest).expect("the segment");
    let last = bytes.iter().rposition(|&byte| byte != 0).expect("records");
    bytes[last] ^= 0xFF;
    std::fs::write(&newest, bytes).expect("the damaged segment");
}

/// The same for a primary: restarted with `tally serve` after its tail was cut, a member of
/// a replica set does not serve a log that may lack what it acknowledged (here
/// `local+replicated:1`, so the kill alone leaves no unflushed acknowledgements); started
/// as a standby of the promoted one, it catches up and leaves recovering.
#[test]
fn a_primary_whose_restart_cut_its_journals_tail_is_recovering_and_not_served() {
    let mut cluster = TestCluster::new("primary-cut-tail", 2, "local+replicated:1");
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &[]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary);
    all_acknowledged(&primary, &batch(1, 100));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    drop(primary);
    cluster.kill(0);
    flip_last_journal_byte(&cluster.data(0));

    let (exit, text) = cluster.serve_refused(0).expect("a primary served a log whose tail was cut");
    assert!(!exit.success(), "{text}");
    assert!(text.contains("tail was cut"), "{text}");
    assert!(cluster.data(0).join("RECOVERING").exists(), "{text}");

    cluster.promote_ok(1);
    cluster.start_standby(0, &[1], &[]);
    all_acknowledged(&client(&[cluster.addresses[1]], Duration::from_secs(20)), &batch(1_000, 10));
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while cluster.data(0).join("RECOVERING").exists() {
        assert!(std::time::Instant::now() < deadline, "never caught up:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_converged(&[1, 0], CONVERGE_TIMEOUT);
}

/// Like [`batch`], with user data that the journal's compact encoding cannot shrink, so
/// that a few batches fill a small segment.
fn bulky_batch(first_id: u128, count: u128) -> Vec<Transfer> {
    let mut transfers = batch(first_id, count);
    for transfer in &mut transfers {
        transfer.user_data_128 = transfer.id.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | (1 << 127);
        transfer.user_data_64 = (transfer.user_data_128 >> 64) as u64 | (1 << 63);
    }
    transfers
}

/// The first sequence of the oldest segment file in a journal directory.
fn oldest_segment(journal: &std::path::Path) -> u64 {
    std::fs::read_dir(journal)
        .expect("the journal directory exists")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .min()
        .unwrap_or(0)
}

#[test]
fn peer_with_the_wrong_secret_is_refused_and_never_receives_a_record() {
    let mut cluster = TestCluster::new("wrong-secret", 3, "local");
    cluster.set_secret(2, "not the secret the replica set shares");
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &[]);
    cluster.start_standby(2, &[0], &[]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary);
    all_acknowledged(&primary, &batch(40_000, 500));

    // The standby with the right secret is the control: the same setup does replicate.
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    let outsider = cluster.status(2).expect("the outsider answers status");
    assert_eq!(outsider.last_sequence, 0, "a peer that cannot prove the secret received records: {outsider:?}");
    let log = cluster.log(0).to_ascii_lowercase();
    assert!(log.contains("refused"), "the primary logs the refused peer:\n{log}");
}

/// A recovering standby leaves the state under steady load, not only once the primary
/// falls idle: the primary sends its heartbeat ("everything the log held has been shipped")
/// whenever this stream's reader reaches the log's end, at most every 200 ms, however
/// busy it is. A heartbeat sent only after 200 ms without records would keep a new or
/// rebuilt standby out of every promotion for as long as clients keep writing.
#[test]
fn a_recovering_standby_catches_up_while_the_primary_never_falls_idle() {
    let mut cluster = TestCluster::new("busy-catch-up", 2, "local");
    cluster.start_primary(0, &[]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut id = 1;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                all_acknowledged(&primary, &batch(id, 1));
                id += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            id
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // A new standby (no epoch file, an empty log) is recovering from its start.
    cluster.start_standby(1, &[0], &[]);
    let marker = cluster.data(1).join("RECOVERING");
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while !cluster.log(1).contains("this node's epoch is not confirmed") {
        assert!(std::time::Instant::now() < deadline, "not marked recovering:\n{}", cluster.log(1));
        std::thread::sleep(Duration::from_millis(20));
    }
    while marker.exists() {
        assert!(!writing.is_finished(), "the writer stopped");
        assert!(std::time::Instant::now() < deadline, "never caught up under load:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!writing.is_finished(), "caught up only once the load had stopped");
    stop.store(true, std::sync::atomic::Ordering::Release);
    let written = writing.join().expect("the writer");
    assert!(written > 30, "only {written} transfers written");
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
}

/// A deposed primary that still has as many streams as it has peers (here a standby
/// outside `--cluster` follows it) never asks its peers' epochs. The new primary asks it
/// (an empty `Fetch` in the new epoch) because nobody follows the new one: that question
/// must fence it. Before, only probes and subscriptions fenced, the question was answered
/// with an empty `Records`, and the old primary served its epoch until it was restarted
/// while the new one, with no standby, acknowledged nothing under `replicated:1`.
#[test]
fn a_deposed_primary_with_an_outsider_following_it_is_fenced_by_the_new_primarys_question() {
    let mut cluster = TestCluster::new("fetch-fences", 2, "replicated:1");
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &[]);
    let secret = cluster.dir.path().join("cluster-secret");
    let secret = secret.to_string_lossy().into_owned();
    let primary_address = cluster.addresses[0].to_string();
    let args = [
        "--cluster-id",
        common::cluster::CLUSTER_ID,
        "--cluster-secret-file",
        &secret,
        "--durability",
        "local",
        "--primary",
        &primary_address,
    ];
    let outsider = ServerProcess::start_as("standby", &cluster.dir.path().join("outsider"), free_address(), &args);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&node);
    all_acknowledged(&node, &batch(1, 20));
    drop(node);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    cluster.link(0, 1).cut();
    cluster.link(1, 0).cut();
    cluster.promote_ok(1);
    cluster.heal_all();
    // Fenced, and then perhaps already following node 1 as a standby.
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while cluster.status(0).is_none_or(|status| status.role == "primary") {
        assert!(std::time::Instant::now() < deadline, "node 0 still serves as primary:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(outsider);
}

/// Automatic promotion asks a pre-vote first (docs/design.md §7a, "Pre-vote"). A standby
/// with `--auto-promote-after-ms` that is cut off from every peer keeps its epoch, so when
/// the partition heals its subscription fences nobody (without the pre-vote it recorded a
/// newer epoch at each attempt and deposed the live primary on its return). A standby cut
/// off from the primary only, while the other standby still hears it, is refused by that
/// standby and by nothing else deposed (without the silence rule the other standby
/// promised, and the set changed primary for a link that failed).
#[test]
fn a_cut_off_standby_with_auto_promote_deposes_no_live_primary() {
    let mut cluster = TestCluster::new("pre-vote", 3, "replicated:1");
    cluster.start_primary(0, &[]);
    let auto = ["--auto-promote-after-ms", "1500"];
    cluster.start_standby(1, &[0, 2], &auto);
    cluster.start_standby(2, &[0, 1], &auto);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&node);
    all_acknowledged(&node, &batch(1, 100));
    let before = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);

    // Node 1 alone, for longer than two of its timeouts (1.5 to 3 s each).
    for (from, to) in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        cluster.link(from, to).cut();
    }
    all_acknowledged(&node, &batch(1_000, 100));
    std::thread::sleep(Duration::from_secs(7));
    cluster.heal_all();
    all_acknowledged(&node, &batch(2_000, 100));
    let healed = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert_eq!(healed.epoch, before.epoch, "node 1's return changed the epoch\n{}", cluster.logs());
    assert_eq!(cluster.status(0).map(|status| status.role), Some("primary".to_owned()), "{}", cluster.logs());

    // Node 1 loses the primary only; node 2 still hears it (and acknowledges for it).
    let before_cut = cluster.log(1).len();
    for (from, to) in [(0, 1), (1, 0)] {
        cluster.link(from, to).cut();
    }
    std::thread::sleep(Duration::from_secs(7));
    all_acknowledged(&node, &batch(3_000, 100));
    cluster.heal_all();
    let after = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    assert_eq!(after.epoch, before.epoch, "a link's failure changed the primary\n{}", cluster.logs());
    assert_eq!(cluster.status(0).map(|status| status.role), Some("primary".to_owned()), "{}", cluster.logs());
    let log = cluster.log(1);
    assert!(
        log.get(before_cut..).is_some_and(|cut| cut.contains("heard its primary")),
        "node 1 never asked, or node 2 never refused because it heard the primary\n{log}"
    );
}
