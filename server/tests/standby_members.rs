//! Standbys as full members under the hot/cold design (docs/design.md §3.9, §7a): a
//! standby keeps the primary's hot window, decides with the same cold look-ups, writes
//! its own history store and outcome stream, and once promoted answers lookups, account
//! queries and retries of evicted ids as the old primary did; `/metrics` follows the node
//! a process runs after a promotion or a rejoin. Real processes on loopback.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tally_client::Client;
use tally_codecs::flags::{account as account_flags, filter as filter_flags, transfer as transfer_flags};
use tally_codecs::{Account, AccountFilter, ResultCode, Transfer};

use common::cluster::TestCluster;
use common::{account, client, free_address, transfer};

const ACCOUNTS: u128 = 8;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);
/// The hot window every node of these replica sets uses: two inputs, so that almost
/// everything a test checks has been evicted to the history store.
const HOT_WINDOW: &str = "2";

fn send(node: &Client, event: Transfer) -> ResultCode {
    let results = node.create_transfers(&[event]).expect("the transfer is answered");
    ResultCode::from_u32(results[0].status).expect("a known code")
}

fn create_accounts(node: &Client, ids: impl Iterator<Item = u128>) {
    let accounts: Vec<_> = ids.map(account).collect();
    let results = node.create_accounts(&accounts).expect("the accounts are answered");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
}

/// More single-event inputs than the hot window: everything before them is evicted.
fn evict(node: &Client, next_id: &mut u128) {
    for _ in 0..5 {
        assert_eq!(send(node, transfer(*next_id, 3, 4, 1)), ResultCode::Created);
        *next_id += 1;
    }
}

fn both_sides(account_id: u128) -> AccountFilter {
    AccountFilter {
        account_id,
        flags: filter_flags::DEBITS | filter_flags::CREDITS,
        limit: 100,
        ..AccountFilter::default()
    }
}

fn resolve(pending_id: u128, id: u128, flags: u16) -> Transfer {
    Transfer { id, pending_id, flags, ..Transfer::default() }
}

/// Transfers, a failure, and two pending transfers resolved after they were evicted,
/// all between accounts 101 and 102; then everything is evicted again.
fn history_to_remember(node: &Client, next_id: &mut u128) {
    create_accounts(node, 101..=102);
    let strict = Account { flags: account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, ..account(103) };
    let results = node.create_accounts(&[strict]).expect("the account is answered");
    assert_eq!(results[0].status, ResultCode::Created as u32);
    assert_eq!(send(node, transfer(10, 101, 102, 7)), ResultCode::Created);
    assert_eq!(send(node, transfer(11, 103, 102, 1_000)), ResultCode::ExceedsCredits);
    assert_eq!(
        send(node, Transfer { flags: transfer_flags::PENDING, ..transfer(20, 101, 102, 5) }),
        ResultCode::Created
    );
    assert_eq!(
        send(node, Transfer { flags: transfer_flags::PENDING, ..transfer(21, 101, 102, 4) }),
        ResultCode::Created
    );
    evict(node, next_id);
    assert_eq!(send(node, resolve(20, 22, transfer_flags::POST_PENDING_TRANSFER)), ResultCode::Created);
    assert_eq!(send(node, resolve(21, 23, transfer_flags::VOID_PENDING_TRANSFER)), ResultCode::Created);
    evict(node, next_id);
}

/// What a node answers about that history, every item of it evicted from memory.
#[derive(Debug, PartialEq)]
struct Answers {
    retries: Vec<ResultCode>,
    found: Vec<Transfer>,
    rows: Vec<Transfer>,
}

fn answers(node: &Client) -> Answers {
    let retries = vec![
        send(node, transfer(10, 101, 102, 7)),
        send(node, transfer(10, 101, 102, 8)),
        send(node, transfer(11, 103, 102, 1_000)),
        send(node, resolve(20, 30, transfer_flags::POST_PENDING_TRANSFER)),
        send(node, resolve(21, 31, transfer_flags::VOID_PENDING_TRANSFER)),
        send(node, resolve(20, 22, transfer_flags::POST_PENDING_TRANSFER)),
    ];
    let found = node.lookup_transfers(&[10, 20, 21, 22, 23, 11]).expect("lookup answered");
    let rows = node.get_account_transfers(both_sides(101)).expect("account transfers answered");
    Answers { retries, found, rows }
}

fn expected_retries() -> Vec<ResultCode> {
    vec![
        ResultCode::Exists,
        ResultCode::ExistsWithDifferentAmount,
        ResultCode::IdAlreadyFailed,
        ResultCode::PendingTransferAlreadyPosted,
        ResultCode::PendingTransferAlreadyVoided,
        ResultCode::Exists,
    ]
}

fn check(answers: &Answers, who: &str) {
    assert_eq!(answers.retries, expected_retries(), "{who}: retries of evicted ids");
    let ids: Vec<u128> = answers.found.iter().map(|found| found.id).collect();
    assert_eq!(ids, [10, 20, 21, 22, 23], "{who}: lookups of evicted transfers");
    let rows: Vec<u128> = answers.rows.iter().map(|row| row.id).collect();
    assert_eq!(rows, [10, 20, 21, 22, 23], "{who}: account 101's transfers");
}

