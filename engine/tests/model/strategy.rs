//! The proptest strategies of the state-machine test: weighted so that most events get
//! far into the checks of §3.2 while every code still happens.

use proptest::collection::vec;
use proptest::prelude::*;
use tally_codecs::flags::{account as account_flags, filter as filter_flags, transfer as transfer_flags};
use tally_codecs::{Account, LimitProfile};

use crate::plan::{
    ACCOUNTS_MAX, Advance, Defect, Field, PROFILES_MAX, PlanKind, PostAmount, PostFields, Step, TRANSFER_ID_FIRST,
    TransferPlan,
};

fn advance() -> impl Strategy<Value = Advance> {
    prop_oneof![
        30 => Just(Advance::Stale),
        30 => Just(Advance::By(1)),
        20 => Just(Advance::By(400_000_000)),
        30 => Just(Advance::By(1_000_000_000)),
        20 => Just(Advance::By(2_500_000_000)),
        10 => Just(Advance::By(20_000_000_000)),
        10 => (0..5_000_000_000u64).prop_map(Advance::By),
        1 => Just(Advance::Late),
        20 => (any::<usize>(), 0..4u64).prop_map(|(pick, before)| Advance::NearDeadline { pick, before }),
    ]
}

fn account_id() -> impl Strategy<Value = u128> {
    prop_oneof![
        40 => 1..=ACCOUNTS_MAX,
        1 => Just(0),
        1 => Just(u128::MAX),
        1 => Just(ACCOUNTS_MAX + 1),
    ]
}

fn ledger() -> impl Strategy<Value = u32> {
    prop_oneof![12 => Just(1u32), 4 => Just(2u32), 1 => Just(0u32)]
}

fn code() -> impl Strategy<Value = u16> {
    prop_oneof![12 => Just(1u16), 2 => Just(2u16), 1 => Just(0u16)]
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        20 => 1..=100u128,
        4 => 101..=1_000u128,
        1 => Just(0u128),
        2 => (u128::MAX - 1_000)..=u128::MAX,
        1 => (u128::MAX / 2 - 10)..=(u128::MAX / 2 + 10),
    ]
}

fn flag(bit: u16, weight_set: u32, weight_clear: u32) -> impl Strategy<Value = u16> {
    prop_oneof![weight_set => Just(bit), weight_clear => Just(0u16)]
}

pub fn account() -> impl Strategy<Value = Account> {
    let flags = (
        flag(account_flags::LINKED, 1, 6),
        flag(account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, 2, 3),
        flag(account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS, 1, 5),
        flag(account_flags::HISTORY, 1, 1),
        flag(account_flags::CLOSED, 1, 40),
        flag(1 << 9, 1, 40),
    )
        .prop_map(|(a, b, c, d, e, f)| a | b | c | d | e | f);
    let limit_profile = prop_oneof![10 => Just(0u32), 6 => 1..=PROFILES_MAX, 1 => Just(PROFILES_MAX + 1)];
    let balance = prop_oneof![30 => Just(0u128), 1 => 1..=9u128];
    let user_data = (0..=1u128, 0..=1u64, prop_oneof![9 => Just(0u32), 1 => Just(1u32)]);
    let timestamp = prop_oneof![40 => Just(0u64), 1 => Just(1u64)];
    (account_id(), flags, ledger(), code(), limit_profile, (0..4usize, balance), user_data, timestamp).prop_map(
        |(id, flags, ledger, code, limit_profile, (balance_field, balance), user_data, timestamp)| {
            let mut account = Account {
                id,
                flags,
                ledger,
                code,
                limit_profile,
                user_data_128: user_data.0,
                user_data_64: user_data.1,
                user_data_32: user_data.2,
                timestamp,
                ..Account::default()
            };
            match balance_field {
                0 => account.debits_pending = balance,
                1 => account.debits_posted = balance,
                2 => account.credits_pending = balance,
                _ => account.credits_posted = balance,
            }
            account
        },
    )
}

