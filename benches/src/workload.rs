//! Seeded workloads: accounts, and transfers between them drawn uniformly or from a
//! Zipfian distribution (a few hot accounts, a long tail), like `tigerbeetle benchmark`.

use tally_codecs::flags::transfer as transfer_flags;
use tally_codecs::{Account, Transfer};

/// The ledger every benchmark account lives on.
pub const LEDGER: u32 = 1;
/// The batch size of a full request.
pub const BATCH_EVENTS: usize = 8189;

/// A small, fast, seeded generator (xorshift64*); quality is ample for picking accounts.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How transfers pick their accounts.
#[derive(Clone, Copy, Debug)]
pub enum Distribution {
    Uniform,
    /// Zipf with exponent `s` over the accounts (rank 1 is the hottest).
    Zipfian {
        s: f64,
    },
}

/// Draws account numbers `1..=count`.
pub struct AccountPicker {
    count: u64,
    /// Cumulative probabilities for the Zipfian case.
    cdf: Vec<f64>,
}

impl AccountPicker {
    pub fn new(count: u64, distribution: Distribution) -> AccountPicker {
        let cdf = match distribution {
            Distribution::Uniform => Vec::new(),
            Distribution::Zipfian { s } => {
                let mut running = 0.0;
                let mut cdf: Vec<f64> = (1..=count)
                    .map(|rank| {
                        running += 1.0 / (rank as f64).powf(s);
                        running
                    })
                    .collect();
                for value in &mut cdf {
                    *value /= running;
                }
                cdf
            }
        };
        AccountPicker { count, cdf }
    }

    pub fn pick(&self, rng: &mut Rng) -> u64 {
        if self.cdf.is_empty() {
            return 1 + rng.below(self.count);
        }
        let target = rng.unit();
        1 + self.cdf.partition_point(|cumulative| *cumulative < target) as u64
    }

    /// Two different accounts.
    pub fn pick_pair(&self, rng: &mut Rng) -> (u64, u64) {
        let debit = self.pick(rng);
        loop {
            let credit = self.pick(rng);
            if credit != debit {
                return (debit, credit);
            }
        }
    }
}

/// `count` plain accounts with ids `1..=count`.
pub fn accounts(count: u64) -> Vec<Account> {
    (1..=count).map(|id| Account { id: u128::from(id), ledger: LEDGER, code: 1, ..Account::default() }).collect()
}

/// Generates transfers with sequential ids starting after the last one it made.
pub struct TransferGenerator {
    picker: AccountPicker,
    rng: Rng,
    next_id: u128,
}

impl TransferGenerator {
    pub fn new(accounts: u64, distribution: Distribution, seed: u64) -> TransferGenerator {
        TransferGenerator { picker: AccountPicker::new(accounts, distribution), rng: Rng::new(seed), next_id: 1 }
    }

    fn transfer(&mut self, flags: u16) -> Transfer {
        let (debit, credit) = self.picker.pick_pair(&mut self.rng);
        let id = self.next_id;
        self.next_id += 1;
        Transfer {
            id,
            debit_account_id: u128::from(debit),
            credit_account_id: u128::from(credit),
            amount: u128::from(1 + self.rng.below(1_000_000)),
            ledger: LEDGER,
            code: 1,
            flags,
            ..Transfer::default()
        }
    }

    /// `count` single-phase transfers.
    pub fn single_phase(&mut self, count: usize) -> Vec<Transfer> {
        (0..count).map(|_| self.transfer(0)).collect()
    }

    /// `pairs` pending transfers each followed later in the batch by its post: the
    /// pendings first, then the posts, so each post finds its pending already applied.
    pub fn two_phase(&mut self, pairs: usize) -> Vec<Transfer> {
        let pendings: Vec<Transfer> = (0..pairs).map(|_| self.transfer(transfer_flags::PENDING)).collect();
        let posts = pendings.iter().map(|pending| {
            let id = self.next_id;
            self.next_id += 1;
            Transfer { id, pending_id: pending.id, flags: transfer_flags::POST_PENDING_TRANSFER, ..Transfer::default() }
        });
        let posts: Vec<Transfer> = posts.collect();
        pendings.into_iter().chain(posts).collect()
    }

    /// `pairs` chains of two linked single-phase transfers.
    pub fn linked_pairs(&mut self, pairs: usize) -> Vec<Transfer> {
        (0..pairs).flat_map(|_| [self.transfer(transfer_flags::LINKED), self.transfer(0)]).collect()
    }
}
