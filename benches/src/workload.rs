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

/// How transfer ids are chosen: increasing (the fast path: no hash-table look-up for a
/// new id) or random over the whole 128-bit space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdOrder {
    Increasing,
    Random,
}

/// Under [`Distribution::Hot`]-like picking, this share of picks (in percent) goes to the
/// hot accounts ...
pub const HOT_TRAFFIC_PERCENT: u64 = 90;
/// ... which are this share of all accounts (in percent; at least two accounts).
pub const HOT_ACCOUNTS_PERCENT: u64 = 1;

/// How a [`Workload`] picks its accounts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Picking {
    Uniform,
    /// Zipf with exponent `s`.
    Zipf {
        s: f64,
    },
    /// [`HOT_TRAFFIC_PERCENT`] of picks among the first [`HOT_ACCOUNTS_PERCENT`] of accounts.
    Hot,
}

/// A seeded transfer sequence that any thread can cut into batches: batch `index` of
/// `size` transfers is the same whoever asks and whenever, so the node and a baseline get
/// the same transfers in the same batches.
pub struct Workload {
    accounts: u64,
    picking: Picking,
    picker: AccountPicker,
    ids: IdOrder,
    /// Added to every transfer id (distinct runs against one node must not reuse ids).
    id_base: u128,
    /// Share of transfer pairs that are two-phase (a pending transfer and its post).
    two_phase_percent: u64,
    seed: u64,
}

impl Workload {
    pub fn new(
        accounts: u64,
        picking: Picking,
        ids: IdOrder,
        id_base: u128,
        two_phase_percent: u64,
        seed: u64,
    ) -> Workload {
        let distribution = match picking {
            Picking::Zipf { s } => Distribution::Zipfian { s },
            Picking::Uniform | Picking::Hot => Distribution::Uniform,
        };
        let picker = AccountPicker::new(accounts, distribution);
        Workload { accounts, picking, picker, ids, id_base, two_phase_percent: two_phase_percent.min(100), seed }
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        if self.picking != Picking::Hot {
            return self.picker.pick(rng);
        }
        let hot = (self.accounts * HOT_ACCOUNTS_PERCENT / 100).max(2).min(self.accounts);
        if rng.below(100) < HOT_TRAFFIC_PERCENT { 1 + rng.below(hot) } else { 1 + rng.below(self.accounts) }
    }

    fn pick_pair(&self, rng: &mut Rng) -> (u64, u64) {
        let debit = self.pick(rng);
        loop {
            let credit = self.pick(rng);
            if credit != debit {
                return (debit, credit);
            }
        }
    }

    /// The id of the `index`-th transfer of the sequence (never 0 nor 2^128 − 1).
    pub fn transfer_id(&self, index: u64) -> u128 {
        let id = match self.ids {
            IdOrder::Increasing => self.id_base.wrapping_add(u128::from(index) + 1),
            IdOrder::Random => {
                let mut rng = Rng::new(mix(self.seed ^ 0x1d5, index));
                let high = u128::from(rng.next_u64()) << 64;
                (high | u128::from(rng.next_u64())) ^ self.id_base
            }
        };
        if id == 0 || id == u128::MAX { 1 } else { id }
    }

    /// Batch `index` of `size` transfers (the sequence's transfers `index × size` onwards).
    /// Two-phase pairs never cross a batch: a pending transfer and its post sit side by
    /// side, so the post always finds its pending applied.
    pub fn batch(&self, index: u64, size: usize) -> Vec<Transfer> {
        let first = index * size as u64;
        let mut rng = Rng::new(mix(self.seed, index));
        let mut transfers = Vec::with_capacity(size);
        while transfers.len() < size {
            let sequence = first + transfers.len() as u64;
            let (debit, credit) = self.pick_pair(&mut rng);
            let amount = u128::from(1 + rng.below(1_000_000));
            let two_phase = transfers.len() + 1 < size && rng.below(100) < self.two_phase_percent;
            let flags = if two_phase { transfer_flags::PENDING } else { 0 };
            let transfer = Transfer {
                id: self.transfer_id(sequence),
                debit_account_id: u128::from(debit),
                credit_account_id: u128::from(credit),
                amount,
                ledger: LEDGER,
                code: 1,
                flags,
                ..Transfer::default()
            };
            transfers.push(transfer);
            if two_phase {
                transfers.push(Transfer {
                    id: self.transfer_id(sequence + 1),
                    pending_id: transfer.id,
                    flags: transfer_flags::POST_PENDING_TRANSFER,
                    ..Transfer::default()
                });
            }
        }
        transfers
    }
}

/// A seed for batch `index` (splitmix64 of both), so batches are independent streams.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::{IdOrder, Picking, Workload};

    #[test]
    fn a_batch_is_the_same_whoever_asks() {
        let workload = Workload::new(100, Picking::Zipf { s: 1.0 }, IdOrder::Random, 0, 20, 9);
        assert_eq!(workload.batch(3, 50), workload.batch(3, 50));
        assert_ne!(workload.batch(3, 50), workload.batch(4, 50));
    }

    #[test]
    fn increasing_ids_follow_the_sequence_and_posts_follow_their_pending() {
        let workload = Workload::new(10, Picking::Hot, IdOrder::Increasing, 1000, 100, 1);
        let batch = workload.batch(2, 7);
        let ids: Vec<u128> = batch.iter().map(|transfer| transfer.id).collect();
        assert_eq!(ids, (1015..1022).collect::<Vec<u128>>());
        // 100 % two-phase: three pairs, and the odd last slot single-phase.
        for pair in batch.chunks(2).take(3) {
            assert_eq!(pair[1].pending_id, pair[0].id);
        }
        assert_eq!(batch[6].pending_id, 0);
        let singles = batch.iter().filter(|transfer| transfer.pending_id == 0);
        assert!(singles.clone().count() == 4);
        assert!(singles.into_iter().all(|transfer| transfer.debit_account_id != transfer.credit_account_id));
    }
}