pub fn limit_profile() -> impl Strategy<Value = LimitProfile> {
    let id = prop_oneof![20 => 1..=PROFILES_MAX, 1 => Just(0u32)];
    let max_single_debit = prop_oneof![3 => Just(0u128), 1 => 50..=500u128];
    let window = prop_oneof![
        3 => Just((0u128, 0u32)),
        3 => (100..=400u128, 1..=5u32),
        1 => (100..=400u128, Just(0u32)),
        1 => (Just(0u128), 1..=5u32),
    ];
    let overdraft_max = prop_oneof![3 => Just(0u128), 2 => 1..=200u128, 1 => (u128::MAX - 100)..=u128::MAX];
    let flags = prop_oneof![30 => Just(0u32), 1 => Just(1u32)];
    // Versions from a small range, so that upserts are as often stale as they are new.
    let version_and_timestamp = (0..=6u64, prop_oneof![30 => Just(0u64), 1 => Just(1u64)]);
    (id, ledger(), max_single_debit, window, overdraft_max, flags, version_and_timestamp).prop_map(
        |(
            id,
            ledger,
            max_single_debit,
            (window_debit_max, window_seconds),
            overdraft_max,
            flags,
            (version, timestamp),
        )| {
            LimitProfile {
                id,
                ledger,
                max_single_debit,
                window_debit_max,
                window_seconds,
                overdraft_max,
                flags,
                version,
                timestamp,
            }
        },
    )
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Flags),
        Just(Field::DebitAccountId),
        Just(Field::CreditAccountId),
        Just(Field::Amount),
        Just(Field::PendingId),
        Just(Field::UserData128),
        Just(Field::UserData64),
        Just(Field::UserData32),
        Just(Field::Timeout),
        Just(Field::Ledger),
        Just(Field::Code),
    ]
}

fn special_flags() -> impl Strategy<Value = u16> {
    use transfer_flags as F;
    prop_oneof![
        20 => Just(0u16),
        3 => Just(F::BALANCING_DEBIT),
        2 => Just(F::BALANCING_CREDIT),
        1 => Just(F::BALANCING_DEBIT | F::BALANCING_CREDIT),
        2 => Just(F::CLOSING_DEBIT),
        2 => Just(F::CLOSING_CREDIT),
        1 => Just(F::CLOSING_DEBIT | F::CLOSING_CREDIT),
    ]
}

fn new_transfer() -> impl Strategy<Value = PlanKind> {
    let timeout = prop_oneof![3 => Just(0u32), 4 => 1..=5u32, 1 => Just(u32::MAX)];
    let ledger = prop_oneof![12 => Just(None), 1 => ledger().prop_map(Some)];
    (any::<bool>(), timeout, account_id(), account_id(), amount(), ledger, code(), special_flags(), 0..=1u64).prop_map(
        |(pending, timeout, debit, credit, amount, ledger, code, special, user_data_64)| PlanKind::New {
            pending,
            timeout,
            debit,
            credit,
            amount,
            ledger,
            code,
            special,
            user_data_64,
        },
    )
}

fn post_or_void() -> impl Strategy<Value = PlanKind> {
    let amount = prop_oneof![
        4 => Just(PostAmount::Zero),
        3 => Just(PostAmount::Full),
        3 => Just(PostAmount::Half),
        1 => Just(PostAmount::AboveFull),
        1 => (1..=100u128).prop_map(PostAmount::Small),
    ];
    let fields = prop_oneof![
        6 => Just(PostFields::Zero),
        3 => Just(PostFields::Same),
        1 => field().prop_map(PostFields::Different),
    ];
    let void = prop_oneof![3 => Just(false), 2 => Just(true)];
    let live = prop_oneof![4 => Just(true), 1 => Just(false)];
    (void, live, any::<usize>(), amount, fields, 0..=1u64).prop_map(
        |(void, live, pick, amount, fields, user_data_64)| PlanKind::PostOrVoid {
            void,
            live,
            pick,
            amount,
            fields,
            user_data_64,
        },
    )
}

fn retry() -> impl Strategy<Value = PlanKind> {
    let change = prop_oneof![2 => Just(None), 3 => (field(), any::<bool>()).prop_map(Some)];
    (any::<usize>(), change).prop_map(|(pick, change)| PlanKind::Retry { pick, change })
}

fn defect() -> impl Strategy<Value = Defect> {
    use transfer_flags as F;
    prop_oneof![
        Just(Defect::Timestamp),
        (8..16u16).prop_map(|bit| Defect::ReservedFlag(1 << bit)),
        Just(Defect::IdZero),
        Just(Defect::IdMax),
        prop_oneof![Just(0u128), Just(u128::MAX), Just(TRANSFER_ID_FIRST + 1)].prop_map(Defect::PendingId),
        Just(Defect::PendingIdSelf),
        (1..=3u32).prop_map(Defect::Timeout),
        prop_oneof![
            Just(F::PENDING | F::POST_PENDING_TRANSFER),
            Just(F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER),
            Just(F::POST_PENDING_TRANSFER | F::BALANCING_DEBIT),
            Just(F::VOID_PENDING_TRANSFER | F::CLOSING_CREDIT),
            Just(F::CLOSING_DEBIT),
        ]
        .prop_map(Defect::AddFlags),
    ]
}

