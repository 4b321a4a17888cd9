//! What the state-machine test generates: steps whose transfers are *plans* ("post one
//! of the pending transfers sent so far", "retry an earlier event with its amount
//! zeroed"), resolved into records against what has been submitted when the step runs.
//! The id space is small (8 accounts, 2 ledgers, 3 limit profiles) so that collisions,
//! retries and failures are frequent, and amounts reach near `u128::MAX` so that the
//! overflow codes happen too.
//! The strategies that generate them are in `strategy.rs`.

use tally_codecs::flags::transfer as transfer_flags;
use tally_codecs::{Account, LimitProfile, Transfer};
use tally_engine::PendingStatus;

use crate::reference::Model;

/// Account ids the test creates; `ACCOUNTS_MAX + 1` is never created.
pub const ACCOUNTS_MAX: u128 = 8;
/// Limit profile ids the test upserts; `PROFILES_MAX + 1` is never created.
pub const PROFILES_MAX: u32 = 3;
/// The first id of a fresh transfer: transfer ids never collide with account ids.
pub const TRANSFER_ID_FIRST: u128 = 1_000;
/// A timestamp so late that a long timeout overflows a u64 (`u32::MAX` s ≈ 4.3·10¹⁸ ns).
const LATE_TIMESTAMP_NS: u64 = 15_000_000_000_000_000_000;

/// How far the input timestamp moves past the ledger's last one.
#[derive(Clone, Copy, Debug)]
pub enum Advance {
    /// An input timestamp of 0: the ledger uses `last + 1`.
    Stale,
    By(u64),
    /// Jump to [`LATE_TIMESTAMP_NS`] (a no-op once past it).
    Late,
    /// To a few nanoseconds before (or at) the deadline of one of the pending transfers,
    /// so that a batch or a chain straddles it.
    NearDeadline {
        pick: usize,
        before: u64,
    },
}

