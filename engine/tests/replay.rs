//! Determinism (invariant 2 of the house design): the same inputs give the same state and
//! the same state hash, whatever the ledger's capacity (its memory layout); and a ledger
//! whose history differs by one event has a different hash. Batch boundaries are part of
//! the input (they decide the commit timestamps), so only identical inputs are compared.

use tally_codecs::flags::{account as account_flags, filter as filter_flags, transfer as transfer_flags};
use tally_codecs::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Transfer};
use tally_engine::{Ledger, PendingStatus};

/// Inputs in one generated history; a batch holds up to 8 events.
const HISTORY_INPUTS: usize = 2_000;
const NS_PER_S: u64 = 1_000_000_000;
/// Two accounts that every history creates first, for the divergence tests.
const SPARE_DEBIT: u128 = 100;
const SPARE_CREDIT: u128 = 101;

/// SplitMix64: a tiny deterministic generator, so that a history depends on its seed only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// True one time in `times`.
    fn one_in(&mut self, times: u64) -> bool {
        self.below(times) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Debug)]
enum Input {
    Accounts(u64, Vec<Account>),
    Profiles(u64, Vec<LimitProfile>),
    Transfers(u64, Vec<Transfer>),
    Tick(u64),
}

fn apply(ledger: &mut Ledger, input: &Input) -> Vec<EventResult> {
    let mut results = Vec::new();
    match input {
        Input::Accounts(timestamp, events) => ledger.create_accounts(*timestamp, events, &mut results),
        Input::Profiles(timestamp, events) => ledger.upsert_limit_profiles(*timestamp, events, &mut results),
        Input::Transfers(timestamp, events) => ledger.create_transfers(*timestamp, events, &mut results),
        Input::Tick(timestamp) => ledger.tick(*timestamp),
    }
    results
}

struct Generator {
    rng: Rng,
    clock: u64,
    next_transfer_id: u128,
    pending_ids: Vec<u128>,
    /// The ledger of accounts 1 to 8 as first created, so that most transfers get far.
    ledgers: [u32; 8],
}

impl Generator {
    fn account(&mut self) -> Account {
        use account_flags as F;
        let flags = self.rng.pick(&[
            0,
            F::HISTORY,
            F::DEBITS_MUST_NOT_EXCEED_CREDITS,
            F::CREDITS_MUST_NOT_EXCEED_DEBITS,
            F::LINKED,
        ]);
        Account {
            id: 1 + u128::from(self.rng.below(8)),
            ledger: self.rng.pick(&[1, 1, 1, 2]),
            code: 1,
            flags: flags | self.rng.pick(&[0, F::HISTORY]),
            limit_profile: self.rng.pick(&[0, 0, 1, 2, 3]),
            user_data_64: self.rng.below(2),
            ..Account::default()
        }
    }

    fn profile(&mut self) -> LimitProfile {
        LimitProfile {
            id: 1 + self.rng.below(3) as u32,
            ledger: self.rng.pick(&[1, 1, 2]),
            max_single_debit: self.rng.pick(&[0u128, 0, 300]),
            window_debit_max: self.rng.pick(&[0u128, 500]),
            window_seconds: 1 + self.rng.below(5) as u32,
            overdraft_max: self.rng.pick(&[0u128, 0, 50, 1_000]),
            flags: 0,
            version: self.rng.below(4),
            timestamp: 0,
        }
    }

    fn transfer(&mut self) -> Transfer {
        use transfer_flags as F;
        self.next_transfer_id += 1;
        let id = if self.rng.one_in(20) { 1_000 + self.next_transfer_id / 2 } else { 1_000 + self.next_transfer_id };
        let linked = if self.rng.one_in(10) { F::LINKED } else { 0 };
        if !self.pending_ids.is_empty() && self.rng.one_in(3) {
            let pending_id = self.rng.pick(&self.pending_ids);
            let flag = self.rng.pick(&[F::POST_PENDING_TRANSFER, F::POST_PENDING_TRANSFER, F::VOID_PENDING_TRANSFER]);
            let amount = self.rng.pick(&[0u128, 0, 1, 10, 100]);
            return Transfer { id, pending_id, amount, flags: flag | linked, ..Transfer::default() };
        }
        let pending = self.rng.one_in(2);
        let mut special = self.rng.pick(&[0, 0, 0, 0, F::BALANCING_DEBIT, F::BALANCING_CREDIT]);
        if pending && self.rng.one_in(30) {
            // Rare, and always with a timeout: a closed account takes no more transfers.
            special = self.rng.pick(&[F::CLOSING_DEBIT, F::CLOSING_CREDIT]);
        }
        if pending {
            self.pending_ids.push(id);
        }
        let debit = self.rng.below(8) as usize;
        Transfer {
            id,
            debit_account_id: 1 + debit as u128,
            credit_account_id: 1 + u128::from(self.rng.below(8)),
            amount: self.rng.pick(&[1u128, 5, 20, 100, 1_000]),
            ledger: if self.rng.one_in(10) { 3 - self.ledgers[debit] } else { self.ledgers[debit] },
            code: 1,
            timeout: if special != 0 {
                2
            } else if pending {
                self.rng.pick(&[0, 1, 3])
            } else {
                0
            },
            flags: linked | special | if pending { F::PENDING } else { 0 },
            user_data_32: self.rng.below(4) as u32,
            ..Transfer::default()
        }
    }

