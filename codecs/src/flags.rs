//! Flag bits of each record, and the names their JSON forms use.

/// Account flags.
pub mod account {
    pub const LINKED: u16 = 1 << 0;
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    pub const HISTORY: u16 = 1 << 3;
    pub const CLOSED: u16 = 1 << 4;
    /// Every bit that has a meaning; any other bit is `reserved_flag`.
    pub const KNOWN: u16 = (1 << 5) - 1;
    pub const NAMES: &[(u16, &str)] = &[
        (LINKED, "linked"),
        (DEBITS_MUST_NOT_EXCEED_CREDITS, "debits_must_not_exceed_credits"),
        (CREDITS_MUST_NOT_EXCEED_DEBITS, "credits_must_not_exceed_debits"),
        (HISTORY, "history"),
        (CLOSED, "closed"),
    ];
}

/// Transfer flags.
pub mod transfer {
    pub const LINKED: u16 = 1 << 0;
    pub const PENDING: u16 = 1 << 1;
    pub const POST_PENDING_TRANSFER: u16 = 1 << 2;
    pub const VOID_PENDING_TRANSFER: u16 = 1 << 3;
    pub const BALANCING_DEBIT: u16 = 1 << 4;
    pub const BALANCING_CREDIT: u16 = 1 << 5;
    pub const CLOSING_DEBIT: u16 = 1 << 6;
    pub const CLOSING_CREDIT: u16 = 1 << 7;
    pub const KNOWN: u16 = (1 << 8) - 1;
    pub const NAMES: &[(u16, &str)] = &[
        (LINKED, "linked"),
        (PENDING, "pending"),
        (POST_PENDING_TRANSFER, "post_pending_transfer"),
        (VOID_PENDING_TRANSFER, "void_pending_transfer"),
        (BALANCING_DEBIT, "balancing_debit"),
        (BALANCING_CREDIT, "balancing_credit"),
        (CLOSING_DEBIT, "closing_debit"),
        (CLOSING_CREDIT, "closing_credit"),
    ];
}

/// Limit profile flags: none are defined yet, so every bit is reserved.
pub mod limit_profile {
    pub const KNOWN: u32 = 0;
    pub const NAMES: &[(u32, &str)] = &[];
}

/// Account filter flags for `get_account_transfers` and `get_account_balances`.
pub mod filter {
    pub const DEBITS: u32 = 1 << 0;
    pub const CREDITS: u32 = 1 << 1;
    pub const REVERSED: u32 = 1 << 2;
    pub const KNOWN: u32 = (1 << 3) - 1;
    pub const NAMES: &[(u32, &str)] = &[(DEBITS, "debits"), (CREDITS, "credits"), (REVERSED, "reversed")];
}
