//! Copying the ledger for a checkpoint, on the business-logic thread.
//!
//! A fresh copy allocates as much memory as the ledger holds, and the first write to each
//! new page is a page fault (about a microsecond per 4 KiB), so copying into fresh memory
//! costs several times a plain `memcpy`. [`Clone::clone_from`] copies into a ledger whose
//! vectors and maps already have the room (the previous checkpoint's copy, handed back by
//! the writer), which leaves only the copying.
//!
//! The hot transfers (and their sequences, links, balance rows and the id index's sorted
//! run) are copy-on-write chunks (`cow.rs`): their copy clones one pointer per full chunk
//! and copies only the last, partly filled one, so it no longer grows with the window.
//!
//! Both functions name every field (a destructuring pattern), so a field added to
//! [`Ledger`] without being copied here does not compile.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cow::CowVec;
use crate::ledger::Ledger;

impl Clone for Ledger {
    fn clone(&self) -> Ledger {
        let Ledger {
            accounts,
            account_index,
            account_last,
            history,
            history_rows,
            history_base,
            transfers,
            transfer_sequences,
            transfer_links,
            transfers_base,
            transfer_index,
            pending,
            resolved,
            expiry,
            profiles,
            windows,
            window_debits,
            window_seconds_max,
            failed_accounts,
            failed_transfers,
            failed_order,
            last_timestamp,
            hash_sum,
            evicted_sum,
            window_sum,
            largest_id,
            sequence,
            hot_window,
            last_cutoff,
            cold,
            undo,
            recording,
            expired_log,
            copy_tracking: _,
        } = self;
        Ledger {
            accounts: accounts.clone(),
            account_index: account_index.clone(),
            account_last: account_last.clone(),
            history: history.clone(),
            history_rows: history_rows.clone(),
            history_base: *history_base,
            transfers: transfers.clone(),
            transfer_sequences: transfer_sequences.clone(),
            transfer_links: transfer_links.clone(),
            transfers_base: *transfers_base,
            transfer_index: transfer_index.clone(),
            pending: pending.clone(),
            resolved: resolved.clone(),
            expiry: expiry.clone(),
            profiles: profiles.clone(),
            windows: windows.clone(),
            window_debits: window_debits.clone(),
            window_seconds_max: *window_seconds_max,
            failed_accounts: failed_accounts.clone(),
            failed_transfers: failed_transfers.clone(),
            failed_order: failed_order.clone(),
            last_timestamp: *last_timestamp,
            hash_sum: *hash_sum,
            evicted_sum: *evicted_sum,
            window_sum: *window_sum,
            largest_id: *largest_id,
            sequence: *sequence,
            hot_window: hot_window.clone(),
            last_cutoff: *last_cutoff,
            cold: cold.clone(),
            undo: undo.clone(),
            recording: *recording,
            expired_log: expired_log.clone(),
            // A fresh copy is not tracked (its next `clone_from` copies everything): only
            // `clone_from` counts copies, so a clone made for another purpose does not
            // make the checkpoint's spare stale.
            copy_tracking: CopyTracking::new(),
        }
    }

    fn clone_from(&mut self, source: &Ledger) {
        self.copy_from(source, true);
    }
}

impl Ledger {
    /// A copy of `source` for a checkpoint, made into `self` (the previous one, handed
    /// back, or a new ledger): everything [`Clone::clone_from`] copies but the transfer id
    /// index, which is left empty. The image ([`Ledger::to_image`]) and the state hash do
    /// not read that index (a load rebuilds it), and its out-of-order table is sized for
    /// the whole hot window (hundreds of megabytes at 8 189 transfers an input): copying it
    /// stalled the business logic, and the copy kept it resident between checkpoints. The
    /// copy is fit for `to_image`, `state_hash` and the counts, not for applying or
    /// looking up transfers.
    pub fn copy_for_checkpoint_from(&mut self, source: &Ledger) {
        self.copy_from(source, false);
    }