    fn input(&mut self) -> Input {
        self.clock += self.rng.pick(&[0, 1, NS_PER_S / 2, NS_PER_S, 3 * NS_PER_S]);
        let batch = 1 + self.rng.below(8) as usize;
        match self.rng.below(20) {
            0..=1 => Input::Accounts(self.clock, (0..batch.min(3)).map(|_| self.account()).collect()),
            2 => Input::Profiles(self.clock, vec![self.profile()]),
            3..=4 => Input::Tick(self.clock),
            _ => Input::Transfers(self.clock, (0..batch).map(|_| self.transfer()).collect()),
        }
    }
}

/// A deterministic history: its first input creates accounts 1 to 8 and the two spares.
fn history(seed: u64, inputs: usize) -> Vec<Input> {
    let mut generator =
        Generator { rng: Rng(seed), clock: 0, next_transfer_id: 0, pending_ids: Vec::new(), ledgers: [1; 8] };
    let mut accounts: Vec<Account> = (1..=8)
        .map(|id| {
            let account = generator.account();
            Account { id, flags: account.flags & !account_flags::LINKED, limit_profile: 0, ..account }
        })
        .collect();
    for (ledger, account) in generator.ledgers.iter_mut().zip(&accounts) {
        *ledger = account.ledger;
    }
    accounts.extend([SPARE_DEBIT, SPARE_CREDIT].map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }));
    let mut history = vec![Input::Accounts(1, accounts)];
    history.extend((1..inputs).map(|_| generator.input()));
    history
}

/// Everything a client can see of a ledger, and its hash.
#[derive(Debug, PartialEq)]
struct Observed {
    state_hash: u128,
    last_timestamp: u64,
    accounts: Vec<Account>,
    transfers: Vec<Transfer>,
    statuses: Vec<Option<PendingStatus>>,
    profiles: Vec<Option<LimitProfile>>,
    account_transfers: Vec<Vec<Transfer>>,
    account_balances: Vec<Vec<AccountBalance>>,
}

fn observe(ledger: &Ledger) -> Observed {
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash(), "incremental state hash");
    let account_ids: Vec<u128> = (1..=8).chain([SPARE_DEBIT, SPARE_CREDIT]).collect();
    let transfer_ids: Vec<u128> = (1_000..1_000 + 20_000).collect();
    let mut accounts = Vec::new();
    ledger.lookup_accounts(&account_ids, &mut accounts);
    let mut transfers = Vec::new();
    ledger.lookup_transfers(&transfer_ids, &mut transfers);
    let statuses = transfers.iter().map(|transfer| ledger.pending_status(transfer.id)).collect();
    let mut account_transfers = Vec::new();
    let mut account_balances = Vec::new();
    for account_id in account_ids {
        let flags = filter_flags::DEBITS | filter_flags::CREDITS;
        let filter = AccountFilter { account_id, flags, limit: 8_189, ..AccountFilter::default() };
        let mut rows = Vec::new();
        ledger.get_account_transfers(&filter, &mut rows).expect("a valid filter");
        account_transfers.push(rows);
        let mut rows = Vec::new();
        ledger.get_account_balances(&filter, &mut rows).expect("a valid filter");
        account_balances.push(rows);
    }
    Observed {
        state_hash: ledger.state_hash(),
        last_timestamp: ledger.last_timestamp(),
        accounts,
        transfers,
        statuses,
        profiles: (0..=4).map(|id| ledger.lookup_limit_profile(id)).collect(),
        account_transfers,
        account_balances,
    }
}

