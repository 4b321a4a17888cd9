//! Damage below the durable mark: a damaged journal record with intact records after it
//! (flushed, perhaps acknowledged) makes the node refuse to start, naming the range;
//! `--repair-from` fetches exactly that range from a peer and writes it in place only if it
//! matches the hash chain on both sides. Real processes on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tally_codecs::{ResultCode, Transfer};
use tally_journal::{JournalReader, ReadLimit};

use common::cluster::{CLUSTER_ID, TestCluster};
use common::{TALLY, account, client, free_address, transfer};

const ACCOUNTS: u128 = 4;
const BATCHES: u128 = 6;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// A refusal comes within a second or two; a node still running after this has started.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Batch `index` of 50 transfers moving `amount` each.
fn batch(index: u128, amount: u128) -> Vec<Transfer> {
    let first = 1_000 + index * 50;
    (first..first + 50).map(|id| transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, amount)).collect()
}

fn acknowledged(node: &tally_client::Client, transfers: &[Transfer]) {
    let results = node.create_transfers(transfers).expect("answered");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
}

/// A one- or two-node replica set that journaled the accounts and `BATCHES` batches of
/// transfers of `amount`, every one acknowledged, converged. With a standby the policy is
/// `local+replicated:1`: the primary flushes before it replies, so once killed it may
/// serve again (under `replicated:1` it would come back recovering).
fn replica_set(name: &str, nodes: usize, amount: u128) -> TestCluster {
    let mut cluster = TestCluster::new(name, nodes, if nodes > 1 { "local+replicated:1" } else { "local" });
    cluster.start_primary(0, &[]);
    if nodes > 1 {
        cluster.start_standby(1, &[0], &[]);
    }
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    assert!(node.create_accounts(&accounts).expect("answered").iter().all(|result| result.status == 0));
    for index in 0..BATCHES {
        acknowledged(&node, &batch(index, amount));
    }
    if nodes > 1 {
        cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    }
    cluster
}

/// Kills node 0 and flips one bit in the payload of its second-to-last journal record, so
/// an intact record follows the damage. Returns the damaged sequence.
fn damage_second_to_last_record(cluster: &mut TestCluster) -> u64 {
    damage_second_to_last_record_of(cluster, 0)
}

/// [`damage_second_to_last_record`] on node `index`.
fn damage_second_to_last_record_of(cluster: &mut TestCluster, index: usize) -> u64 {
    cluster.kill(index);
    let journal = cluster.data(index).join("journal");
    let mut reader = JournalReader::open(&journal, 1, ReadLimit::Everything).expect("the journal opens");
    let mut records = Vec::new();
    while let Some(record) = reader.next_record().expect("intact before the damage") {
        records.push((record.sequence, record.payload.to_vec()));
    }
    let (sequence, payload) = records[records.len() - 2].clone();
    let segment = segment_files(&journal).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("readable");
    let at = bytes.windows(payload.len()).position(|window| window == payload).expect("the payload is in the segment");
    bytes[at + payload.len() / 2] ^= 0x10;
    std::fs::write(&segment, bytes).expect("written");
    sequence
}

fn segment_files(journal: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(journal)
        .expect("readable")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    files.sort();
    files
}

fn journal_bytes(cluster: &TestCluster) -> Vec<u8> {
    segment_files(&cluster.data(0).join("journal")).iter().flat_map(|file| std::fs::read(file).expect("read")).collect()
}