    fn copy_from(&mut self, source: &Ledger, with_id_index: bool) {
        let Ledger {
            accounts,
            account_index,
            account_last,
            history,
            history_rows,
            history_base,
            transfers,
            transfer_sequences,
            transfer_links,
            transfers_base,
            transfer_index,
            pending,
            resolved,
            expiry,
            profiles,
            windows,
            window_debits,
            window_seconds_max,
            failed_accounts,
            failed_transfers,
            failed_order,
            last_timestamp,
            hash_sum,
            evicted_sum,
            window_sum,
            largest_id,
            sequence,
            hot_window,
            last_cutoff,
            cold,
            undo,
            recording,
            expired_log,
            copy_tracking,
        } = self;
        // The accounts are copy-on-write chunks: the copy shares them. The account index
        // only grows between batch boundaries (an undo removes only what its own chain
        // added), so into the previous copy of the same ledger only the accounts added
        // since are inserted; any other target gets the whole index.
        let known = copy_tracking.accounts;
        if source.copy_tracking.is_last_copy(copy_tracking.copied_from) && known <= source.accounts.len() {
            for (offset, account) in source.accounts.iter_from(known).enumerate() {
                let index = u32::try_from(known + offset).expect("invariant: fewer than 2^32 accounts");
                account_index.insert(account.id, index);
            }
        } else {
            account_index.clone_from(&source.account_index);
        }
        accounts.clone_from(&source.accounts);
        account_last.clone_from(&source.account_last);
        *copy_tracking = source.copy_tracking.copy_taken(source.accounts.len());
        history.clone_from(&source.history);
        history_rows.clone_from(&source.history_rows);
        *history_base = source.history_base;
        transfers.clone_from(&source.transfers);
        transfer_sequences.clone_from(&source.transfer_sequences);
        transfer_links.clone_from(&source.transfer_links);
        *transfers_base = source.transfers_base;
        if with_id_index {
            transfer_index.clone_from(&source.transfer_index);
        } else {
            *transfer_index = crate::id_index::IdIndex::new();
        }
        pending.clone_from(&source.pending);
        resolved.clone_from(&source.resolved);
        expiry.clone_from(&source.expiry);
        profiles.clone_from(&source.profiles);
        windows.clone_from(&source.windows);
        window_debits.clone_from(&source.window_debits);
        *window_seconds_max = source.window_seconds_max;
        failed_accounts.clone_from(&source.failed_accounts);
        failed_transfers.clone_from(&source.failed_transfers);
        failed_order.clone_from(&source.failed_order);
        *last_timestamp = source.last_timestamp;
        *hash_sum = source.hash_sum;
        *evicted_sum = source.evicted_sum;
        *window_sum = source.window_sum;
        *largest_id = source.largest_id;
        *sequence = source.sequence;
        hot_window.clone_from(&source.hot_window);
        *last_cutoff = source.last_cutoff;
        cold.clone_from(&source.cold);
        undo.clone_from(&source.undo);
        *recording = source.recording;
        expired_log.clone_from(&source.expired_log);
    }
}

impl Ledger {
    /// Drops the chunks this copy shares with the live ledger (the accounts and their list
    /// heads, the hot transfers, their sequences and links, the balance rows, the id
    /// index's sorted run), keeping the rest (the account index) for the next
    /// [`Clone::clone_from`] into it. A copy that kept sharing account chunks would make
    /// the ledger copy each chunk again on its next write. The checkpoint
    /// writer calls it on its own thread when it hands the copy back, so that the chunks
    /// only this copy still held (evicted from the ledger since) are freed there, not in
    /// the next copy on the business-logic thread. The copy is then only fit to be copied
    /// into (`clone_from` overwrites every field).
    pub fn release_shared(&mut self) {
        self.accounts = CowVec::new();
        self.account_last = CowVec::new();
        self.transfers.release();
        self.transfer_sequences.release();
        self.transfer_links.release();
        self.history_rows.release();
        self.transfer_index.release();
    }
}

/// Which copy of which ledger a copy is, so that the next copy made into it adds only
/// the accounts created since to its account index (the one part not shared).
///
/// `copies` counts the copies taken of this ledger; it is atomic because a copy is taken
/// through `&Ledger` (`Clone`). A copy remembers which ledger and which copy it is
/// (`copied_from`) and how many accounts it holds; only a copy into the copy taken last
/// is incremental, so any other target (a fresh ledger, an older copy, another ledger's
/// copy, a `clone`) gets the whole index.
pub(crate) struct CopyTracking {
    /// This ledger's identity among all ledgers of the process.
    lineage: u64,
    copies: AtomicU64,
    /// For a copy: the lineage of the ledger it copies and the copy count it was taken at.
    pub(crate) copied_from: (u64, u64),
    /// For a copy: the accounts its account index holds.
    pub(crate) accounts: usize,
}

