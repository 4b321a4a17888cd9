//! A node's role (primary, standby, fenced), its epoch, and the primary it knows, shared
//! by the gateway, the status reply and the replication threads.
//!
//! The epoch lives in `DIR/EPOCH` (`epoch role\n`), written to a temporary file, fsynced,
//! renamed into place and the directory fsynced *before* the node acts in that epoch: a
//! promise or a promotion that a crash could forget would let two primaries share an epoch.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tally_codecs::wire::admin::{ROLE_FENCED, ROLE_PRIMARY, ROLE_STANDBY};
use tally_engine::pipeline::{Durability, Submitter};

use crate::error::NodeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Primary,
    Standby,
    Fenced,
}

impl RoleKind {
    pub fn wire(self) -> u8 {
        match self {
            RoleKind::Primary => ROLE_PRIMARY,
            RoleKind::Standby => ROLE_STANDBY,
            RoleKind::Fenced => ROLE_FENCED,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Primary => "primary",
            RoleKind::Standby => "standby",
            RoleKind::Fenced => "fenced",
        }
    }

    fn from_wire(value: u8) -> RoleKind {
        match value {
            ROLE_PRIMARY => RoleKind::Primary,
            ROLE_STANDBY => RoleKind::Standby,
            _ => RoleKind::Fenced,
        }
    }
}

pub struct Role {
    kind: AtomicU8,
    epoch: AtomicU32,
    primary: Mutex<Option<SocketAddr>>,
    /// Where requests go while this node is primary.
    submitter: Mutex<Option<Submitter>>,
    epoch_file: PathBuf,
    /// The durability gate's halt switch (see `Watermarks::halted`).
    halted: Arc<AtomicBool>,
    /// Serialises epoch changes so the file and the atomic never disagree.
    persist: Mutex<()>,
    /// The highest epoch a peer told this node of (in memory: hearing of an epoch is not
    /// promising it). A candidate asks for an epoch above it.
    heard: AtomicU32,
    /// Whether `DIR/RECOVERING` is present (see the module's documentation).
    recovering: AtomicBool,
    recovering_file: PathBuf,
    /// Whether `DIR/RECOVERING` says the epoch is not yet confirmed: the node started
    /// without an epoch file (a new node, or a lost disk), and has not yet heard enough
    /// peers' epochs to know it cannot follow a deposed primary.
    epoch_unconfirmed: AtomicBool,
    /// The epoch an operator gave `tally rebuild --epoch` above the one this node held, not
    /// yet confirmed by its peers (0: none). It is kept out of the epoch file, so the node
    /// never shows it to a peer: a mistyped one would fence the live primary. The node
    /// follows no one until its peers' epochs reach it ([`Role::confirm_epoch`]).
    claimed: AtomicU32,
}

/// The epoch file under the data directory.
pub const EPOCH_FILE: &str = "EPOCH";

/// The marker of a node that has not caught up since its log was rebuilt.
pub const RECOVERING_FILE: &str = "RECOVERING";
/// Present while this node serves as primary under a policy that replies before its own
/// flush (`replicated:k`): its journal may then lack inputs it acknowledged, which only
/// the standbys hold, if the machine or the flush fails. Written before the first reply,
/// removed by a clean stop once the journal is flushed; found at a start, it makes the
/// node recovering ([`Role::after_unflushed_acks`]).
pub const UNFLUSHED_ACKS_FILE: &str = "UNFLUSHED-ACKS";
const UNFLUSHED_ACKS_TEXT: &str = "this node replied as a primary before its own flush (replicated:k)\n";
/// What `DIR/RECOVERING` holds after such a stop.
const UNFLUSHED_RECOVERING_TEXT: &str = "this node replied as a primary before its own flush (replicated:k) and did not \
     stop cleanly: its journal may lack inputs it acknowledged; it has not caught up with a primary\n";
