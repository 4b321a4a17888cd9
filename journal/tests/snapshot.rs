//! Snapshots on disk: round trip, newest valid wins, damage skipped and reported,
//! interrupted writes invisible, retention.

use tally_journal::{JournalError, SnapshotStore};

fn store() -> (tempfile::TempDir, SnapshotStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SnapshotStore::open(dir.path().join("snapshots")).expect("open store");
    (dir, store)
}

#[test]
fn snapshot_round_trips_and_the_newest_wins() {
    let (_dir, store) = store();
    assert!(store.load_newest().expect("load").newest.is_none());
    store.write(100, b"state at 100").expect("write");
    store.write(250, b"state at 250").expect("write");
    let path = store.write(7, b"").expect("empty snapshots are allowed");
    assert!(path.ends_with("00000000000000000007.snap"));
    assert_eq!(store.list().expect("list"), vec![7, 100, 250]);
    let loaded = store.load_newest().expect("load");
    let newest = loaded.newest.expect("a snapshot");
    assert_eq!((newest.sequence, &newest.bytes[..]), (250, &b"state at 250"[..]));
    assert!(loaded.damaged.is_empty());
}

#[test]
fn damaged_snapshots_are_skipped_and_reported() {
    let (_dir, store) = store();
    store.write(100, b"good").expect("write");
    let flipped = store.write(200, b"will be flipped").expect("write");
    let truncated = store.write(300, b"will be truncated").expect("write");
    let mut bytes = std::fs::read(&flipped).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&flipped, bytes).expect("damage");
    let bytes = std::fs::read(&truncated).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).expect("truncate");
    let loaded = store.load_newest().expect("load");
    assert_eq!(loaded.newest.expect("the good one").sequence, 100);
    assert_eq!(loaded.damaged.len(), 2);
    assert!(loaded.damaged.iter().all(|error| matches!(error, JournalError::SnapshotDamaged { .. })));
}

#[test]
fn a_snapshot_renamed_to_another_sequence_is_damaged() {
    let (_dir, store) = store();
    let written = store.write(100, b"state").expect("write");
    std::fs::rename(&written, written.with_file_name("00000000000000000500.snap")).expect("rename");
    assert!(matches!(store.load(500), Err(JournalError::SnapshotDamaged { .. })));
}

#[test]
fn an_interrupted_snapshot_write_leaves_nothing_visible() {
    let (_dir, store) = store();
    store.write(100, b"complete").expect("write");
    let temporary = store.dir().join("00000000000000000200.snap.tmp");
    std::fs::write(&temporary, b"half written").expect("leftover");
    let reopened = SnapshotStore::open(store.dir()).expect("reopen");
    assert!(!temporary.exists(), "leftover temporary removed at open");
    assert_eq!(reopened.load_newest().expect("load").newest.expect("snapshot").sequence, 100);
}

#[test]
fn retention_keeps_the_newest_valid_snapshots_and_removes_older_ones() {
    let (_dir, store) = store();
    for sequence in [10, 20, 30, 40] {
        store.write(sequence, format!("state {sequence}").as_bytes()).expect("write");
    }
    let newest = store.dir().join("00000000000000000040.snap");
    std::fs::write(&newest, b"garbage").expect("damage the newest");
    let retention = store.retain(2).expect("retain");
    assert_eq!(retention.kept, vec![20, 30], "a damaged snapshot never counts as kept");
    assert_eq!(retention.removed, vec![10]);
    assert_eq!(store.list().expect("list"), vec![20, 30, 40]);
}

#[test]
fn a_staged_checkpoint_is_no_recovery_point_until_promoted_and_is_dropped_at_open() {
    let (dir, store) = store();
    store.write(100, b"state at 100").expect("write");
    store.write_staged(200, b"state at 200").expect("stage");
    assert_eq!(store.list().expect("list"), vec![100], "a staged checkpoint is not listed");
    assert_eq!(store.load_newest().expect("load").newest.expect("a snapshot").sequence, 100);
    assert_eq!(store.load_staged(200).expect("staged verifies").bytes, b"state at 200");
    store.promote(200).expect("promote");
    assert_eq!(store.load_newest().expect("load").newest.expect("a snapshot").sequence, 200);

    store.write_staged(300, b"state at 300").expect("stage");
    let reopened = SnapshotStore::open(dir.path().join("snapshots")).expect("reopen");
    assert!(matches!(reopened.load_staged(300), Err(JournalError::Io { .. })), "deleted at open");
    assert_eq!(reopened.list().expect("list"), vec![100, 200]);
    reopened.discard_staged(300).expect("discarding a missing staged file is fine");
}