/// `tally serve` over node 0's data, expected to refuse to start. A node that starts
/// instead is killed and the test fails (rather than waiting for it forever).
fn serve_refused(cluster: &TestCluster, extra: &[String]) -> Output {
    let mut child = Command::new(TALLY)
        .arg("serve")
        .arg("--data")
        .arg(cluster.data(0))
        .args(["--listen", &free_address().to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally runs");
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    while child.try_wait().expect("waitable").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_running = child.try_wait().expect("waitable").is_none();
    if still_running {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("tally exits");
    assert!(
        !still_running && !output.status.success(),
        "the node must not start:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn secret_args(cluster: &TestCluster) -> Vec<String> {
    let secret = cluster.dir.path().join("cluster-secret");
    vec!["--cluster-id".into(), CLUSTER_ID.into(), "--cluster-secret-file".into(), secret.to_string_lossy().into()]
}

#[test]
fn a_damaged_record_with_intact_ones_after_it_makes_the_node_refuse_naming_the_range() {
    let mut cluster = replica_set("repair-refuse", 1, 1);
    let damaged = damage_second_to_last_record(&mut cluster);
    let before = journal_bytes(&cluster);
    let output = serve_refused(&cluster, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("records {damaged}..={damaged}")), "the range is named:\n{stderr}");
    assert!(stderr.contains("--repair-from"), "the way out is named:\n{stderr}");
    assert_eq!(journal_bytes(&cluster), before, "a refused start changes nothing");
}

#[test]
fn repair_from_a_standby_that_holds_the_records_starts_with_every_acknowledged_transfer() {
    let mut cluster = replica_set("repair-ok", 2, 1);
    let damaged = damage_second_to_last_record(&mut cluster);
    let standby = cluster.addresses[1].to_string();
    cluster.start_primary(0, &["--repair-from", &standby]);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let ids: Vec<u128> = (0..BATCHES).flat_map(|index| batch(index, 1)).map(|transfer| transfer.id).collect();
    let found = node.lookup_transfers(&ids).expect("answered");
    assert_eq!(found.len(), ids.len(), "every acknowledged transfer is there after the repair");
    // The port is bound before recovery: the log is complete once the node answered.
    assert!(
        cluster.log(0).contains(&format!("REPAIRED journal records {damaged}..={damaged}")),
        "the node says what it repaired:\n{}",
        cluster.log(0)
    );
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
}

#[test]
fn a_peer_whose_records_do_not_chain_is_refused_and_nothing_changes() {
    let mut cluster = replica_set("repair-mismatch", 1, 1);
    // Another history of the same shape: the same requests but moving 2 units each, so
    // its records have the same sizes and different contents. The damaged node proves the
    // other set's secret (each test set has its own), so the copy is refused for its
    // chain, not at the handshake.
    let other = replica_set("repair-other", 1, 2);
    damage_second_to_last_record(&mut cluster);
    let before = journal_bytes(&cluster);
    let mut args = secret_args(&other);
    args.extend(["--repair-from".to_owned(), other.addresses[0].to_string()]);
    let output = serve_refused(&cluster, &args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not chain"), "the copy is refused for its chain:\n{stderr}");
    assert_eq!(journal_bytes(&cluster), before, "a refused copy is not written");
}

/// Damage in a sealed segment (not the last) is repaired from a standby as damage in the
/// last one is: start-up refused it with the record's own reason (a checksum mismatch)
/// and never asked a peer, though the README promised the repair.
#[test]
fn repair_from_a_standby_mends_a_record_in_a_sealed_segment() {
    let mut cluster = TestCluster::new("repair-sealed", 2, "local+replicated:1");
    let small = ["--journal-segment-mib", "4", "--snapshot-interval-s", "0"];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0], &[]);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    assert!(node.create_accounts(&accounts).expect("answered").iter().all(|result| result.status == 0));
    // Full batches until the journal has rolled into a second segment, and one more.
    let journal = cluster.data(0).join("journal");
    let mut ids = Vec::new();
    let mut index = 0u128;
    while segment_files(&journal).len() < 2 {
        assert!(index < 400, "the journal never rolled over");
        let first = 100_000 + index * 8_189;
        let transfers: Vec<Transfer> = (first..first + 8_189)
            .map(|id| transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, 1 + id % 7_919))
            .collect();
        acknowledged(&node, &transfers);
        ids.extend(transfers.iter().map(|transfer| transfer.id));
        index += 1;
    }
    acknowledged(&node, &batch(0, 1));
    ids.extend(batch(0, 1).iter().map(|transfer| transfer.id));
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    cluster.kill(0);
    // A record in the middle of the first (now sealed) segment.
    let sealed = segment_files(&journal).remove(0);
    let mut bytes = std::fs::read(&sealed).expect("readable");
    let mut reader = JournalReader::open(&journal, 1, ReadLimit::Everything).expect("the journal opens");
    let mut in_first = Vec::new();
    while let Some(record) = reader.next_record().expect("intact") {
        if let Some(at) = bytes.windows(record.payload.len()).position(|window| window == record.payload) {
            in_first.push((record.sequence, at + record.payload.len() / 2));
        }
    }
    assert!(in_first.len() >= 3, "the first segment holds several records");
    let (damaged, at) = in_first[in_first.len() / 2];
    bytes[at] ^= 0x10;
    std::fs::write(&sealed, bytes).expect("written");

    let standby = cluster.addresses[1].to_string();
    cluster.start_primary(0, &["--repair-from", &standby, "--journal-segment-mib", "4", "--snapshot-interval-s", "0"]);
    let node = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let mut found = 0;
    for chunk in ids.chunks(8_189) {
        found += node.lookup_transfers(chunk).expect("answered").len();
    }
    assert_eq!(found, ids.len(), "every acknowledged transfer is there after the repair");
    assert!(
        cluster.log(0).contains(&format!("REPAIRED journal records {damaged}..={damaged}")),
        "the node says what it repaired:\n{}",
        cluster.log(0)
    );
}

/// A standby with a damaged record (intact ones after it) repairs it from its primary at
/// start: the search for a divergent suffix opened the journal without a repair source
/// first and refused it, so `tally standby` exited and never reached the repair.
#[test]
fn a_standby_with_a_damaged_record_repairs_it_from_its_primary_at_start() {
    let mut cluster = replica_set("repair-standby", 2, 1);
    let damaged = damage_second_to_last_record_of(&mut cluster, 1);
    cluster.start_standby(1, &[0], &[]);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert!(
        cluster.log(1).contains(&format!("REPAIRED journal records {damaged}..={damaged}")),
        "the standby says what it repaired:\n{}",
        cluster.log(1)
    );
}
