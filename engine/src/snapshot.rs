//! Converting a ledger to and from its snapshot image (`tally_codecs::snapshot`).
//!
//! Loading trusts nothing in the image: every index is range-checked and every reference
//! resolved, and a bad image is an error, never a panic or a half-built ledger.

use tally_codecs::flags::transfer as transfer_flags;
use tally_codecs::snapshot::{FailedId, HistoryEntry, LedgerImage, PendingEntry, SNAPSHOT_FORMAT_VERSION, records};
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
    /// The ledger's state as a snapshot image.
    pub fn to_image(&self) -> LedgerImage {
        let mut profiles: Vec<LimitProfile> = self.profiles.values().copied().collect();
        profiles.sort_by_key(|profile| profile.id);
        let mut pending: Vec<PendingEntry> = self
            .pending
            .iter()
            .map(|(transfer, state)| PendingEntry {
                transfer: *transfer,
                status: state.status as u8,
                expires_at: state.expires_at,
            })
            .collect();
        pending.sort_by_key(|entry| entry.transfer);
        let failed = |map: &crate::id_map::IdMap<u128, u32>| {
            let mut ids: Vec<FailedId> = map.iter().map(|(id, code)| FailedId { id: *id, code: *code }).collect();
            ids.sort_by_key(|failed| failed.id);
            ids
        };
        let mut history: Vec<HistoryEntry> = Vec::new();
        let mut history_accounts: Vec<&u32> = self.history.keys().collect();
        history_accounts.sort();
        for account in history_accounts {
            history.extend(self.history[account].iter().map(|row| HistoryEntry {
                account: *account,
                transfer: row.transfer,
                timestamp: row.timestamp,
                balances: row.balances.as_array(),
            }));
        }
        LedgerImage {
            format_version: SNAPSHOT_FORMAT_VERSION,
            last_timestamp: self.last_timestamp,
            accounts: bytemuck::cast_slice(&self.accounts).to_vec(),
            transfers: bytemuck::cast_slice(&self.transfers).to_vec(),
            profiles: bytemuck::cast_slice(&profiles).to_vec(),
            pending,
            failed_accounts: failed(&self.failed_accounts),
            failed_transfers: failed(&self.failed_transfers),
            history,
        }
    }

    /// Rebuilds a ledger, with all its indexes, from an image.
    pub fn from_image(image: &LedgerImage) -> Result<Ledger, ImageError> {
        let accounts: Vec<Account> = records("accounts", &image.accounts)?;
        let transfers: Vec<Transfer> = records("transfers", &image.transfers)?;
        let profiles: Vec<LimitProfile> = records("profiles", &image.profiles)?;
        let mut ledger = Ledger::with_capacity(accounts.len(), transfers.len());
        ledger.last_timestamp = image.last_timestamp;
        for account in accounts {
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
        for transfer in transfers {
            let debit = ledger.account_index.get(&transfer.debit_account_id).copied();
            let credit = ledger.account_index.get(&transfer.credit_account_id).copied();
            let (Some(debit), Some(credit)) = (debit, credit) else {
                return Err(inconsistent(format!("transfer {} names an unknown account", transfer.id)));
            };
            if debit == credit || ledger.transfer_index.contains(transfer.id) {
                return Err(inconsistent(format!("transfer {} is malformed or appears twice", transfer.id)));
            }
            ledger.insert_transfer(transfer, debit, credit);
        }
        ledger.load_pending(&image.pending)?;
        for failed in &image.failed_accounts {
            ledger.remember_failed_account(failed.id, failed.code);
        }
        for failed in &image.failed_transfers {
            ledger.remember_failed_transfer(failed.id, failed.code);
        }
        ledger.load_history(&image.history)?;
        ledger.check_balances()?;
        Ok(ledger)
    }

    /// Recomputes every account's balances from the transfers and pending statuses and
    /// compares them with the stored ones: a snapshot that passed its checksum but does
    /// not add up (a bug, or a crafted file) must not become the ledger.
    fn check_balances(&self) -> Result<(), ImageError> {
        let mut expected = vec![Balances::default(); self.accounts.len()];
        for (index, transfer) in self.transfers.iter().enumerate() {
            let pending = transfer.has(transfer_flags::PENDING);
            let state = self.pending.get(&(index as u32));
            if pending != state.is_some() {
                return Err(inconsistent(format!("transfer {} and the pending table disagree", transfer.id)));
            }
            let counts_as_pending = state.is_some_and(|state| state.status == PendingStatus::Pending);
            let counts_as_posted = !pending && !transfer.has(transfer_flags::VOID_PENDING_TRANSFER);
            if !counts_as_pending && !counts_as_posted {
                continue;
            }
            let overflow = || inconsistent(format!("balances overflow at transfer {}", transfer.id));
            let debit = &mut expected[self.account_index[&transfer.debit_account_id] as usize];
            let field = if counts_as_pending { &mut debit.debits_pending } else { &mut debit.debits_posted };
            *field = field.checked_add(transfer.amount).ok_or_else(overflow)?;
            let credit = &mut expected[self.account_index[&transfer.credit_account_id] as usize];
            let field = if counts_as_pending { &mut credit.credits_pending } else { &mut credit.credits_posted };
            *field = field.checked_add(transfer.amount).ok_or_else(overflow)?;
        }
        for (account, expected) in self.accounts.iter().zip(&expected) {
            if Balances::of(account) != *expected {
                return Err(inconsistent(format!("account {} balances do not match its transfers", account.id)));
            }
        }
        Ok(())
    }

    fn load_pending(&mut self, entries: &[PendingEntry]) -> Result<(), ImageError> {
        for entry in entries {
            let status = match entry.status {
                1 => PendingStatus::Pending,
                2 => PendingStatus::Posted,
                3 => PendingStatus::Voided,
                4 => PendingStatus::Expired,
                other => return Err(inconsistent(format!("pending status {other} is unknown"))),
            };
            let Some(transfer) = self.transfers.get(entry.transfer as usize) else {
                return Err(inconsistent(format!(
                    "pending entry names transfer #{} of {}",
                    entry.transfer,
                    self.transfers.len()
                )));
            };
            let id = transfer.id;
            if self.pending.insert(entry.transfer, PendingState { status, expires_at: entry.expires_at }).is_some() {
                return Err(inconsistent(format!("pending transfer {id} appears twice")));
            }
            if status == PendingStatus::Pending && entry.expires_at != u64::MAX {
                self.expiry.insert((entry.expires_at, entry.transfer));
            }
            self.hash_sum = self.hash_sum.wrapping_add(state_hash::pending_status(id, status as u8));
        }
        Ok(())
    }

    fn load_history(&mut self, entries: &[HistoryEntry]) -> Result<(), ImageError> {
        for entry in entries {
            if entry.transfer as usize >= self.transfers.len() {
                return Err(inconsistent(format!("history row names transfer #{}", entry.transfer)));
            }
            let Some(rows) = self.history.get_mut(&entry.account) else {
                return Err(inconsistent(format!("history row for account #{} without history", entry.account)));
            };
            let [debits_pending, debits_posted, credits_pending, credits_posted] = entry.balances;
            let balances = Balances { debits_pending, debits_posted, credits_pending, credits_posted };
            rows.push(HistoryRow { transfer: entry.transfer, timestamp: entry.timestamp, balances });
        }
        Ok(())
    }
}
