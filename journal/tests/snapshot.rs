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

/// A checkpoint streamed into its staged file (in pieces, larger than the read-back
/// buffer) is the same file as one written from a buffer, and loads the same; a payload
/// that fails leaves nothing that loads.
#[test]
fn a_streamed_staged_checkpoint_is_the_same_file_as_a_buffered_one() {
    let payload: Vec<u8> = (0..3_000_017u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (dir_a, buffered) = store();
    let (dir_b, streamed) = store();
    let path_a = buffered.write_staged(42, &payload).expect("stage from a buffer");
    let path_b = streamed
        .write_staged_with(42, |file| {
            for piece in payload.chunks(70_001) {
                file.write_all(piece)?;
            }
            Ok(())
        })
        .expect("stage as a stream");
    assert_eq!(std::fs::read(&path_a).expect("read"), std::fs::read(&path_b).expect("read"));
    assert_eq!(streamed.load_staged(42).expect("verifies").bytes, payload);
    streamed.promote(42).expect("promote");
    assert_eq!(streamed.load_newest().expect("load").newest.expect("a snapshot").bytes, payload);

    let failed = streamed.write_staged_with(43, |file| {
        file.write_all(&payload[..1_000])?;
        Err(std::io::Error::other("the image could not be encoded"))
    });
    assert!(matches!(failed, Err(JournalError::Io { .. })), "{failed:?}");
    assert!(streamed.load_staged(43).is_err(), "a half-written staged file does not verify");
    drop((dir_a, dir_b));
}

/// The store on the simulator's disk, which keeps unsynced writes apart: what it
/// acknowledged survives a power loss, a staged checkpoint does not become a recovery
/// point, and a write whose sync failed leaves nothing a restart would load.
#[test]
fn on_a_disk_that_loses_unsynced_writes_only_acknowledged_snapshots_survive_a_power_loss() {
    let disk = tally_journal::sim::MemStorage::new();
    let store = SnapshotStore::open_on(disk.directory()).expect("open");
    store.write(5, b"state at 5").expect("write");
    store.write_staged_with(7, |out| out.write_all(b"state at 7")).expect("stage");
    disk.crash_with_partial_writeback(3);
    let store = SnapshotStore::open_on(disk.directory()).expect("reopen");
    assert_eq!(store.list().expect("list"), vec![5], "the staged file is gone, the written one kept");
    assert_eq!(store.load_newest().expect("load").newest.expect("a snapshot").bytes, b"state at 5");

    disk.fail_sync_after(0);
    assert!(store.write(9, b"state at 9").is_err(), "a failed sync is an error");
    disk.heal();
    disk.crash();
    let store = SnapshotStore::open_on(disk.directory()).expect("reopen");
    assert_eq!(store.list().expect("list"), vec![5]);
    assert_eq!(store.remove_newer_than(4).expect("remove"), vec![5]);
    assert!(store.load_newest().expect("load").newest.is_none());
}

/// A directory that cannot open one file (an I/O error, not damage), over the simulator's.
#[derive(Clone)]
struct FailingOpen {
    inner: tally_journal::sim::MemDirectory,
    name: String,
}

impl tally_journal::Directory for FailingOpen {
    type File = <tally_journal::sim::MemDirectory as tally_journal::Directory>::File;

    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }

    fn create(&self, name: &str) -> std::io::Result<Self::File> {
        self.inner.create(name)
    }

    fn open(&self, name: &str) -> std::io::Result<Self::File> {
        if name == self.name {
            return Err(std::io::Error::other("too many open files, for a moment"));
        }
        self.inner.open(name)
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove(name)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }

    fn path_of(&self, name: &str) -> std::path::PathBuf {
        self.inner.path_of(name)
    }
}

/// Retention passes over a snapshot only when it is shown damaged: one it cannot read for
/// another reason (an I/O error) is not removed, and nothing is (it removed it, and the
/// journal could then be trimmed to the one snapshot left). Found by review.
#[test]
fn retention_removes_no_snapshot_it_could_not_read_for_a_reason_other_than_damage() {
    let disk = tally_journal::sim::MemStorage::new();
    let store = SnapshotStore::open_on(disk.directory()).expect("open");
    for sequence in [100, 200, 300] {
        store.write(sequence, format!("state at {sequence}").as_bytes()).expect("write");
    }
    let older = disk.directory_names().into_iter().find(|name| name.starts_with("00000000000000000200")).expect("200");
    let failing = SnapshotStore::open_on(FailingOpen { inner: disk.directory(), name: older }).expect("open");
    assert!(failing.retain(2).is_err(), "the read error is reported");
    assert_eq!(store.list().expect("list"), vec![100, 200, 300], "nothing removed");
    let retention = store.retain(2).expect("retain");
    assert_eq!((retention.kept, retention.removed), (vec![200, 300], vec![100]), "once readable, the usual rule");
}