static LINEAGES: AtomicU64 = AtomicU64::new(1);

impl CopyTracking {
    pub(crate) fn new() -> CopyTracking {
        CopyTracking {
            lineage: LINEAGES.fetch_add(1, Ordering::Relaxed),
            copies: AtomicU64::new(0),
            copied_from: (0, 0),
            accounts: 0,
        }
    }

    /// Whether `copied_from` names the copy of this ledger taken last.
    pub(crate) fn is_last_copy(&self, copied_from: (u64, u64)) -> bool {
        let copies = self.copies.load(Ordering::Relaxed);
        copies != 0 && copied_from == (self.lineage, copies)
    }

    /// Counts a copy of this ledger, holding `accounts` accounts, and returns the tracking
    /// the copy gets: its own lineage, and which copy it is.
    pub(crate) fn copy_taken(&self, accounts: usize) -> CopyTracking {
        let copies = self.copies.fetch_add(1, Ordering::Relaxed) + 1;
        CopyTracking { copied_from: (self.lineage, copies), accounts, ..CopyTracking::new() }
    }
}

#[cfg(test)]
mod tests {
    use tally_codecs::flags::transfer as transfer_flags;
    use tally_codecs::{Account, Transfer};

    use crate::Ledger;

    fn account(id: u128) -> Account {
        Account { id, ledger: 1, code: 1, ..Account::default() }
    }

