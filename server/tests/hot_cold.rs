//! A node with a hot window of two inputs: answers that need history long evicted from
//! memory (retries, posts and voids of resolved pending transfers, lookups and account
//! queries) come from the history store exactly as before, and still do after a restart
//! (docs/design.md §3.9).

use tally::{Node, NodeConfig};
use tally_codecs::flags::{account as account_flags, filter as filter_flags, transfer as transfer_flags};
use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, AccountFilter, ResultCode, Transfer};

fn node(dir: &std::path::Path) -> Node {
    let config = NodeConfig { hot_window: 2, snapshot_interval: None, ..NodeConfig::new(dir) };
    Node::open(&config).expect("the node opens")
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, flags: u16) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        flags,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

fn resolve(pending_id: u128, id: u128, flags: u16) -> Transfer {
    Transfer { id, pending_id, flags, ..Transfer::default() }
}

fn send(node: &Node, event: Transfer) -> ResultCode {
    match node.submitter().execute(Request::CreateTransfers(vec![event])).expect("answered") {
        Reply::CreateTransfers(results) => ResultCode::from_u32(results[0].status).expect("a known code"),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Pushes everything before it out of the hot window: more single-event inputs than W.
fn fill(node: &Node, next_id: &mut u128) {
    for _ in 0..5 {
        assert_eq!(send(node, transfer(*next_id, 3, 4, 1, 0)), ResultCode::Created);
        *next_id += 1;
    }
}

/// The answers that need the evicted history.
fn check_history(node: &Node) {
    assert_eq!(send(node, transfer(10, 1, 2, 7, 0)), ResultCode::Exists);
    assert_eq!(send(node, transfer(10, 1, 2, 8, 0)), ResultCode::ExistsWithDifferentAmount);
    assert_eq!(send(node, transfer(10, 2, 1, 7, 0)), ResultCode::ExistsWithDifferentDebitAccountId);
    assert_eq!(send(node, transfer(11, 5, 2, 1_000, 0)), ResultCode::IdAlreadyFailed);
    assert_eq!(
        send(node, resolve(20, 30, transfer_flags::POST_PENDING_TRANSFER)),
        ResultCode::PendingTransferAlreadyPosted
    );
    assert_eq!(
        send(node, resolve(21, 31, transfer_flags::VOID_PENDING_TRANSFER)),
        ResultCode::PendingTransferAlreadyVoided
    );
    // The retry of the post itself, completed from its (evicted) pending transfer.
    assert_eq!(send(node, resolve(20, 22, transfer_flags::POST_PENDING_TRANSFER)), ResultCode::Exists);

    let Reply::LookupTransfers(found) =
        node.submitter().execute(Request::LookupTransfers(vec![10, 20, 22, 11])).unwrap()
    else {
        panic!("unexpected reply")
    };
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), [10, 20, 22], "failed 11 was never a transfer");
    assert_eq!(found[0].amount, 7);

    let filter = AccountFilter {
        account_id: 1,
        flags: filter_flags::DEBITS | filter_flags::CREDITS,
        limit: 100,
        ..AccountFilter::default()
    };
    let Reply::GetAccountTransfers(rows) = node.submitter().execute(Request::GetAccountTransfers(filter)).unwrap()
    else {
        panic!("unexpected reply")
    };
    assert_eq!(rows.iter().map(|t| t.id).collect::<Vec<_>>(), [10, 20, 21, 22, 23]);
    let reversed = AccountFilter { flags: filter.flags | filter_flags::REVERSED, limit: 2, ..filter };
    let Reply::GetAccountTransfers(rows) = node.submitter().execute(Request::GetAccountTransfers(reversed)).unwrap()
    else {
        panic!("unexpected reply")
    };
    assert_eq!(rows.iter().map(|t| t.id).collect::<Vec<_>>(), [23, 22]);
    let Reply::GetAccountBalances(rows) = node.submitter().execute(Request::GetAccountBalances(filter)).unwrap() else {
        panic!("unexpected reply")
    };
    let posted: Vec<u128> = rows.iter().map(|row| row.debits_posted).collect();
    assert_eq!(posted, [7, 7, 7, 12, 12], "one row per change: 10, pending 20, pending 21, post 22, void 23");
}

