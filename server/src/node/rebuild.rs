//! `tally rebuild`: empties a replica's data directory so that it starts again from its
//! primary (a journal that cannot be repaired, a replaced disk), keeping its epoch and
//! marking it recovering before anything is removed.
//!
//! What it removes may have held acknowledged inputs, and the replica set counts this node
//! as a holder of them: a promotion that took its promise of an empty log in place of the
//! log it had could lose them. So the node is marked recovering (`DIR/RECOVERING`, fsynced
//! first): it answers no `Prepare` and is not promoted until a primary's heartbeat shows it
//! holds everything that primary has. The epoch stays, so that it refuses the stream of a
//! primary deposed while it was away. An `--epoch` above it (a replaced disk has none) is
//! kept apart as a claim: the node asks its peers their epochs and follows no one until
//! they hold it, so a mistyped epoch keeps this node out instead of fencing the primary.

use std::path::Path;

use super::DataDir;
use super::role::{Role, RoleKind};
use crate::error::NodeError;

/// What a rebuild found, or removed.
#[derive(Debug)]
pub struct Rebuild {
    /// The epoch the node keeps, or (`claimed`) the one it waits for its peers to hold.
    pub epoch: u32,
    /// `epoch` is above the one the node held: a claim confirmed by its peers before it
    /// follows anyone (`Role::mark_epoch_claimed`).
    pub claimed: bool,
    /// The files removed (or, without `apply`, that would be).
    pub files: Vec<String>,
}

/// Empties `root` for a fresh start as a standby (see the module's documentation). With
/// `apply` false nothing changes: the answer says what would be removed. Refused while a
/// node runs on the directory, with an `epoch` below the one held, and when the directory
/// has no epoch file and no `epoch` is given (a replaced disk: the operator names the
/// replica set's highest epoch, which `tally status` shows on the live nodes).
pub fn rebuild(root: &Path, epoch: Option<u32>, apply: bool) -> Result<Rebuild, NodeError> {
    let had_epoch_file = root.join(super::role::EPOCH_FILE).exists();
    if !had_epoch_file && epoch.is_none() {
        return Err(NodeError::Rebuild(format!(
            "{} holds no epoch file: pass --epoch E, the highest epoch `tally status` reports on the replica set's \
             live nodes, so that this node refuses a primary deposed while it was away",
            root.display()
        )));
    }
    // Only shows: a directory that is not there holds nothing to remove, and is not made.
    if !apply && !root.exists() {
        let epoch = epoch.unwrap_or_default();
        return Ok(Rebuild { epoch, claimed: epoch > 0, files: Vec::new() });
    }
    let dirs = DataDir::create(root)?;
    let _lock = dirs.lock()?;
    let role = Role::load(root)?;
    let epoch = match epoch {
        Some(epoch) if epoch < role.epoch() => {
            return Err(NodeError::Rebuild(format!(
                "--epoch {epoch} is below epoch {} that this node holds, and an epoch never goes back",
                role.epoch()
            )));
        }
        Some(epoch) => epoch,
        None => role.epoch(),
    };
    let held = role.epoch();
    let mut files = Vec::new();
    let staged = [super::bootstrap::RECEIVING, super::bootstrap::STAGING, super::ship::OUTGOING];
    for dir in [&dirs.journal, &dirs.snapshots, &dirs.history, &dirs.outcomes] {
        files.extend(files_in(dir)?);
    }
    for name in staged {
        let dir = root.join(name);
        if dir.exists() {
            files.push(dir.display().to_string());
        }
    }
    if !apply {
        return Ok(Rebuild { epoch, claimed: epoch > held, files });
    }
    // The epoch and the mark before anything is removed: a crash part-way leaves a
    // recovering node, never an unmarked one with part of its log. An epoch above the one
    // held is a claim its peers must confirm before the node follows anyone: written to the
    // epoch file, a mistyped one would fence the live primary at the first subscription.
    role.enter(held, RoleKind::Standby)?;
    if epoch > held {
        role.mark_epoch_claimed(epoch)?;
    } else if !had_epoch_file || role.claimed_epoch() > 0 {
        // (A claim an earlier rebuild left is replaced: the operator's second try.)
        role.mark_epoch_unconfirmed()?;
    } else {
        role.mark_recovering()?;
    }
    // And the staging directory, which start-up takes for an interrupted clear and
    // finishes: a part-cleared directory (a snapshot over an empty journal) otherwise
    // passed for an installed checkpoint.
    let marker = root.join(super::bootstrap::STAGING);
    std::fs::create_dir_all(&marker).map_err(|source| NodeError::Io { path: marker.clone(), source })?;
    super::bootstrap::sync_dir(root)?;
    for dir in [&dirs.journal, &dirs.snapshots, &dirs.outcomes] {
        super::bootstrap::clear_files(dir)?;
    }
    if dirs.history.exists() {
        super::bootstrap::clear_files(&dirs.history)?;
    }
    for name in staged {
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| NodeError::Io { path: dir.clone(), source })?;
        }
    }
    super::bootstrap::sync_dir(root)?;
    Ok(Rebuild { epoch, claimed: epoch > held, files })
}

fn files_in(dir: &Path) -> Result<Vec<String>, NodeError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let io = |source| NodeError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            files.push(path.display().to_string());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_keeps_the_epoch_marks_the_node_and_empties_its_log() {
        let root = tempfile::tempdir().expect("temp dir");
        let dirs = DataDir::create(root.path()).expect("data dir");
        std::fs::write(dirs.journal.join("00000000000000000001.seg"), b"records").expect("a segment");
        let error = rebuild(root.path(), None, true).expect_err("no epoch file");
        assert!(error.to_string().contains("--epoch"), "{error}");
        Role::load(root.path()).expect("role").enter(4, RoleKind::Standby).expect("epoch 4");
        let error = rebuild(root.path(), Some(3), true).expect_err("an epoch going back");
        assert!(error.to_string().contains("below epoch 4"), "{error}");

        let shown = rebuild(root.path(), None, false).expect("shown");
        assert_eq!((shown.epoch, shown.files.len()), (4, 1));
        assert!(!Role::load(root.path()).expect("role").recovering(), "nothing changes without --yes");
        assert!(dirs.journal.join("00000000000000000001.seg").exists());

        let done = rebuild(root.path(), Some(5), true).expect("rebuilt");
        assert_eq!((done.epoch, done.claimed), (5, true));
        let role = Role::load(root.path()).expect("role");
        assert!(role.recovering() && role.epoch_unconfirmed());
        assert_eq!((role.epoch(), role.claimed_epoch(), role.kind()), (4, 5, RoleKind::Standby));
        assert_eq!(std::fs::read_dir(&dirs.journal).expect("journal").count(), 0);

        // A replaced disk: no epoch file; the node asks its peers even at --epoch 0.
        let replaced = tempfile::tempdir().expect("temp dir");
        let done = rebuild(replaced.path(), Some(0), true).expect("rebuilt");
        assert_eq!((done.epoch, done.claimed), (0, false));
        let role = Role::load(replaced.path()).expect("role");
        assert!(role.recovering() && role.epoch_unconfirmed());
    }
}