/// What `DIR/RECOVERING` holds: a recovering node, and one whose epoch is not yet confirmed.
const RECOVERING_TEXT: &str = "this node's log was rebuilt; it has not caught up with a primary\n";
const UNCONFIRMED_TEXT: &str = "this node started without an epoch file; its epoch is not confirmed by its peers\n";
/// The line of `DIR/RECOVERING` that holds an epoch claimed by `tally rebuild --epoch`.
const CLAIM_PREFIX: &str = "epoch given to tally rebuild, not yet confirmed by its peers: ";

/// What a recovering node answers a candidate's `Prepare`, and `tally promote` on it.
pub use tally_replication::RECOVERING_REFUSAL;

impl Role {
    /// Reads `DIR/EPOCH` (epoch 0, primary, when absent: a new node).
    pub fn load(data_dir: &Path) -> Result<Role, NodeError> {
        let epoch_file = data_dir.join(EPOCH_FILE);
        let (epoch, kind) = match std::fs::read_to_string(&epoch_file) {
            Ok(text) => parse(&text).ok_or_else(|| NodeError::Io {
                path: epoch_file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not `EPOCH ROLE`: {text:?}")),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (0, RoleKind::Primary),
            Err(source) => return Err(NodeError::Io { path: epoch_file, source }),
        };
        let recovering_file = data_dir.join(RECOVERING_FILE);
        let marker = match std::fs::read_to_string(&recovering_file) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(NodeError::Io { path: recovering_file, source }),
        };
        let claimed =
            match marker.as_deref().and_then(|text| text.lines().find_map(|line| line.strip_prefix(CLAIM_PREFIX))) {
                None => 0,
                Some(claim) => claim.trim().parse::<u32>().map_err(|_| NodeError::Io {
                    path: recovering_file.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an epoch: {claim:?}")),
                })?,
            };
        let unconfirmed =
            claimed > 0 || marker.as_deref().is_some_and(|text| text.contains(UNCONFIRMED_TEXT.trim_end()));
        Ok(Role {
            kind: AtomicU8::new(kind.wire()),
            epoch: AtomicU32::new(epoch),
            primary: Mutex::new(None),
            submitter: Mutex::new(None),
            epoch_file,
            // A node that was fenced stays so across restarts until it follows again.
            halted: Arc::new(AtomicBool::new(kind == RoleKind::Fenced)),
            persist: Mutex::new(()),
            heard: AtomicU32::new(epoch),
            recovering: AtomicBool::new(marker.is_some()),
            recovering_file,
            epoch_unconfirmed: AtomicBool::new(unconfirmed),
            claimed: AtomicU32::new(claimed),
        })
    }

    /// Whether this node's epoch still waits for its peers' (see `epoch_unconfirmed`).
    pub fn epoch_unconfirmed(&self) -> bool {
        self.epoch_unconfirmed.load(Ordering::Acquire)
    }

    /// Marks this node recovering with an epoch its peers must confirm before it follows
    /// anyone, durably.
    pub fn mark_epoch_unconfirmed(&self) -> Result<(), NodeError> {
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        write_synced(&self.recovering_file, &format!("{RECOVERING_TEXT}{UNCONFIRMED_TEXT}"))?;
        self.recovering.store(true, Ordering::Release);
        self.epoch_unconfirmed.store(true, Ordering::Release);
        self.claimed.store(0, Ordering::Release);
        Ok(())
    }

    /// Marks this node recovering with `claim`, an epoch above the one it holds that an
    /// operator gave `tally rebuild --epoch`, durably. The epoch file keeps the held epoch:
    /// the claim counts only once enough peers hold it ([`Role::confirm_epoch`]).
    pub fn mark_epoch_claimed(&self, claim: u32) -> Result<(), NodeError> {
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        write_synced(&self.recovering_file, &format!("{RECOVERING_TEXT}{CLAIM_PREFIX}{claim}\n"))?;
        self.recovering.store(true, Ordering::Release);
        self.epoch_unconfirmed.store(true, Ordering::Release);
        self.claimed.store(claim, Ordering::Release);
        Ok(())
    }

    /// The epoch claimed by `tally rebuild --epoch` and not yet confirmed (0: none).
    pub fn claimed_epoch(&self) -> u32 {
        self.claimed.load(Ordering::Acquire)
    }

    /// Enough peers told their epochs, `highest` the highest: persists it (if above this
    /// node's) and leaves this node recovering with a confirmed epoch. `false`, with
    /// nothing changed, while a claimed epoch is above both: either the peers have not
    /// reached it yet or the operator mistyped it, and in neither case may this node show
    /// it to a primary (which would take itself for deposed).
    pub fn confirm_epoch(&self, highest: u32) -> Result<bool, NodeError> {
        if self.claimed_epoch() > highest.max(self.epoch()) {
            return Ok(false);
        }
        self.enter(highest.max(self.epoch()), RoleKind::Standby)?;
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        write_synced(&self.recovering_file, RECOVERING_TEXT)?;
        self.epoch_unconfirmed.store(false, Ordering::Release);
        self.claimed.store(0, Ordering::Release);
        Ok(true)
    }

    /// Whether this node may lack inputs it once acknowledged (see the module's
    /// documentation): it then neither promises nor is promoted.
    pub fn recovering(&self) -> bool {
        self.recovering.load(Ordering::Acquire)
    }

    /// Marks this node recovering, durably, before its log is cleared or trusted.
    pub fn mark_recovering(&self) -> Result<(), NodeError> {
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.recovering() {
            write_synced(&self.recovering_file, RECOVERING_TEXT)?;
            self.recovering.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Called by a node or standby start, under the data directory's lock, before the
    /// role is trusted: a `DIR/UNFLUSHED-ACKS` left by a run that did not stop cleanly
    /// makes this node recovering (durably, before the file is removed). Its journal may
    /// lack inputs it acknowledged as primary that its standbys hold; promising or serving
    /// that log could lose them (found by `tally sim` with `tally`'s own gate rule).
    /// `true` if it was found.
    pub fn after_unflushed_acks(&self, data_dir: &Path) -> Result<bool, NodeError> {
        let path = data_dir.join(UNFLUSHED_ACKS_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(NodeError::Io { path, source }),
        }
        {
            let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
            if !self.recovering() {
                write_synced(&self.recovering_file, UNFLUSHED_RECOVERING_TEXT)?;
                self.recovering.store(true, Ordering::Release);
            }
        }
        remove_synced(&path)?;
        Ok(true)
    }

    /// Marks that this node, primary under `durability`, may reply before its own flush
    /// (see [`UNFLUSHED_ACKS_FILE`]); nothing for other policies.
    pub fn note_unflushed_acks(data_dir: &Path, durability: Durability) -> Result<(), NodeError> {
        if durability.replicas() > 0 && !durability.flushes_locally() {
            write_synced(&data_dir.join(UNFLUSHED_ACKS_FILE), UNFLUSHED_ACKS_TEXT)?;
        }
        Ok(())
    }

    /// A clean stop: every record this node acknowledged is flushed, so the mark of
    /// [`Role::note_unflushed_acks`] goes.
    pub fn clear_unflushed_acks(data_dir: &Path) -> Result<(), NodeError> {
        remove_synced(&data_dir.join(UNFLUSHED_ACKS_FILE))
    }

    /// This node holds everything a primary of its epoch (or a newer one) has: it may
    /// promise and be promoted again. `true` if it was recovering.
    pub fn caught_up(&self) -> Result<bool, NodeError> {
        if self.epoch_unconfirmed() {
            return Ok(false);
        }
        self.clear_recovering()
    }

    /// Ends the recovering state whatever it waits for: a forced promotion of this node,
    /// whose log is from then on the history. `true` if it was recovering.
    pub fn clear_recovering(&self) -> Result<bool, NodeError> {
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.recovering() {
            return Ok(false);
        }
        remove_synced(&self.recovering_file)?;
        self.recovering.store(false, Ordering::Release);
        self.epoch_unconfirmed.store(false, Ordering::Release);
        self.claimed.store(0, Ordering::Release);
        Ok(true)
    }

    /// The switch that stops the durability gate when this node is fenced.
    pub fn halted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.halted)
    }

    pub fn kind(&self) -> RoleKind {
        RoleKind::from_wire(self.kind.load(Ordering::Acquire))
    }

    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A peer knows `epoch`.
    pub fn heard_of(&self, epoch: u32) {
        self.heard.fetch_max(epoch, Ordering::AcqRel);
    }

    /// The highest epoch heard of or held.
    pub fn highest_heard(&self) -> u32 {
        self.heard.load(Ordering::Acquire).max(self.epoch())
    }

    pub fn primary(&self) -> Option<SocketAddr> {
        *self.primary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_primary(&self, primary: Option<SocketAddr>) {
        *self.primary.lock().unwrap_or_else(PoisonError::into_inner) = primary;
    }

    /// The submitter while this node is primary; `None` otherwise.
    pub fn submitter(&self) -> Option<Submitter> {
        if self.kind() != RoleKind::Primary {
            return None;
        }
        self.submitter.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set_submitter(&self, submitter: Option<Submitter>) {
        *self.submitter.lock().unwrap_or_else(PoisonError::into_inner) = submitter;
    }

    /// Persists (fsynced) `epoch` and `kind`, then publishes them. An epoch never goes
    /// back: asked for a lower one, this keeps the current one and says so.
    pub fn enter(&self, epoch: u32, kind: RoleKind) -> Result<bool, NodeError> {
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        if epoch < self.epoch() {
            return Ok(false);
        }
        write_synced(&self.epoch_file, &format!("{epoch} {}\n", kind.name()))?;
        self.epoch.store(epoch, Ordering::Release);
        if kind == RoleKind::Primary {
            // A node fenced once (then a standby) and now primary again: its new pipeline's
            // gate must let inputs through. The old pipeline that the switch halted is gone.
            self.halted.store(false, Ordering::Release);
        }
        self.kind.store(kind.wire(), Ordering::Release);
        Ok(true)
    }

    /// Persists `epoch` and `kind` only if `epoch` is newer than the current one, checked
    /// under the same lock as every other epoch change: a promise. `false` when it is not
    /// newer (another thread moved the epoch on meanwhile); nothing is written then.
    pub fn enter_newer(&self, epoch: u32, kind: RoleKind) -> Result<bool, NodeError> {
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        if epoch <= self.epoch() {
            return Ok(false);
        }
        write_synced(&self.epoch_file, &format!("{epoch} {}\n", kind.name()))?;
        self.epoch.store(epoch, Ordering::Release);
        self.kind.store(kind.wire(), Ordering::Release);
        Ok(true)
    }

    /// Stops accepting writes at once, in memory only: the durability gate halts (nothing
    /// more is applied or acknowledged), the gateway answers `not_primary`, and clients are
    /// not sent to this node. What is persisted, and in which epoch, is the caller's.
    pub fn stop_writes(&self) {
        self.halted.store(true, Ordering::Release);
        self.kind.store(ROLE_FENCED, Ordering::Release);
        self.set_submitter(None);
        // A promoted node names itself as primary; fenced, it must not send clients to itself.
        self.set_primary(None);
    }

    /// Stops accepting writes at once (before anything is written to disk): a newer epoch
    /// exists. The fenced state is then persisted so a restart does not serve again.
    ///
    /// In the epoch this node already holds, not the newer one it heard of: the epoch file
    /// records what this node promised, and it promised nothing. Adopting the newer epoch
    /// would make it refuse that epoch's candidate (a live primary hearing of a planned
    /// switch-over from a standby, then asked for its promise), as a Raft node that adopts
    /// a newer term may still grant its vote in that term. It learns the epoch from the new
    /// primary's records when it follows.
    pub fn fence(&self) {
        self.stop_writes();
        if let Err(error) = self.enter(self.epoch(), RoleKind::Fenced) {
            // The process cannot promise to stay fenced across a restart: stop it.
            crate::errln!("tally: stopping: cannot record the fenced state: {error}");
            std::process::abort();
        }
    }
}

fn parse(text: &str) -> Option<(u32, RoleKind)> {
    let mut fields = text.split_whitespace();
    let epoch = fields.next()?.parse().ok()?;
    let kind = match fields.next()? {
        "primary" => RoleKind::Primary,
        "standby" => RoleKind::Standby,
        "fenced" => RoleKind::Fenced,
        _ => return None,
    };
    fields.next().is_none().then_some((epoch, kind))
}

/// Removes `path` (absent is fine) and syncs its directory.
fn remove_synced(path: &Path) -> Result<(), NodeError> {
    let io = |source| NodeError::Io { path: path.to_path_buf(), source };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io(error)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(io)
}

fn write_synced(path: &Path, text: &str) -> Result<(), NodeError> {
    let io = |source| NodeError::Io { path: path.to_path_buf(), source };
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_persist_and_never_go_back() {
        let dir = std::env::temp_dir().join(format!("tally-role-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let role = Role::load(&dir).unwrap();
        assert_eq!((role.epoch(), role.kind()), (0, RoleKind::Primary));
        assert!(role.enter(3, RoleKind::Standby).unwrap());
        assert!(!role.enter(2, RoleKind::Primary).unwrap());
        let reloaded = Role::load(&dir).unwrap();
        assert_eq!((reloaded.epoch(), reloaded.kind()), (3, RoleKind::Standby));
        assert!(!reloaded.recovering());
        reloaded.mark_recovering().unwrap();
        assert!(Role::load(&dir).unwrap().recovering(), "the mark survives a restart");
        assert!(reloaded.caught_up().unwrap());
        assert!(!Role::load(&dir).unwrap().recovering(), "and so does its removal");
        reloaded.mark_epoch_unconfirmed().unwrap();
        assert!(!reloaded.caught_up().unwrap(), "not caught up before the epoch is confirmed");
        assert!(Role::load(&dir).unwrap().epoch_unconfirmed(), "the unconfirmed epoch survives a restart");
        assert!(reloaded.confirm_epoch(7).unwrap());
        let confirmed = Role::load(&dir).unwrap();
        assert!(confirmed.recovering() && !confirmed.epoch_unconfirmed() && confirmed.epoch() == 7);
        confirmed.mark_epoch_unconfirmed().unwrap();
        assert!(confirmed.clear_recovering().unwrap(), "a forced promotion ends both");
        let forced = Role::load(&dir).unwrap();
        assert!(!forced.recovering() && !forced.epoch_unconfirmed());
        // A claimed epoch is confirmed only by peers that hold it; until then the node
        // holds (and shows) the epoch it had.
        forced.mark_epoch_claimed(40).unwrap();
        let claiming = Role::load(&dir).unwrap();
        assert_eq!((claiming.epoch(), claiming.claimed_epoch()), (7, 40), "the claim survives a restart");
        assert!(claiming.recovering() && claiming.epoch_unconfirmed());
        assert!(!claiming.confirm_epoch(39).unwrap(), "peers below the claim do not confirm it");
        let still = Role::load(&dir).unwrap();
        assert_eq!((still.epoch(), still.claimed_epoch()), (7, 40), "and change nothing");
        assert!(still.confirm_epoch(41).unwrap());
        let confirmed = Role::load(&dir).unwrap();
        assert_eq!((confirmed.epoch(), confirmed.claimed_epoch()), (41, 0));
        assert!(confirmed.recovering() && !confirmed.epoch_unconfirmed());
        std::fs::write(dir.join("RECOVERING"), format!("{RECOVERING_TEXT}{CLAIM_PREFIX}many\n")).unwrap();
        assert!(Role::load(&dir).is_err(), "a damaged claim stops the start");
        std::fs::write(dir.join("EPOCH"), "x y").unwrap();
        assert!(Role::load(&dir).is_err(), "a damaged epoch file stops the start");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