fn transfer_plan() -> impl Strategy<Value = TransferPlan> {
    let kind = prop_oneof![10 => new_transfer(), 5 => post_or_void(), 3 => retry()];
    let linked = prop_oneof![7 => Just(false), 1 => Just(true)];
    let reuse_id = prop_oneof![15 => Just(None), 1 => any::<usize>().prop_map(Some)];
    let defect = prop_oneof![25 => Just(None), 1 => defect().prop_map(Some)];
    (kind, linked, reuse_id, defect).prop_map(|(kind, linked, reuse_id, defect)| TransferPlan {
        kind,
        linked,
        reuse_id,
        defect,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (advance(), vec(account(), 1..=4)).prop_map(|(advance, events)| Step::Accounts(advance, events)),
        1 => (advance(), vec(limit_profile(), 1..=2)).prop_map(|(advance, events)| Step::Profiles(advance, events)),
        12 => (advance(), vec(transfer_plan(), 1..=8)).prop_map(|(advance, events)| Step::Transfers(advance, events)),
        3 => advance().prop_map(Step::Tick),
    ]
}

/// A query filter, with its time bounds given as picks among the transfers' timestamps.
#[derive(Clone, Copy, Debug)]
pub struct FilterPlan {
    pub account_id: u128,
    pub flags: u32,
    pub limit: u32,
    pub bounds: Option<(usize, usize)>,
}

fn filter_plan() -> impl Strategy<Value = FilterPlan> {
    use filter_flags as F;
    let flags = prop_oneof![
        Just(F::REVERSED),
        Just(F::DEBITS),
        Just(F::CREDITS),
        Just(F::DEBITS | F::CREDITS),
        Just(F::DEBITS | F::REVERSED),
        Just(F::CREDITS | F::REVERSED),
        Just(F::DEBITS | F::CREDITS | F::REVERSED),
    ];
    let limit = prop_oneof![Just(1u32), Just(3u32), Just(8_189u32), Just(8_190u32), Just(u32::MAX), Just(0u32)];
    let bounds = prop_oneof![Just(None), (any::<usize>(), any::<usize>()).prop_map(Some)];
    (1..=ACCOUNTS_MAX + 1, flags, limit, bounds).prop_map(|(account_id, flags, limit, bounds)| FilterPlan {
        account_id,
        flags,
        limit,
        bounds,
    })
}

/// One test case: the initial profiles and accounts, the steps, and the final queries.
#[derive(Clone, Debug)]
pub struct Case {
    pub profiles: Vec<LimitProfile>,
    pub accounts: Vec<Account>,
    pub steps: Vec<Step>,
    pub filters: Vec<FilterPlan>,
}

/// A valid profile for the initial batch (its id is set by position).
fn initial_profile() -> impl Strategy<Value = LimitProfile> {
    (limit_profile(), prop_oneof![3 => Just(1u32), 1 => Just(2u32)]).prop_map(|(profile, ledger)| LimitProfile {
        ledger,
        flags: 0,
        window_seconds: profile.window_seconds.max(1),
        version: 1,
        timestamp: 0,
        ..profile
    })
}

/// A valid account for the initial batch (its id is set by position), so that most
/// histories start with eight accounts to move money between.
fn initial_account() -> impl Strategy<Value = Account> {
    use account_flags as F;
    let flags = prop_oneof![
        3 => Just(0u16),
        3 => Just(F::DEBITS_MUST_NOT_EXCEED_CREDITS),
        1 => Just(F::CREDITS_MUST_NOT_EXCEED_DEBITS),
        3 => Just(F::HISTORY),
        2 => Just(F::HISTORY | F::DEBITS_MUST_NOT_EXCEED_CREDITS),
        1 => Just(F::HISTORY | F::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ];
    let ledger = prop_oneof![3 => Just(1u32), 1 => Just(2u32)];
    let limit_profile = prop_oneof![2 => Just(0u32), 1 => 1..=PROFILES_MAX];
    (flags, ledger, limit_profile, 0..=1u128).prop_map(|(flags, ledger, limit_profile, user_data_128)| Account {
        flags,
        ledger,
        code: 1,
        limit_profile,
        user_data_128,
        ..Account::default()
    })
}

pub fn case(steps: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Case> {
    let numbered_profiles = |profiles: Vec<LimitProfile>| {
        profiles.into_iter().zip(1..).map(|(profile, id)| LimitProfile { id, ..profile }).collect::<Vec<_>>()
    };
    let numbered_accounts = |accounts: Vec<Account>| {
        accounts.into_iter().zip(1..).map(|(account, id)| Account { id, ..account }).collect::<Vec<_>>()
    };
    (
        vec(initial_profile(), PROFILES_MAX as usize).prop_map(numbered_profiles),
        vec(initial_account(), ACCOUNTS_MAX as usize).prop_map(numbered_accounts),
        vec(step(), steps),
        vec(filter_plan(), 4),
    )
        .prop_map(|(profiles, accounts, steps, filters)| Case { profiles, accounts, steps, filters })
}
