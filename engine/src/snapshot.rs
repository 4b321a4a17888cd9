//! Converting a ledger to and from its snapshot image (`tally_codecs::snapshot`).
//!
//! Loading trusts nothing in the image: every index is range-checked and every reference
//! resolved, and a bad image is an error, never a panic or a half-built ledger.

use tally_codecs::flags::transfer as transfer_flags;
use tally_codecs::snapshot::{
    FailedId, HistoryEntry, LedgerImage, PendingEntry, SNAPSHOT_FORMAT_VERSION, WindowDebit, record_bytes, record_iter,
    records,
};
use tally_codecs::{Account, LimitProfile, Transfer};

use crate::ledger::{Balances, HistoryRow, Ledger, PendingState, PendingStatus};
use crate::state_hash;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Codec(#[from] tally_codecs::snapshot::SnapshotError),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

fn inconsistent(what: impl Into<String>) -> ImageError {
    ImageError::Inconsistent(what.into())
}

impl Ledger {
    /// The ledger's hot state as a snapshot image.
    pub fn to_image(&self) -> LedgerImage {
        let mut profiles: Vec<LimitProfile> = self.profiles.values().copied().collect();
        profiles.sort_by_key(|profile| profile.id);
        // Open pending transfers by number; resolved ones in the order they were resolved
        // (the order eviction takes them in).
        let mut open: Vec<&PendingState> =
            self.pending.values().filter(|state| state.status == PendingStatus::Pending).collect();
        open.sort_by_key(|state| state.number);
        let resolved = self.resolved.iter().filter_map(|(at, id)| Some((*at, self.pending.get(id)?)));
        let entries: Vec<(u64, &PendingState)> = open.into_iter().map(|state| (0, state)).chain(resolved).collect();
        let pending = entries
            .iter()
            .map(|(resolved_at, state)| PendingEntry {
                number: state.number,
                status: state.status as u8,
                expires_at: state.expires_at,
                resolved_at: *resolved_at,
            })
            .collect();
        let pending_transfers: Vec<Transfer> = entries.iter().map(|(_, state)| state.transfer).collect();
        let mut failed_accounts: Vec<FailedId> =
            self.failed_accounts.iter().map(|(id, code)| FailedId { id: *id, code: *code, sequence: 0 }).collect();
        failed_accounts.sort_by_key(|failed| failed.id);
        let failed_transfers = self
            .failed_order
            .iter()
            .filter_map(|(sequence, id)| {
                Some(FailedId { id: *id, code: *self.failed_transfers.get(id)?, sequence: *sequence })
            })
            .collect();
        let history = self
            .history_rows
            .iter()
            .map(|row| HistoryEntry {
                account: row.account,
                sequence: row.sequence,
                debit: row.debit,
                timestamp: row.timestamp,
                balances: row.balances.as_array(),
            })
            .collect();
        let mut window_accounts: Vec<&u32> = self.window_debits.keys().collect();
        window_accounts.sort();
        let mut window_debits = Vec::new();
        for account in window_accounts {
            window_debits.extend(self.window_debits[account].iter().map(|(timestamp, amount)| WindowDebit {
                account: *account,
                timestamp: *timestamp,
                amount: *amount,
            }));
        }
        LedgerImage {
            format_version: SNAPSHOT_FORMAT_VERSION,
            last_timestamp: self.last_timestamp,
            sequence: self.sequence,
            // The tables are written as bytes straight from the ledger: the hot transfers
            // are the largest part of a checkpoint, and a copy as records first would
            // double the writer's memory.
            accounts: record_bytes(self.accounts.len(), self.accounts.iter()),
            transfers: record_bytes(self.transfers.len(), self.transfers.iter()),
            transfer_sequences: self.transfer_sequences.iter().copied().collect(),
            transfers_base: self.transfers_base,
            profiles: bytemuck::cast_slice(&profiles).to_vec(),
            pending,
            pending_transfers: bytemuck::cast_slice(&pending_transfers).to_vec(),
            failed_accounts,
            failed_transfers,
            history,
            history_base: self.history_base,
            window_debits,
            window_seconds_max: self.window_seconds_max,
            evicted_hash: self.evicted_sum,
            largest_id: self.largest_id,
        }
    }

    /// Rebuilds a ledger, with all its indexes, from an image. The hot window is not part
    /// of the state: set it afterwards ([`Ledger::set_hot_window`]).
    pub fn from_image(image: &LedgerImage) -> Result<Ledger, ImageError> {
        let accounts: Vec<Account> = records("accounts", &image.accounts)?;
        // Read in place: the hot transfers are most of the image.
        let transfers = record_iter::<Transfer>("transfers", &image.transfers)?;
        let profiles: Vec<LimitProfile> = records("profiles", &image.profiles)?;
        let pending_transfers: Vec<Transfer> = records("pending transfers", &image.pending_transfers)?;
        if transfers.len() != image.transfer_sequences.len() || pending_transfers.len() != image.pending.len() {
            return Err(inconsistent("a table and its companion differ in length"));
        }
        let room = |base: u64, len: usize| base.checked_add(len as u64).and_then(|end| end.checked_add(1 << 32));
        if room(image.transfers_base, transfers.len()).is_none()
            || room(image.history_base, image.history.len()).is_none()
        {
            return Err(inconsistent("a commit number is out of range"));
        }
        let mut ledger = Ledger::with_capacity(accounts.len(), transfers.len());
        ledger.last_timestamp = image.last_timestamp;
        ledger.transfers_base = image.transfers_base;
        ledger.history_base = image.history_base;
        ledger.window_seconds_max = image.window_seconds_max;
        for account in accounts {
            if account.id == 0 {
                // The account index never holds id 0 (it marks an empty slot).
                return Err(inconsistent("an account has id 0"));
            }
            if ledger.account_index.contains_key(&account.id) {
                return Err(inconsistent(format!("account {} appears twice", account.id)));
            }
            ledger.insert_account(account);
        }
        for profile in profiles {
            ledger.hash_sum = ledger.hash_sum.wrapping_add(state_hash::limit_profile(&profile));
            if ledger.profiles.insert(profile.id, profile).is_some() {
                return Err(inconsistent(format!("limit profile {} appears twice", profile.id)));
            }
        }
        let mut previous_sequence = 0;
        for (transfer, sequence) in transfers.zip(&image.transfer_sequences) {
            let debit = ledger.account_index.get(&transfer.debit_account_id).copied();
            let credit = ledger.account_index.get(&transfer.credit_account_id).copied();
            let (Some(debit), Some(credit)) = (debit, credit) else {
                return Err(inconsistent(format!("transfer {} names an unknown account", transfer.id)));
            };
            if debit == credit
                || transfer.id == 0
                || ledger.transfer_index.contains(transfer.id)
                || *sequence < previous_sequence
            {
                return Err(inconsistent(format!(
                    "transfer {} is malformed, out of order or appears twice",
                    transfer.id
                )));
            }
            previous_sequence = *sequence;
            ledger.sequence = *sequence;
            ledger.insert_transfer(transfer, debit, credit);
        }
        ledger.load_pending(&image.pending, &pending_transfers)?;
        for failed in &image.failed_accounts {
            ledger.remember_failed_account(failed.id, failed.code);
        }
        for failed in &image.failed_transfers {
            ledger.sequence = failed.sequence;
            ledger.remember_failed_transfer(failed.id, failed.code);
        }
        ledger.load_history(&image.history)?;
        ledger.load_window_debits(&image.window_debits)?;
        ledger.sequence = image.sequence;
        ledger.evicted_sum = image.evicted_hash;
        // Loading the hot ids raised it to the largest of them; evicted ones may be larger.
        ledger.largest_id = ledger.largest_id.max(image.largest_id);
        ledger.hash_sum = ledger.hash_sum.wrapping_add(image.evicted_hash);
        ledger.check_balances()?;
        Ok(ledger)
    }

    /// What can be checked without the evicted transfers: every account's pending
    /// balances equal the open pending transfers on it, and per ledger the posted debits
    /// equal the posted credits. A snapshot that passed its checksum but does not add up
    /// (a bug, or a crafted file) must not become the ledger. (The state hash, checked by
    /// the caller against the journal's, covers the rest.)
    fn check_balances(&self) -> Result<(), ImageError> {
        let mut expected = vec![(0u128, 0u128); self.accounts.len()];
        for state in self.pending.values().filter(|state| state.status == PendingStatus::Pending) {
            let transfer = &state.transfer;
            let overflow = || inconsistent(format!("pending balances overflow at transfer {}", transfer.id));
            let debit = &mut expected[self.account_index[&transfer.debit_account_id] as usize].0;
            *debit = debit.checked_add(transfer.amount).ok_or_else(overflow)?;
            let credit = &mut expected[self.account_index[&transfer.credit_account_id] as usize].1;
            *credit = credit.checked_add(transfer.amount).ok_or_else(overflow)?;
        }
        let mut posted: std::collections::BTreeMap<u32, (u128, u128)> = std::collections::BTreeMap::new();
        for (account, (debits_pending, credits_pending)) in self.accounts.iter().zip(&expected) {
            if account.debits_pending != *debits_pending || account.credits_pending != *credits_pending {
                return Err(inconsistent(format!(
                    "account {} pending balances do not match its open pending transfers",
                    account.id
                )));
            }
            let totals = posted.entry(account.ledger).or_default();
            let overflow = || inconsistent(format!("ledger {} posted totals overflow", account.ledger));
            totals.0 = totals.0.checked_add(account.debits_posted).ok_or_else(overflow)?;
            totals.1 = totals.1.checked_add(account.credits_posted).ok_or_else(overflow)?;
        }
        if let Some((ledger, _)) = posted.iter().find(|(_, (debits, credits))| debits != credits) {
            return Err(inconsistent(format!("ledger {ledger}: posted debits and credits differ")));
        }
        Ok(())
    }

    fn load_pending(&mut self, entries: &[PendingEntry], transfers: &[Transfer]) -> Result<(), ImageError> {
        for (entry, transfer) in entries.iter().zip(transfers) {
            let Some(status) = PendingStatus::from_u8(entry.status) else {
                return Err(inconsistent(format!("pending status {} is unknown", entry.status)));
            };
            let id = transfer.id;
            let known = |account: u128| self.account_index.contains_key(&account);
            if !transfer.has(transfer_flags::PENDING)
                || !known(transfer.debit_account_id)
                || !known(transfer.credit_account_id)
                || entry.number >= self.next_transfer_number()
                || self.hot_transfer(entry.number).is_some_and(|hot| hot != transfer)
            {
                return Err(inconsistent(format!("pending transfer {id} is malformed")));
            }
            // The deadline follows from the transfer (as `create_transfers` set it); one that
            // does not is not this ledger's, and the state hash would not show it.
            let deadline = match transfer.timeout {
                0 => Some(u64::MAX),
                seconds => u64::from(seconds)
                    .checked_mul(crate::limits::NANOSECONDS_PER_SECOND)
                    .and_then(|timeout| transfer.timestamp.checked_add(timeout)),
            };
            if deadline != Some(entry.expires_at) {
                return Err(inconsistent(format!("pending transfer {id}'s deadline does not follow from its timeout")));
            }
            let state =
                PendingState { status, expires_at: entry.expires_at, number: entry.number, transfer: *transfer };
            if self.pending.insert(id, state).is_some() {
                return Err(inconsistent(format!("pending transfer {id} appears twice")));
            }
            if status == PendingStatus::Pending && entry.expires_at != u64::MAX {
                self.expiry.insert((entry.expires_at, entry.number), id);
            }
            if status != PendingStatus::Pending {
                self.resolved.push_back((entry.resolved_at, id));
            }
            self.hash_sum = self.hash_sum.wrapping_add(state_hash::pending_status(id, status as u8));
        }
        // Every hot pending transfer has its entry.
        for transfer in self.transfers.iter().filter(|transfer| transfer.has(transfer_flags::PENDING)) {
            if !self.pending.contains_key(&transfer.id) {
                return Err(inconsistent(format!("transfer {} and the pending table disagree", transfer.id)));
            }
        }
        Ok(())
    }

    fn load_history(&mut self, entries: &[HistoryEntry]) -> Result<(), ImageError> {
        for entry in entries {
            let number = self.history_base + self.history_rows.len() as u64;
            let Some(rows) = self.history.get_mut(&entry.account) else {
                return Err(inconsistent(format!("history row for account #{} without history", entry.account)));
            };
            rows.push_back(number);
            let [debits_pending, debits_posted, credits_pending, credits_posted] = entry.balances;
            let balances = Balances { debits_pending, debits_posted, credits_pending, credits_posted };
            self.history_rows.push_back(HistoryRow {
                sequence: entry.sequence,
                account: entry.account,
                debit: entry.debit,
                timestamp: entry.timestamp,
                balances,
            });
        }
        Ok(())
    }

    fn load_window_debits(&mut self, entries: &[WindowDebit]) -> Result<(), ImageError> {
        for entry in entries {
            let Some(debits) = self.window_debits.get_mut(&entry.account) else {
                return Err(inconsistent(format!("window debit for account #{} without a profile", entry.account)));
            };
            debits.push_back((entry.timestamp, entry.amount));
            self.window_sum =
                self.window_sum.wrapping_add(state_hash::window_debit(entry.account, entry.timestamp, entry.amount));
        }
        Ok(())
    }
}