#[test]
fn a_standby_at_a_small_hot_window_decides_retries_of_evicted_ids_as_the_primary_and_serves_them_once_promoted() {
    let mut cluster = TestCluster::new("standby-hot-cold", 2, "local");
    cluster.start_primary(0, &["--hot-window", HOT_WINDOW]);
    cluster.start_standby(1, &[0], &["--hot-window", HOT_WINDOW, "--snapshot-interval-s", "1"]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    let mut next_id = 1_000u128;
    history_to_remember(&primary, &mut next_id);
    // The retries change nothing on the primary; a standby that did not find the evicted
    // ids in its own history store would apply them as new transfers and its state hash
    // would part from the primary's (it stops loudly at the next shipped checkpoint).
    let on_primary = answers(&primary);
    check(&on_primary, "the primary");
    evict(&primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    cluster.kill(0);
    force_promote(&cluster, 1);
    let promoted = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let on_promoted = answers(&promoted);
    assert_eq!(on_promoted, on_primary, "the promoted standby answers as the old primary did");
    let log = cluster.log(1);
    assert!(
        !log.contains("replaying the journal from its start"),
        "the promoted standby had its own history store and did not rebuild it:\n{log}"
    );
}

fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("the metrics listener accepts");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

fn samples(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
        .collect()
}

/// Scrapes until `done`; panics with the last scrape after [`SCRAPE_TIMEOUT`].
fn scrape_until(address: SocketAddr, done: impl Fn(&BTreeMap<String, u64>) -> bool) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    loop {
        let body = get(address, "/metrics");
        let samples = samples(&body);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "the metrics never showed the expected state:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const APPLIED: &str = "tally_journal_sequence{kind=\"applied\"}";
const HISTORY_MARK: &str = "tally_derived_durable_sequence{store=\"history\"}";

#[test]
fn standby_from_an_empty_directory_is_promoted_and_answers_like_the_old_primary_and_metrics_follow_the_running_node() {
    let mut cluster = TestCluster::new("standby-from-checkpoint", 2, "local");
    let (metrics_0, metrics_1) = (free_address(), free_address());
    let (metrics_0_arg, metrics_1_arg) = (metrics_0.to_string(), metrics_1.to_string());
    let small = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--hot-window", HOT_WINDOW];
    let mut primary_args = small.to_vec();
    primary_args.extend(["--metrics", &metrics_0_arg]);
    cluster.start_primary(0, &primary_args);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    // History from before the checkpoint the standby will start from.
    let mut next_id = load_until_the_oldest_segment_is_dropped(&cluster, 0, &primary, 100_000);

    let mut standby_args = small.to_vec();
    standby_args.extend(["--metrics", &metrics_1_arg]);
    cluster.start_standby(1, &[0], &standby_args);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert!(cluster.log(1).contains("installed the checkpoint"), "{}", cluster.log(1));
    // The standby's own metrics: its history store follows the records it applies.
    let applied = cluster.status(1).expect("the standby answers").applied_sequence;
    scrape_until(metrics_1, |samples| {
        samples.get(APPLIED) == Some(&applied) && samples.get(HISTORY_MARK).is_some_and(|&mark| mark >= applied)
    });

    // History after the checkpoint, evicted everywhere, then a planned switch-over.
    history_to_remember(&primary, &mut next_id);
    let on_primary = answers(&primary);
    check(&on_primary, "the primary");
    evict(&primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    cluster.kill(0);
    force_promote(&cluster, 1);
    let promoted = client(&[cluster.addresses[1]], Duration::from_secs(20));
    assert_eq!(answers(&promoted), on_primary, "the promoted standby answers as the old primary did");
    // The history from before the checkpoint it was bootstrapped from came with it.
    let before = promoted.lookup_transfers(&[100_000]).expect("lookup answered");
    assert_eq!(before.iter().map(|found| found.id).collect::<Vec<_>>(), [100_000], "history before the checkpoint");

    // The old primary, restarted as it was, learns of the newer epoch, is fenced and
    // rejoins as a standby while it runs; its /metrics now read the standby it became,
    // not the stopped pipeline.
    cluster.start_primary(0, &primary_args);
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while cluster.status(0).is_none_or(|status| status.role != "standby") {
        assert!(Instant::now() < deadline, "the old primary never rejoined:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    evict(&promoted, &mut next_id);
    let converged = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    scrape_until(metrics_0, |samples| samples.get(APPLIED) == Some(&converged.applied_sequence));
    // And the promoted standby's metrics read the primary it became.
    scrape_until(metrics_1, |samples| {
        samples.get(APPLIED) == Some(&converged.applied_sequence) && samples.contains_key("tally_replicated_sequence")
    });
}

/// The gap this guards: a standby bootstrapped from a shipped checkpoint without the
/// primary's history store treats its store as complete from the checkpoint on, so a
/// retry of an id used before the checkpoint and evicted from the hot window finds
/// nothing there: the standby applies it (its state hash parts from the primary's), and
/// once promoted it moves the money a second time.
#[test]
fn a_retry_of_an_id_from_before_the_checkpoint_a_standby_started_from_answers_exists_there_and_moves_nothing() {
    let mut cluster = TestCluster::new("standby-checkpoint-history", 2, "local");
    let small = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--hot-window", "4"];
    cluster.start_primary(0, &small);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    let originals: Vec<Transfer> = (1..=5).map(|id| transfer(id, 1, 2, 10 + id)).collect();
    for original in &originals {
        assert_eq!(send(&primary, *original), ResultCode::Created);
    }
    let mut next_id = load_until_the_oldest_segment_is_dropped(&cluster, 0, &primary, 100_000);
    cluster.start_standby(1, &[0], &small);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert!(cluster.log(1).contains("installed the checkpoint"), "{}", cluster.log(1));

    // The retry on the primary, then more inputs than the hot window: the standby applies
    // the retry as the primary did, or its state hash differs and this never converges.
    assert_eq!(send(&primary, originals[0]), ResultCode::Exists);
    evict(&primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // The standby trims its own journal below its checkpoints, as the primary does.
    load_until_the_oldest_segment_is_dropped(&cluster, 1, &primary, next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    cluster.kill(0);
    force_promote(&cluster, 1);
    let promoted = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let accounts_before = promoted.lookup_accounts(&[1, 2]).expect("accounts answered");
    assert_eq!(send(&promoted, originals[0]), ResultCode::Exists, "the retry on the promoted standby");
    let different = Transfer { amount: 99, ..originals[1] };
    assert_eq!(send(&promoted, different), ResultCode::ExistsWithDifferentAmount);
    let accounts_after = promoted.lookup_accounts(&[1, 2]).expect("accounts answered");
    assert_eq!(accounts_after, accounts_before, "no balance moved");
    let found = promoted.lookup_transfers(&[1, 2, 3, 4, 5]).expect("lookup answered");
    assert_eq!(found.iter().map(|found| found.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
}

/// The gap this guards: an old primary that returns truncates the suffix of its journal
/// that the new primary lacks, but under `local` it had applied that suffix, so its
/// history store holds the suffix's rows and a mark past the truncation. Left there, a
/// retry on the new primary of an id from that suffix, once evicted from the hot window,
/// finds the old row on the returning node (`exists…` where the primary creates it: the
/// state hashes part), and lookups there find transfers that never happened.
#[test]
fn a_returning_primary_removes_the_history_of_the_suffix_it_truncates() {
    let mut cluster = TestCluster::new("rejoin-history", 2, "local");
    let small = ["--hot-window", HOT_WINDOW];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0], &small);
    let old_primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&old_primary, 1..=ACCOUNTS);
    let mut next_id = 1_000u128;
    evict(&old_primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // Cut off, the old primary acknowledges alone (`local`) and writes history rows.
    for link in cluster.links_of(0) {
        link.cut();
    }
    let suffix: Vec<Transfer> = (50_000..50_010).map(|id| transfer(id, 1, 2, 5)).collect();
    for event in &suffix {
        assert_eq!(send(&old_primary, *event), ResultCode::Created);
    }
    force_promote(&cluster, 1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    evict(&new_primary, &mut next_id);
    cluster.heal_all();
    wait_for_rejoin(&cluster, 0);
    assert!(cluster.log(0).contains("truncating the"), "{}", cluster.log(0));

    // Half the suffix's ids are sent again to the new primary, with another amount: new
    // there, so created; then evicted everywhere.
    let retried: Vec<Transfer> = suffix[..5].iter().map(|event| Transfer { amount: 7, ..*event }).collect();
    for event in &retried {
        assert_eq!(send(&new_primary, *event), ResultCode::Created);
    }
    evict(&new_primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // The returning node, promoted in turn, knows the new primary's history only.
    cluster.kill(1);
    force_promote(&cluster, 0);
    let promoted = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let ids: Vec<u128> = suffix.iter().map(|event| event.id).collect();
    let found = promoted.lookup_transfers(&ids).expect("lookup answered");
    let found: Vec<(u128, u128)> = found.iter().map(|found| (found.id, found.amount)).collect();
    let expected: Vec<(u128, u128)> = retried.iter().map(|event| (event.id, 7)).collect();
    assert_eq!(found, expected, "only the retried ids, as the new primary created them");
    assert_eq!(send(&promoted, suffix[9]), ResultCode::Created, "an id only the truncated suffix used");
}

/// The gap this guards: a checkpoint was collected in memory on both sides, under a
/// 4 GiB cap, so a primary with a large history could not bootstrap a standby. Here every
/// node takes and sends chunks of 4 KiB (`--checkpoint-chunk-bytes`, the only part of a
/// checkpoint a standby holds in memory; a larger chunk is refused), and a checkpoint
/// hundreds of times that size is streamed through disk, installed, and followed.
#[test]
fn a_checkpoint_hundreds_of_chunks_long_is_streamed_through_disk_installed_and_followed() {
    const CHUNK: u64 = 4096;
    let mut cluster = TestCluster::new("standby-streamed-checkpoint", 2, "local");
    let chunk = CHUNK.to_string();
    let small = [
        "--snapshot-interval-s",
        "1",
        "--journal-segment-mib",
        "4",
        "--hot-window",
        HOT_WINDOW,
        "--checkpoint-chunk-bytes",
        &chunk,
    ];
    cluster.start_primary(0, &small);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    let mut next_id = load_until_the_oldest_segment_is_dropped(&cluster, 0, &primary, 100_000);

    cluster.start_standby(1, &[0], &small);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    let log = cluster.log(1);
    assert!(log.contains("installed the checkpoint"), "{log}");
    let bytes = received_checkpoint_bytes(&log);
    assert!(bytes > 100 * CHUNK, "a checkpoint of {bytes} bytes is not hundreds of chunks");
    for left in ["checkpoint-receiving", "checkpoint-incoming"] {
        assert!(!cluster.data(1).join(left).exists(), "{left} is removed after the install");
    }
    // It follows on from the checkpoint, history included.
    evict(&primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    cluster.kill(0);
    force_promote(&cluster, 1);
    let promoted = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let before = promoted.lookup_transfers(&[100_000]).expect("lookup answered");
    assert_eq!(before.iter().map(|found| found.id).collect::<Vec<_>>(), [100_000], "history before the checkpoint");
}

/// The gap this guards: a running standby whose primary trimmed its journal past the
/// standby's next record (the standby was cut off meanwhile) stopped with "restart this
/// standby". It now stops following, installs the primary's checkpoint in place and
/// follows on, in the same process.
#[test]
fn a_standby_cut_off_while_the_primary_trims_past_it_installs_the_checkpoint_in_place_and_follows() {
    let mut cluster = TestCluster::new("standby-checkpoint-in-place", 2, "local");
    let small = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--hot-window", HOT_WINDOW];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0], &small);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    let mut next_id = 1_000u128;
    evict(&primary, &mut next_id);
    let held_at = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT).applied_sequence;

    // Cut off, the standby falls behind the primary's oldest journal record.
    cluster.link(1, 0).cut();
    next_id = load_until_trimmed_past(&cluster, 0, &primary, next_id, held_at + 1);
    cluster.heal_all();
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    let log = cluster.log(1);
    assert!(log.contains("installed in place"), "{log}");
    assert_eq!(cluster.status(1).expect("the standby answers").role, "standby");
    // And it follows on.
    evict(&primary, &mut next_id);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
}

/// The gap this guards: a returning node none of whose held records the primary can be
/// followed from (here an old primary that, cut off, acknowledged alone under `local`
/// until its own retention deleted the segment where its log and the new primary's part)
/// must clear its journal, snapshots and history store and start from the primary's
/// checkpoint. Kept, its journal is refused by the primary for good and the nodes never
/// converge.
#[test]
fn a_returning_primary_that_holds_no_record_the_new_primary_shares_starts_from_the_checkpoint() {
    let mut cluster = TestCluster::new("rejoin-nothing-shared", 2, "local");
    let small = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--hot-window", HOT_WINDOW];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0], &small);
    let old_primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&old_primary, (1..=ACCOUNTS).chain([WITNESS_DEBIT, WITNESS_CREDIT]));
    let mut acknowledged = Vec::new();
    for id in 1..=5 {
        assert_eq!(send(&old_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // Cut off, the old primary goes on alone; the standby is promoted with what it has.
    for link in cluster.links_of(0) {
        link.cut();
    }
    let shared_at = cluster.status(1).expect("the standby answers").last_sequence;
    force_promote(&cluster, 1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    for id in 11..=15 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    // Acknowledged by the old primary alone: forfeited by the forced promotion.
    let forfeited: Vec<u128> = (21..=25).collect();
    for &id in &forfeited {
        assert_eq!(send(&old_primary, witness(id)), ResultCode::Created);
    }
    // Until the old primary's oldest record is past the last one the logs share.
    load_until_trimmed_past(&cluster, 0, &old_primary, 100_000, shared_at + 1);
    drop(old_primary);

    cluster.heal_all();
    wait_for_rejoin(&cluster, 0);
    let log = cluster.log(0);
    assert!(log.contains("clearing the journal, snapshots and history store"), "{log}");
    assert!(!log.contains("truncating the"), "nothing to truncate to: {log}");
    for id in 31..=35 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    let converged = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert_eq!(cluster.status(0).expect("node 0 answers").role, "standby");
    assert!(converged.epoch >= 1, "{converged:?}");

    check_witnesses(&new_primary, &acknowledged, &forfeited);
}

/// The gap this guards: a returning old primary that still holds the last record its log
/// shares with the new primary's, but no snapshot at or below it (the ones it keeps were
/// taken in the suffix it acknowledged alone) and not its journal's first records (trimmed
/// long ago). Truncated there, its journal could not be replayed into a state: nothing
/// rebuilds the state at the shared record. It must start from the primary's checkpoint.
#[test]
fn a_returning_primary_whose_snapshots_are_all_past_the_shared_record_starts_from_the_checkpoint() {
    let mut cluster = TestCluster::new("rejoin-no-base", 2, "local");
    let small = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--hot-window", HOT_WINDOW];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0], &["--hot-window", HOT_WINDOW]);
    let old_primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&old_primary, (1..=ACCOUNTS).chain([WITNESS_DEBIT, WITNESS_CREDIT]));
    let mut acknowledged: Vec<u128> = (1..=5).collect();
    for &id in &acknowledged {
        assert_eq!(send(&old_primary, witness(id)), ResultCode::Created);
    }
    load_until_the_oldest_segment_is_dropped(&cluster, 0, &old_primary, 100_000);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    for link in cluster.links_of(0) {
        link.cut();
    }
    let shared = cluster.status(1).expect("the standby answers").last_sequence;
    force_promote(&cluster, 1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    for id in 11..=15 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    // Alone, the old primary acknowledges (forfeited) and checkpoints until every
    // snapshot it keeps is past the shared record, which its active segment still holds.
    let mut forfeited = Vec::new();
    let snapshots = cluster.data(0).join("snapshots");
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while snapshot_sequences(&snapshots).first().is_none_or(|&oldest| oldest <= shared) {
        assert!(Instant::now() < deadline, "the old primary kept a snapshot at or below {shared}:\n{}", cluster.logs());
        let id = 1_001 + forfeited.len() as u128;
        assert_eq!(send(&old_primary, witness(id)), ResultCode::Created);
        forfeited.push(id);
        std::thread::sleep(Duration::from_millis(500));
    }
    let oldest_held = oldest_segment(&cluster.data(0).join("journal"));
    assert!(1 < oldest_held && oldest_held <= shared, "the journal holds {shared} but not record 1: {oldest_held}");
    drop(old_primary);

    cluster.heal_all();
    wait_for_rejoin(&cluster, 0);
    let log = cluster.log(0);
    assert!(log.contains("which no snapshot at or below it"), "{log}");
    assert!(!log.contains("truncating the"), "a truncation with nothing to replay from: {log}");
    for id in 21..=25 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert_eq!(cluster.status(0).expect("node 0 answers").role, "standby");
    check_witnesses(&new_primary, &acknowledged, &forfeited);
}

/// The sequences of the snapshots in a snapshot directory, oldest first.
fn snapshot_sequences(dir: &std::path::Path) -> Vec<u64> {
    let mut sequences: Vec<u64> = std::fs::read_dir(dir)
        .expect("the snapshot directory exists")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".snap")?.parse().ok())
        .collect();
    sequences.sort_unstable();
    sequences
}

/// The gap this guards: a returning old primary whose log parts from the new primary's
/// above the new primary's oldest journal record, while its own journal reaches further
/// back. Its search for the last shared record steps below the new primary's oldest
/// record (it doubles its distance from the end), where the new primary can only say
/// "no longer held". Taken for divergence (the answer of earlier releases), the search
/// ends at "nothing shared" and the node throws its journal away for a checkpoint; it must
/// instead truncate after the last shared record and stream the rest from the new
/// primary's journal. The other rejoin tests have a new primary that trimmed nothing
/// (`failover.rs::a_diverged_old_primary_truncates_its_unacknowledged_suffix_and_converges`,
/// `replication_rejoin.rs`) or nothing to follow from (the checkpoint test above).
#[test]
fn a_returning_primary_whose_log_parts_above_the_new_primarys_oldest_record_truncates_and_streams() {
    let mut cluster = TestCluster::new("rejoin-past-trimmed", 2, "local");
    // Node 0 keeps every record (one large segment); node 1 trims after each snapshot.
    cluster.start_primary(0, &["--hot-window", HOT_WINDOW]);
    let trimming = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--hot-window", HOT_WINDOW];
    cluster.start_standby(1, &[0], &trimming);
    let old_primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&old_primary, (1..=ACCOUNTS).chain([WITNESS_DEBIT, WITNESS_CREDIT]));
    let mut acknowledged: Vec<u128> = (1..=5).collect();
    for &id in &acknowledged {
        assert_eq!(send(&old_primary, witness(id)), ResultCode::Created);
    }
    // Until the standby has deleted its oldest segment: the few records it still holds
    // end where the logs will part.
    load_until_the_oldest_segment_is_dropped(&cluster, 1, &old_primary, 100_000);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);

    // Cut off, the old primary acknowledges alone (forfeited by the forced promotion) a
    // suffix long enough that the search steps below the new primary's oldest record. It
    // probes 1, 2, 4, … records back from its end: after a suffix of 2^j + 1 records the
    // first probe at or below the last shared record lands 2^j − 1 under it. 2^j is more
    // than twice what the new primary still holds, with room for the ticks journaled
    // meanwhile (they lengthen the suffix and move that probe up).
    for link in cluster.links_of(0) {
        link.cut();
    }
    let shared_end = cluster.status(1).expect("the standby answers").last_sequence;
    let held = shared_end + 1 - oldest_segment(&cluster.data(1).join("journal"));
    let suffix = u128::from((2 * held + 16).next_power_of_two()) + 1;
    force_promote(&cluster, 1);
    let forfeited: Vec<u128> = (1_001..1_001 + suffix).collect();
    for &id in &forfeited {
        assert_eq!(send(&old_primary, witness(id)), ResultCode::Created);
    }
    drop(old_primary);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    for id in 11..=15 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    let (kept_by_old, kept_by_new) =
        (oldest_segment(&cluster.data(0).join("journal")), oldest_segment(&cluster.data(1).join("journal")));
    assert!(
        kept_by_new > kept_by_old,
        "the new primary trimmed records the old one holds: {kept_by_new} vs {kept_by_old}"
    );

    cluster.heal_all();
    wait_for_rejoin(&cluster, 0);
    let log = cluster.log(0);
    assert!(log.contains("truncating the"), "{log}");
    for checkpoint in ["clearing the journal", "received its checkpoint", "installed the checkpoint"] {
        assert!(!log.contains(checkpoint), "streamed, not from a checkpoint (`{checkpoint}`): {log}");
    }
    for id in 21..=25 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
        acknowledged.push(id);
    }
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert_eq!(cluster.status(0).expect("node 0 answers").role, "standby");

    check_witnesses(&new_primary, &acknowledged, &forfeited);
}

/// The gap this guards (invariant 6: at most one primary acknowledges in an epoch): two
/// promotions forced in the same epoch on both sides of a partition took epoch + 1 both;
/// each acknowledged as primary of that epoch, and once healed neither fenced the other
/// (an equal epoch is not newer), so the set never converged. Each epoch now has one
/// owner: they take different epochs, and the higher fences the lower.
#[test]
fn two_promotions_forced_apart_from_the_same_epoch_take_different_epochs_and_the_higher_fences_the_lower() {
    let mut cluster = TestCluster::new("forced-apart", 3, "local");
    let small = ["--hot-window", HOT_WINDOW];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0], &small);
    cluster.start_standby(2, &[0], &small);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, (1..=ACCOUNTS).chain([WITNESS_DEBIT, WITNESS_CREDIT]));
    for id in 1..=5 {
        assert_eq!(send(&primary, witness(id)), ResultCode::Created);
    }
    drop(primary);
    cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    cluster.kill(0);
    cluster.link(1, 2).cut();
    cluster.link(2, 1).cut();

    // Each standby, alone, is promoted by force from epoch 0.
    force_promote(&cluster, 1);
    force_promote(&cluster, 2);
    let one = cluster.status(1).expect("node 1 answers");
    let two = cluster.status(2).expect("node 2 answers");
    assert_eq!((one.role.as_str(), two.role.as_str()), ("primary", "primary"));
    assert_ne!(one.epoch, two.epoch, "two forced promotions took the same epoch");
    let (lower, higher) = if one.epoch < two.epoch { (1, 2) } else { (2, 1) };
    let lower_client = client(&[cluster.addresses[lower]], Duration::from_secs(20));
    let higher_client = client(&[cluster.addresses[higher]], Duration::from_secs(20));
    assert_eq!(send(&lower_client, witness(40)), ResultCode::Created);
    assert_eq!(send(&higher_client, witness(41)), ResultCode::Created);

    cluster.heal_all();
    wait_for_rejoin(&cluster, lower);
    assert_eq!(send(&higher_client, witness(42)), ResultCode::Created);
    let converged = cluster.wait_converged(&[1, 2], CONVERGE_TIMEOUT);
    assert_eq!(cluster.status(higher).expect("answers").role, "primary");
    assert_eq!(cluster.status(lower).expect("answers").role, "standby");
    assert_eq!(converged.epoch, one.epoch.max(two.epoch), "{converged:?}");
    let found = higher_client.lookup_transfers(&[1, 2, 3, 4, 5, 40, 41, 42]).expect("lookup answered");
    assert_eq!(found.iter().map(|found| found.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 41, 42]);
}

/// The gap this guards: a running standby whose log parts from the new primary's (a
/// suffix the old primary sent it in the epoch a forced promotion replaced) was refused at
/// every subscription and retried for ever; only a restart of its process truncated the
/// suffix. The refusal now says "diverged", and the standby stops following, truncates
/// what diverges and follows again, in the same process.
#[test]
fn a_running_standby_whose_log_parts_from_the_new_primarys_truncates_in_place_and_follows() {
    let mut cluster = TestCluster::new("parted-standby", 3, "local");
    let small = ["--hot-window", HOT_WINDOW];
    cluster.start_primary(0, &small);
    cluster.start_standby(1, &[0, 2], &small);
    cluster.start_standby(2, &[0, 1], &small);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, (1..=ACCOUNTS).chain([WITNESS_DEBIT, WITNESS_CREDIT]));
    for id in 1..=5 {
        assert_eq!(send(&primary, witness(id)), ResultCode::Created);
    }
    cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    // Node 1 stops hearing the primary; node 2 receives what follows.
    cluster.link(1, 0).cut();
    cluster.link(0, 1).cut();
    for id in 10..=14 {
        assert_eq!(send(&primary, witness(id)), ResultCode::Created);
    }
    drop(primary);
    let parted = cluster.wait_converged(&[0, 2], CONVERGE_TIMEOUT);
    cluster.kill(0);
    cluster.link(1, 2).cut();
    cluster.link(2, 1).cut();

    // Node 1, alone, is promoted by force: what only nodes 0 and 2 held is forfeited.
    force_promote(&cluster, 1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    for id in 20..=39 {
        assert_eq!(send(&new_primary, witness(id)), ResultCode::Created);
    }
    let ahead = cluster.status(1).expect("node 1 answers");
    assert!(ahead.last_sequence > parted.last_sequence, "the new primary holds other records where node 2's log ends");

    cluster.heal_all();
    let converged = cluster.wait_converged(&[1, 2], CONVERGE_TIMEOUT);
    assert_eq!(converged.epoch, ahead.epoch, "{converged:?}");
    assert_eq!(cluster.status(2).expect("node 2 answers").role, "standby");
    let log = cluster.log(2);
    assert!(log.contains("refuses this standby's log") && log.contains("REJOIN: rebuilt in place"), "{log}");
    let ids: Vec<u128> = (1..=5).chain(10..=14).chain(20..=39).collect();
    let found = new_primary.lookup_transfers(&ids).expect("lookup answered");
    let expected: Vec<u128> = (1..=5).chain(20..=39).collect();
    assert_eq!(found.iter().map(|found| found.id).collect::<Vec<_>>(), expected);
}

const WITNESS_DEBIT: u128 = 101;
const WITNESS_CREDIT: u128 = 102;

/// A transfer between the witness accounts of `id` units, so that their balances say
/// which transfers were applied, each once.
fn witness(id: u128) -> Transfer {
    transfer(id, WITNESS_DEBIT, WITNESS_CREDIT, id)
}

/// The size the standby logs for the checkpoint it received ("… (N bytes)").
fn received_checkpoint_bytes(log: &str) -> u64 {
    let line = log.lines().find(|line| line.contains("received its checkpoint")).expect("a received checkpoint");
    let bytes = line.rsplit_once('(').and_then(|(_, rest)| rest.split(' ').next()).and_then(|n| n.parse().ok());
    bytes.unwrap_or_else(|| panic!("no size in {line:?}"))
}

/// Loads `primary` (node 0) with bulky transfers from id `next_id` on until node `index`
/// has deleted the oldest journal segment it had (after a checkpoint): on the primary, so
/// that a new standby must start from that checkpoint; on a standby, to see it trim.
/// Returns the next unused id. A standby is waited for after each batch: it trims only
/// what it has applied and checkpointed, and on a loaded machine it can fall so far
/// behind the primary that the id bound below is reached before it has trimmed anything
/// (the bound counts what was sent, not what the standby has done). The likeliest cause
/// of one failure of the checkpoint-retry test under load; not reproduced.
fn load_until_the_oldest_segment_is_dropped(
    cluster: &TestCluster,
    index: usize,
    primary: &Client,
    next_id: u128,
) -> u128 {
    let oldest = oldest_segment(&cluster.data(index).join("journal"));
    load_until_trimmed_past(cluster, index, primary, next_id, oldest)
}

/// Loads `node` as above until node `index`'s oldest journal segment starts after
/// sequence `past`; returns the next unused id.
fn load_until_trimmed_past(cluster: &TestCluster, index: usize, node: &Client, mut next_id: u128, past: u64) -> u128 {
    let (first_id, journal) = (next_id, cluster.data(index).join("journal"));
    while oldest_segment(&journal) <= past {
        assert!(next_id < first_id + 400_000, "node {index} never trimmed past sequence {past}:\n{}", cluster.logs());
        let transfers: Vec<Transfer> = (next_id..next_id + 8_000)
            .map(|id| bulky(transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, 1)))
            .collect();
        let results = node.create_transfers(&transfers).expect("answered");
        assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
        next_id += 8_000;
        if index != 0 {
            cluster.wait_converged(&[0, index], CONVERGE_TIMEOUT);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    next_id
}

/// `tally promote --force`: with the primary gone, a two-node set under `local` cannot
/// collect both promises.
/// Every acknowledged witness transfer is on `node` exactly once, none of the forfeited
/// ones, and the witness balances say each moved money once.
fn check_witnesses(node: &Client, acknowledged: &[u128], forfeited: &[u128]) {
    let found = node.lookup_transfers(acknowledged).expect("lookup answered");
    assert_eq!(found.iter().map(|found| found.id).collect::<Vec<_>>(), acknowledged);
    assert!(node.lookup_transfers(forfeited).expect("lookup answered").is_empty());
    let accounts = node.lookup_accounts(&[WITNESS_DEBIT, WITNESS_CREDIT]).expect("accounts answered");
    let total: u128 = acknowledged.iter().sum();
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (total, total));
}

/// Waits until node `index` has rejoined as a standby (its log says it rebuilt).
fn wait_for_rejoin(cluster: &TestCluster, index: usize) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while !cluster.log(index).contains("REJOIN: rebuilt") {
        assert!(Instant::now() < deadline, "node {index} never rejoined:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn force_promote(cluster: &TestCluster, index: usize) {
    let output = cluster.promote_with(index, &["--force", "--timeout-ms", "2000"]);
    assert!(
        output.status.success(),
        "promotion failed: {}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
}

/// User data the journal's compact encoding cannot shrink, so that a few batches fill a
/// small segment.
fn bulky(mut transfer: Transfer) -> Transfer {
    transfer.user_data_128 = transfer.id.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) | (1 << 127);
    transfer.user_data_64 = (transfer.user_data_128 >> 64) as u64 | (1 << 63);
    transfer
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

/// A standby restarted after installing a checkpoint and before any record followed it
/// (an idle primary checkpoints at its last sequence, so the standby's journal holds no
/// record): it starts and follows. Found in review: the start looked for a divergent
/// suffix by reading the journal's last record, which it does not hold, and failed at
/// every start until the directory was wiped.
#[test]
fn a_standby_restarted_before_any_record_followed_its_checkpoint_starts_and_follows() {
    let mut cluster = TestCluster::new("restart-after-install", 2, "local");
    let quiet = ["--snapshot-interval-s", "1", "--journal-segment-mib", "4", "--tick-interval-ms", "3600000"];
    cluster.start_primary(0, &quiet);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    let next_id = load_until_the_oldest_segment_is_dropped(&cluster, 0, &primary, 100_000);
    // Idle now: the primary's newest checkpoint comes to cover its last record.
    let last = cluster.status(0).expect("the primary answers").last_sequence;
    let snapshot = cluster.data(0).join("snapshots").join(format!("{last:020}.snap"));
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while !snapshot.exists() {
        assert!(Instant::now() < deadline, "no checkpoint at sequence {last}:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.start_standby(1, &[0], &quiet);
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert!(cluster.log(1).contains("installed the checkpoint"), "{}", cluster.log(1));
    assert_eq!(cluster.status(1).expect("the standby answers").last_sequence, last, "nothing followed it");
    cluster.kill(1);
    cluster.start_standby(1, &[0], &quiet);
    let answered = primary.create_transfers(&[transfer(next_id, 1, 2, 3)]).expect("answered");
    assert_eq!(answered[0].status, ResultCode::Created as u32);
    let converged = cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert_eq!(converged.applied_sequence, last + 1, "the restarted standby applied the new record");
}

/// The segment files of an outcome stream directory.
fn outcome_segments(outcomes: &std::path::Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(outcomes)
        .expect("the outcome stream's directory exists")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(tally_sinks::stream::SEGMENT_SUFFIX)?.parse().ok())
        .collect();
    firsts.sort_unstable();
    firsts
}

/// A standby deletes the outcome segments its primary's sinks all hold (the primary sends
/// `SinksHold`; a promoted standby's sinks resume from those destinations), so its disk
/// does not fill with entries no one will read. Until 2026-12-08 a standby kept every
/// segment (found by review; red without the standby's retention: its first segment
/// stays).
#[test]
fn a_standby_deletes_the_outcome_segments_its_primarys_sinks_hold() {
    let mut cluster = TestCluster::new("standby-outcome-retention", 2, "local");
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &[]);
    let primary = client(&[cluster.addresses[0]], Duration::from_secs(20));
    create_accounts(&primary, 1..=ACCOUNTS);
    let outcomes = cluster.data(1).join("outcomes");
    // The standby's stream starts at sequence 1 once it has applied it: before, the
    // directory may hold nothing, or only a segment made ready for later, which the loop
    // below took for the first one gone (a flaky failure seen under parallel tests).
    cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
    assert_eq!(outcome_segments(&outcomes).first(), Some(&1), "the standby's stream starts at sequence 1");
    let mut next_id = 1_000u128;
    // A 64 MiB segment holds about 250 000 of these transfers' entries.
    while outcome_segments(&outcomes).first().copied().unwrap_or(1) <= 1 {
        assert!(
            next_id < 1_000 + 1_200_000,
            "the standby never deleted its first outcome segment:\n{}",
            cluster.logs()
        );
        let transfers: Vec<Transfer> = (next_id..next_id + 8_000)
            .map(|id| bulky(transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, 1)))
            .collect();
        let results = primary.create_transfers(&transfers).expect("answered");
        assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
        next_id += 8_000;
        // The standby deletes once its own entries are durable and the primary's sinks
        // have moved; give both a moment after a segment boundary.
        if outcome_segments(&outcomes).len() >= 2 {
            cluster.wait_converged(&[0, 1], CONVERGE_TIMEOUT);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let log = cluster.log(1);
    assert!(log.contains("outcome segments every sink holds deleted"), "{log}");
}