    fn transfer(id: u128, debit: u128, credit: u128, amount: u128, flags: u16) -> Transfer {
        Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            ledger: 1,
            code: 1,
            flags,
            ..Transfer::default()
        }
    }

    /// The copy-on-write property at the ledger's level: a copy (fresh, and into a spare
    /// that was handed back) keeps the state it was taken with while the ledger goes on:
    /// more transfers, failed linked chains (transfers taken back), and eviction of
    /// everything the copy holds. Enough
    /// transfers to fill several chunks of every queue (16 384 sequences to a chunk).
    #[test]
    fn a_copy_keeps_the_state_it_was_taken_with_while_the_ledger_goes_on() {
        let mut ledger = Ledger::new();
        ledger.set_hot_window(4, u64::MAX);
        let mut results = Vec::new();
        let accounts: Vec<Account> = (1..=50).map(account).collect();
        ledger.begin_input(1, 0, Default::default());
        ledger.create_accounts(1, &accounts, &mut results);
        ledger.end_input();
        let mut next_id = 1_000u128;
        let mut sequence = 1u64;
        let mut apply = |ledger: &mut Ledger, sequence: &mut u64, transfers: usize, failing_chains: usize| {
            *sequence += 1;
            ledger.begin_input(*sequence, transfers as u64, Default::default());
            let mut batch = Vec::new();
            for step in 0..transfers {
                next_id += 1;
                let debit = 1 + (next_id % 50);
                batch.push(transfer(next_id, debit, 1 + (debit % 50), 1 + (step as u128 % 7), 0));
            }
            for _ in 0..failing_chains {
                // The second event names no account: the first one is taken back.
                next_id += 2;
                batch.push(transfer(next_id - 1, 3, 4, 5, transfer_flags::LINKED));
                batch.push(transfer(next_id, 3, 999_999, 5, 0));
            }
            ledger.create_transfers(*sequence * 1_000_000, &batch, &mut results);
            ledger.end_input();
        };
        for _ in 0..5 {
            apply(&mut ledger, &mut sequence, 8_000, 0);
        }
        let hash = ledger.state_hash();
        let transfers: Vec<Transfer> = ledger.transfers.iter().copied().collect();
        let sequences: Vec<u64> = ledger.transfer_sequences.iter().copied().collect();
        let fresh = ledger.clone();
        let mut spare = ledger.clone();
        spare.release_shared();
        spare.clone_from(&ledger);
        assert!(fresh.transfers.shared_chunks() > 0 && fresh.transfer_sequences.shared_chunks() > 0);
        assert!(fresh.accounts.shared_chunks() > 0 && spare.account_last.shared_chunks() > 0);
        // Chains taken back right after the copy, then the window moves past everything the
        // copy holds (the take-back into a chunk a copy shares is `cow.rs`'s own test).
        apply(&mut ledger, &mut sequence, 0, 3);
        for _ in 0..8 {
            apply(&mut ledger, &mut sequence, 8_000, 2);
        }
        assert_ne!(ledger.state_hash(), hash);
        assert!(ledger.transfers.iter().all(|transfer| !transfers.contains(transfer)), "all evicted");
        for (name, copy) in [("clone", &fresh), ("clone_from", &spare)] {
            assert_eq!(copy.state_hash(), hash, "{name}");
            assert_eq!(copy.recompute_state_hash(), hash, "{name}: the copy's contents changed");
            assert!(copy.transfers.iter().eq(transfers.iter()), "{name}");
            assert!(copy.transfer_sequences.iter().eq(sequences.iter()), "{name}");
            for transfer in &transfers {
                assert!(copy.transfer_index.contains(transfer.id), "{name}: {}", transfer.id);
            }
        }
    }

    /// The copy into the previous copy (only the accounts changed since) equals the ledger,
    /// through new accounts, transfers, a failed linked chain (undone changes), eviction,
    /// batches with no change, and a foreign copy target (which gets everything).
    #[test]
    fn a_copy_into_the_previous_copy_is_the_whole_state() {
        let mut ledger = Ledger::new();
        ledger.set_hot_window(2, u64::MAX);
        let mut results = Vec::new();
        let accounts: Vec<Account> = (1..=200).map(account).collect();
        ledger.create_accounts(1, &accounts, &mut results);
        let mut spare = ledger.clone();
        let mut next_id = 1_000u128;
        for round in 0..40u64 {
            let sequence = round + 1;
            ledger.begin_input(sequence, round % 5, Default::default());
            let mut batch = Vec::new();
            for step in 0..(round % 5) {
                next_id += 1;
                let debit = 1 + (round * 7 + step * 13) as u128 % 200;
                let credit = 1 + (debit + 1 + step as u128) % 200;
                batch.push(transfer(next_id, debit, credit, 1 + u128::from(step), 0));
            }
            if round % 3 == 0 {
                // A chain whose second event fails: the first one's changes are undone.
                next_id += 2;
                batch.push(transfer(next_id - 1, 3, 4, 5, transfer_flags::LINKED));
                batch.push(transfer(next_id, 3, 999_999, 5, 0));
            }
            ledger.create_transfers(10 + round * 1_000, &batch, &mut results);
            if round % 4 == 1 {
                let new = [account(10_000 + u128::from(round))];
                ledger.create_accounts(10 + round * 1_000 + 500, &new, &mut results);
            }
            ledger.end_input();
            if round % 2 == 0 {
                spare.clone_from(&ledger);
                assert_eq!(spare.accounts, ledger.accounts, "round {round}");
                assert_eq!(spare.account_last, ledger.account_last, "round {round}");
                assert_eq!(spare.recompute_state_hash(), ledger.state_hash(), "round {round}");
                assert_eq!(spare.account_index.len(), ledger.account_index.len());
                for (index, account) in ledger.accounts.iter().enumerate() {
                    assert_eq!(spare.account_index.get(&account.id), Some(&(index as u32)));
                }
            }
        }
        // A target that is not the last copy gets a full copy.
        let mut other = Ledger::new();
        other.create_accounts(1, &[account(77_777)], &mut results);
        let mut stale = Ledger::new();
        stale.clone_from(&ledger);
        let mut newer = Ledger::new();
        newer.clone_from(&ledger);
        ledger.begin_input(1_000, 1, Default::default());
        ledger.create_transfers(99_000_000, &[transfer(next_id + 1, 1, 2, 9, 0)], &mut results);
        for target in [&mut other, &mut stale, &mut newer] {
            target.clone_from(&ledger);
            assert_eq!(target.accounts, ledger.accounts);
            assert_eq!(target.account_last, ledger.account_last);
            assert_eq!(target.account_index.len(), ledger.account_index.len());
        }
    }
}