impl Advance {
    pub fn timestamp(self, model: &Model) -> u64 {
        let last = model.last_timestamp();
        match self {
            Advance::Stale => 0,
            Advance::By(nanoseconds) => last.saturating_add(nanoseconds),
            Advance::Late => LATE_TIMESTAMP_NS.max(last),
            Advance::NearDeadline { pick, before } => {
                let deadlines = model.pending_deadlines();
                if deadlines.is_empty() { 0 } else { deadlines[pick % deadlines.len()].saturating_sub(before) }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Step {
    Accounts(Advance, Vec<Account>),
    Profiles(Advance, Vec<LimitProfile>),
    Transfers(Advance, Vec<TransferPlan>),
    Tick(Advance),
}

#[derive(Clone, Debug)]
pub struct TransferPlan {
    pub kind: PlanKind,
    pub linked: bool,
    /// `None`: a fresh id; `Some(k)`: the id of the k-th event sent so far (mod their count).
    pub reuse_id: Option<usize>,
    pub defect: Option<Defect>,
}

#[derive(Clone, Debug)]
pub enum PlanKind {
    New {
        pending: bool,
        timeout: u32,
        debit: u128,
        credit: u128,
        amount: u128,
        /// `None`: the debit account's ledger (so that most transfers get far).
        ledger: Option<u32>,
        code: u16,
        /// Balancing and closing flags.
        special: u16,
        user_data_64: u64,
    },
    PostOrVoid {
        void: bool,
        /// Pick among the transfers that are still pending in the model, if any.
        live: bool,
        pick: usize,
        amount: PostAmount,
        fields: PostFields,
        user_data_64: u64,
    },
    Retry {
        pick: usize,
        change: Option<(Field, bool)>,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum PostAmount {
    Zero,
    Full,
    Half,
    AboveFull,
    Small(u128),
}

/// What a post or void says about the fields it would inherit.
#[derive(Clone, Copy, Debug)]
pub enum PostFields {
    Zero,
    Same,
    /// The same, except this one changed.
    Different(Field),
}

#[derive(Clone, Copy, Debug)]
pub enum Field {
    Flags,
    DebitAccountId,
    CreditAccountId,
    Amount,
    PendingId,
    UserData128,
    UserData64,
    UserData32,
    Timeout,
    Ledger,
    Code,
}

/// A defect that makes an event invalid (or changes what kind of event it is).
#[derive(Clone, Copy, Debug)]
pub enum Defect {
    Timestamp,
    ReservedFlag(u16),
    IdZero,
    IdMax,
    PendingId(u128),
    PendingIdSelf,
    Timeout(u32),
    AddFlags(u16),
}

/// Turns plans into transfers and remembers what was sent, for picks and retries.
#[derive(Default)]
pub struct Planner {
    sent: Vec<Transfer>,
    pending_ids: Vec<u128>,
    next_id: u128,
}

impl Planner {
    /// Remembers a transfer sent without a plan.
    pub fn record(&mut self, transfer: Transfer) {
        self.sent.push(transfer);
    }

    /// Every transfer id sent so far, in order, without repeats.
    pub fn sent_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.sent.iter().map(|transfer| transfer.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn resolve(&mut self, model: &Model, plan: &TransferPlan) -> Transfer {
        let mut transfer = match &plan.kind {
            PlanKind::New { .. } => self.resolve_new(model, &plan.kind),
            PlanKind::PostOrVoid { .. } => self.resolve_post_or_void(model, &plan.kind),
            PlanKind::Retry { pick, change } => match self.pick_sent(*pick) {
                Some(earlier) => {
                    let mut retry = earlier;
                    if let Some((field, to_zero)) = change {
                        change_field(&mut retry, *field, *to_zero);
                    }
                    retry
                }
                None => self.resolve_new(model, &default_new()),
            },
        };
        if !matches!(plan.kind, PlanKind::Retry { .. }) {
            transfer.id = match plan.reuse_id.and_then(|pick| self.pick_sent(pick)) {
                Some(earlier) => earlier.id,
                None => self.fresh_id(),
            };
            if plan.linked {
                transfer.flags |= transfer_flags::LINKED;
            }
        }
        if let Some(defect) = plan.defect {
            apply_defect(&mut transfer, defect);
        }
        self.sent.push(transfer);
        if transfer.flags & transfer_flags::PENDING != 0 {
            self.pending_ids.push(transfer.id);
        }
        transfer
    }

    fn fresh_id(&mut self) -> u128 {
        self.next_id += 1;
        TRANSFER_ID_FIRST + self.next_id
    }

    fn pick_sent(&self, pick: usize) -> Option<Transfer> {
        (!self.sent.is_empty()).then(|| self.sent[pick % self.sent.len()])
    }

    fn resolve_new(&self, model: &Model, kind: &PlanKind) -> Transfer {
        let PlanKind::New { pending, timeout, debit, credit, amount, ledger, code, special, user_data_64 } = *kind
        else {
            unreachable!("resolve_new takes a new transfer's plan");
        };
        let debit_ledger = model.account(debit).map_or(1, |account| account.ledger);
        let pending_flag = if pending { transfer_flags::PENDING } else { 0 };
        Transfer {
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            timeout: if pending { timeout } else { 0 },
            ledger: ledger.unwrap_or(debit_ledger),
            code,
            flags: pending_flag | special,
            user_data_64,
            ..Transfer::default()
        }
    }

    fn resolve_post_or_void(&self, model: &Model, kind: &PlanKind) -> Transfer {
        let PlanKind::PostOrVoid { void, live, pick, amount, fields, user_data_64 } = *kind else {
            unreachable!("resolve_post_or_void takes a post or void plan");
        };
        let is_live = |id: &&u128| model.pending_status(**id) == Some(PendingStatus::Pending);
        let live_ids: Vec<u128> = self.pending_ids.iter().filter(is_live).copied().collect();
        let candidates = if live && !live_ids.is_empty() { &live_ids } else { &self.pending_ids };
        let pending = if candidates.is_empty() {
            // Nothing pending was sent yet: refer to an id that does not exist.
            Transfer { id: TRANSFER_ID_FIRST, ..Transfer::default() }
        } else {
            let id = candidates[pick % candidates.len()];
            let sent = self.sent.iter().rev().find(|transfer| transfer.id == id).copied();
            model.transfer(id).or(sent).expect("a pending id that was sent")
        };
        let amount = match amount {
            PostAmount::Zero => 0,
            PostAmount::Full => pending.amount,
            PostAmount::Half => pending.amount / 2,
            PostAmount::AboveFull => pending.amount.saturating_add(1),
            PostAmount::Small(amount) => amount,
        };
        let flag = if void { transfer_flags::VOID_PENDING_TRANSFER } else { transfer_flags::POST_PENDING_TRANSFER };
        let mut transfer =
            Transfer { pending_id: pending.id, amount, flags: flag, user_data_64, ..Transfer::default() };
        if let PostFields::Same | PostFields::Different(_) = fields {
            transfer.debit_account_id = pending.debit_account_id;
            transfer.credit_account_id = pending.credit_account_id;
            transfer.ledger = pending.ledger;
            transfer.code = pending.code;
        }
        if let PostFields::Different(field) = fields {
            change_field(&mut transfer, field, false);
        }
        transfer
    }
}

fn default_new() -> PlanKind {
    PlanKind::New {
        pending: false,
        timeout: 0,
        debit: 1,
        credit: 2,
        amount: 1,
        ledger: None,
        code: 1,
        special: 0,
        user_data_64: 0,
    }
}

/// Sets `field` to zero, or to a value different from the current one.
fn change_field(transfer: &mut Transfer, field: Field, to_zero: bool) {
    let bump_u128 = |value: u128| if to_zero { 0 } else { value.wrapping_add(1) };
    let bump_u64 = |value: u64| if to_zero { 0 } else { value.wrapping_add(1) };
    let bump_u32 = |value: u32| if to_zero { 0 } else { value.wrapping_add(1) };
    match field {
        Field::Flags => transfer.flags ^= if to_zero { transfer_flags::LINKED } else { transfer_flags::PENDING },
        Field::DebitAccountId => transfer.debit_account_id = bump_u128(transfer.debit_account_id),
        Field::CreditAccountId => transfer.credit_account_id = bump_u128(transfer.credit_account_id),
        Field::Amount => transfer.amount = bump_u128(transfer.amount),
        Field::PendingId => transfer.pending_id = bump_u128(transfer.pending_id),
        Field::UserData128 => transfer.user_data_128 = bump_u128(transfer.user_data_128),
        Field::UserData64 => transfer.user_data_64 = bump_u64(transfer.user_data_64),
        Field::UserData32 => transfer.user_data_32 = bump_u32(transfer.user_data_32),
        Field::Timeout => transfer.timeout = bump_u32(transfer.timeout),
        Field::Ledger => transfer.ledger = bump_u32(transfer.ledger),
        Field::Code => transfer.code = if to_zero { 0 } else { transfer.code.wrapping_add(1) },
    }
}

fn apply_defect(transfer: &mut Transfer, defect: Defect) {
    match defect {
        Defect::Timestamp => transfer.timestamp = 1,
        Defect::ReservedFlag(bit) => transfer.flags |= bit,
        Defect::IdZero => transfer.id = 0,
        Defect::IdMax => transfer.id = u128::MAX,
        Defect::PendingId(id) => transfer.pending_id = id,
        Defect::PendingIdSelf => transfer.pending_id = transfer.id,
        Defect::Timeout(seconds) => transfer.timeout = seconds,
        Defect::AddFlags(flags) => transfer.flags |= flags,
    }
}