/// Also: two ledgers, whose hash maps have different random seeds, write byte-identical
/// snapshot images.
#[test]
fn replay_gives_identical_state_hash() {
    for seed in [1, 2, 0x7a11] {
        let inputs = history(seed, HISTORY_INPUTS);
        let mut first = Ledger::new();
        // A different capacity gives a different memory layout, never a different state.
        let mut second = Ledger::with_capacity(4_096, 65_536);
        for (index, input) in inputs.iter().enumerate() {
            assert_eq!(apply(&mut first, input), apply(&mut second, input), "seed {seed}, input {index}");
            if index % 250 == 0 {
                assert_eq!(observe(&first), observe(&second), "seed {seed}, after input {index}");
            }
        }
        let observed = observe(&first);
        assert_eq!(observed, observe(&second), "seed {seed}");
        // Each ledger's maps hash with their own random seeds, so they iterate in different
        // orders; the snapshot image must not show it.
        let image = |ledger: &Ledger| ledger.to_image().to_bytes().expect("an image serialises").to_vec();
        assert!(image(&first) == image(&second), "seed {seed}: snapshot images differ");
        assert!(
            observed.transfers.len() > 500,
            "seed {seed}: the history moved money ({} transfers)",
            observed.transfers.len()
        );
        assert_ne!(observed.state_hash, Ledger::new().state_hash());
    }
}

/// One input, given to the base ledger and the diverging one in two versions.
struct Divergence {
    name: &'static str,
    base: Vec<Input>,
    diverging: Vec<Input>,
}

fn spare_transfer(id: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: SPARE_DEBIT,
        credit_account_id: SPARE_CREDIT,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

fn divergences() -> Vec<Divergence> {
    use transfer_flags as F;
    let transfers = |events: Vec<Transfer>| Input::Transfers(0, events);
    let pending = Transfer { flags: F::PENDING, ..spare_transfer(90_001, 5) };
    let post = Transfer { id: 90_002, pending_id: 90_001, flags: F::POST_PENDING_TRANSFER, ..Transfer::default() };
    let spare_account = Account { id: 7_777, ledger: 1, code: 1, ..Account::default() };
    let spare_profile = LimitProfile { id: 4, ledger: 1, max_single_debit: 10, ..LimitProfile::default() };
    vec![
        Divergence {
            name: "a transfer's user data",
            base: vec![transfers(vec![spare_transfer(90_001, 5)])],
            diverging: vec![transfers(vec![Transfer { user_data_64: 1, ..spare_transfer(90_001, 5) }])],
        },
        Divergence {
            name: "a transfer's amount",
            base: vec![transfers(vec![spare_transfer(90_001, 5)])],
            diverging: vec![transfers(vec![spare_transfer(90_001, 6)])],
        },
        Divergence {
            name: "one more tick",
            base: vec![Input::Tick(0)],
            diverging: vec![Input::Tick(0), Input::Tick(0)],
        },
        Divergence {
            name: "a post instead of a void",
            base: vec![transfers(vec![pending, Transfer { flags: F::VOID_PENDING_TRANSFER, ..post }])],
            diverging: vec![transfers(vec![pending, post])],
        },
        Divergence {
            name: "an account's user data",
            base: vec![Input::Accounts(0, vec![spare_account])],
            diverging: vec![Input::Accounts(0, vec![Account { user_data_128: 1, ..spare_account }])],
        },
        Divergence {
            name: "a limit profile's limit",
            base: vec![Input::Profiles(0, vec![spare_profile])],
            diverging: vec![Input::Profiles(0, vec![LimitProfile { max_single_debit: 11, ..spare_profile }])],
        },
        Divergence {
            // Both fail and nothing else changes: only the remembered failed ids differ.
            name: "a transient failure instead of a permanent one",
            base: vec![transfers(vec![Transfer { credit_account_id: SPARE_DEBIT, ..spare_transfer(90_001, 5) }])],
            diverging: vec![transfers(vec![Transfer { credit_account_id: 9_999, ..spare_transfer(90_001, 5) }])],
        },
    ]
}

#[test]
fn ledger_diverging_by_one_event_has_a_different_state_hash() {
    let inputs = history(3, HISTORY_INPUTS / 4);
    for divergence in divergences() {
        let mut base = Ledger::new();
        let mut diverging = Ledger::new();
        for input in &inputs {
            apply(&mut base, input);
            apply(&mut diverging, input);
        }
        assert_eq!(base.state_hash(), diverging.state_hash());
        for input in &divergence.base {
            apply(&mut base, input);
        }
        for input in &divergence.diverging {
            apply(&mut diverging, input);
        }
        let name = divergence.name;
        assert_ne!(base.state_hash(), diverging.state_hash(), "{name}");
        assert_eq!(base.state_hash(), base.recompute_state_hash(), "{name}");
        assert_eq!(diverging.state_hash(), diverging.recompute_state_hash(), "{name}");
    }
}