#[test]
fn evicted_history_answers_as_before_and_after_a_restart() {
    let dir = tempfile_dir("restart");
    let mut next_id = 1_000u128;
    {
        let node = node(&dir);
        let accounts = (1..=5u128)
            .map(|id| Account {
                id,
                ledger: 1,
                code: 1,
                flags: if id == 5 { account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS } else { account_flags::HISTORY },
                ..Account::default()
            })
            .collect();
        node.submitter().execute(Request::CreateAccounts(accounts)).unwrap();
        assert_eq!(send(&node, transfer(10, 1, 2, 7, 0)), ResultCode::Created);
        assert_eq!(send(&node, transfer(11, 5, 2, 1_000, 0)), ResultCode::ExceedsCredits);
        assert_eq!(send(&node, transfer(20, 1, 2, 5, transfer_flags::PENDING)), ResultCode::Created);
        assert_eq!(send(&node, transfer(21, 1, 2, 4, transfer_flags::PENDING)), ResultCode::Created);
        fill(&node, &mut next_id);
        // Both pending transfers are long out of the hot window of transfers, still open.
        assert_eq!(send(&node, resolve(20, 22, transfer_flags::POST_PENDING_TRANSFER)), ResultCode::Created);
        assert_eq!(send(&node, resolve(21, 23, transfer_flags::VOID_PENDING_TRANSFER)), ResultCode::Created);
        fill(&node, &mut next_id);
        check_history(&node);
        let ledger = node.shutdown();
        assert!(ledger.hot_transfers_count() < ledger.transfers_count(), "transfers were evicted");
    }
    let node = node(&dir);
    check_history(&node);
    fill(&node, &mut next_id);
    check_history(&node);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// §3.9, the replay bound: a node stopped without a checkpoint replays its whole journal
/// against a history store that already holds every record (it was flushed as the node
/// stopped). Ids above the largest the replayed ledger has applied cannot be below an
/// input's cut-off, so they are not looked up: of 300 new ids and one retry of an evicted
/// one, only the retry reads the store, and the rebuilt state is the one that stopped.
#[test]
fn a_restart_looks_up_only_ids_that_history_before_them_can_hold() {
    let dir = tempfile_dir("replay-bound");
    let stopped_hash = {
        let node = node(&dir);
        let accounts = (3..=4u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
        node.submitter().execute(Request::CreateAccounts(accounts)).unwrap();
        for id in 1_001..=1_300 {
            assert_eq!(send(&node, transfer(id, 3, 4, 1, 0)), ResultCode::Created);
        }
        assert_eq!(send(&node, transfer(1_001, 3, 4, 1, 0)), ResultCode::Exists, "a retry of an evicted id");
        // The hash the business logic published after the last input.
        let status = (0..5_000)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                node.status().read()
            })
            .find(|status| status.applied_sequence >= status.last_sequence)
            .expect("the business logic publishes its state");
        drop(node);
        status.state_hash
    };
    let node = node(&dir);
    let recovery = node.recovery();
    assert_eq!(recovery.snapshot_sequence, 0, "no checkpoint: the whole journal is replayed");
    assert!(recovery.records_replayed > 300, "replayed {}", recovery.records_replayed);
    assert_eq!(recovery.state_hash, stopped_hash);
    assert!(
        (1..=2).contains(&recovery.history_reads),
        "replay read the history store {} times: only the retry's id can be there",
        recovery.history_reads
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-hot-cold-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A node restarted with a larger hot window than the one its checkpoint was taken under:
/// the checkpoint holds only what the old window kept, so the inputs between the new
/// window's cut-off and the old one's are neither hot nor below the cut-off. A retry of a
/// transfer from there must still answer `exists`, never apply a second time.
#[test]
fn a_restart_with_a_larger_hot_window_still_finds_every_earlier_transfer() {
    let dir = tempfile_dir("larger-window");
    let mut next_id = 1_000u128;
    {
        let node = node(&dir);
        let accounts = (1..=4u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
        node.submitter().execute(Request::CreateAccounts(accounts)).unwrap();
        assert_eq!(send(&node, transfer(10, 1, 2, 7, 0)), ResultCode::Created);
        fill(&node, &mut next_id);
        node.shutdown();
    }
    let config = NodeConfig { hot_window: 64, snapshot_interval: None, ..NodeConfig::new(&dir) };
    let node = Node::open(&config).expect("the node opens");
    assert_eq!(node.recovery().records_replayed, 0, "the restart starts from the clean stop's checkpoint");
    assert_eq!(send(&node, transfer(10, 1, 2, 7, 0)), ResultCode::Exists, "the retry is not applied again");
    assert_eq!(send(&node, transfer(1_000, 3, 4, 1, 0)), ResultCode::Exists);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A history store that rotted on disk while the node was down — one bit of a transfer
/// id, wherever the file holds it (the key a retry is looked up by, the stored record, the
/// account lists) — is refused at the next start, naming the store and the way to rebuild
/// it (docs/design.md §3.9, "A history store that rots"). redb does not verify its
/// checksums on an ordinary read: trusting the file (`--history-check off`), the node
/// starts and answers the retry of that long-evicted transfer `created`, applying it twice.
#[test]
fn a_history_store_that_rotted_at_rest_is_refused_at_the_next_start() {
    const ID: u128 = 0x5EED_0000_1234_5678_9ABC_DEF0_0FED_CBA9;
    let dir = tempfile_dir("rotted-history");
    {
        let node = node(&dir);
        let accounts = (3..=4u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
        node.submitter().execute(Request::CreateAccounts(accounts)).expect("accounts created");
        assert_eq!(send(&node, transfer(ID, 3, 4, 7, 0)), ResultCode::Created);
        let mut next_id = 1_000;
        for _ in 0..4 {
            fill(&node, &mut next_id);
        }
        node.shutdown();
    }
    let file = dir.join("history").join(tally::history::FILE_NAME);
    let mut bytes = std::fs::read(&file).expect("read the store");
    let pattern = ID.to_le_bytes();
    let places: Vec<usize> =
        bytes.windows(pattern.len()).enumerate().filter(|(_, window)| *window == pattern).map(|(at, _)| at).collect();
    assert!(!places.is_empty(), "the store holds the transfer's id");
    for at in places {
        bytes[at + 8] ^= 0x01;
    }
    std::fs::write(&file, &bytes).expect("write the rotted store");
    match Node::open(&NodeConfig { hot_window: 2, snapshot_interval: None, ..NodeConfig::new(&dir) }) {
        Err(tally::NodeError::History(error @ tally::history::HistoryError::Damaged { .. })) => {
            let message = error.to_string();
            assert!(message.contains("is damaged") && message.contains("tally rebuild"), "{message}");
        }
        Err(other) => panic!("refused, but not as a damaged history store: {other}"),
        Ok(node) => {
            let retry = send(&node, transfer(ID, 3, 4, 7, 0));
            panic!("a node started on a history store that rotted; the retry of {ID:#x} answered {retry:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
