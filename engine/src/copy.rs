//! Copying the ledger for a checkpoint, on the business-logic thread.
//!
//! A fresh copy allocates as much memory as the ledger holds, and the first write to each
//! new page is a page fault (about a microsecond per 4 KiB), so copying into fresh memory
//! costs several times a plain `memcpy`. [`Clone::clone_from`] copies into a ledger whose
//! vectors and maps already have the room (the previous checkpoint's copy, handed back by
//! the writer), which leaves only the copying.
//!
//! Both functions name every field (a destructuring pattern), so a field added to
//! [`Ledger`] without being copied here does not compile.

use crate::ledger::Ledger;

impl Clone for Ledger {
    fn clone(&self) -> Ledger {
        let Ledger {
            accounts,
            balance_keys,
            account_index,
            account_transfers,
            history,
            transfers,
            transfer_index,
            pending,
            expiry,
            profiles,
            windows,
            failed_accounts,
            failed_transfers,
            last_timestamp,
            hash_sum,
            undo,
            recording,
            expired_log,
        } = self;
        Ledger {
            accounts: accounts.clone(),
            balance_keys: balance_keys.clone(),
            account_index: account_index.clone(),
            account_transfers: account_transfers.clone(),
            history: history.clone(),
            transfers: transfers.clone(),
            transfer_index: transfer_index.clone(),
            pending: pending.clone(),
            expiry: expiry.clone(),
            profiles: profiles.clone(),
            windows: windows.clone(),
            failed_accounts: failed_accounts.clone(),
            failed_transfers: failed_transfers.clone(),
            last_timestamp: *last_timestamp,
            hash_sum: *hash_sum,
            undo: undo.clone(),
            recording: *recording,
            expired_log: expired_log.clone(),
        }
    }

    fn clone_from(&mut self, source: &Ledger) {
        let Ledger {
            accounts,
            balance_keys,
            account_index,
            account_transfers,
            history,
            transfers,
            transfer_index,
            pending,
            expiry,
            profiles,
            windows,
            failed_accounts,
            failed_transfers,
            last_timestamp,
            hash_sum,
            undo,
            recording,
            expired_log,
        } = self;
        accounts.clone_from(&source.accounts);
        balance_keys.clone_from(&source.balance_keys);
        account_index.clone_from(&source.account_index);
        account_transfers.clone_from(&source.account_transfers);
        history.clone_from(&source.history);
        transfers.clone_from(&source.transfers);
        transfer_index.clone_from(&source.transfer_index);
        pending.clone_from(&source.pending);
        expiry.clone_from(&source.expiry);
        profiles.clone_from(&source.profiles);
        windows.clone_from(&source.windows);
        failed_accounts.clone_from(&source.failed_accounts);
        failed_transfers.clone_from(&source.failed_transfers);
        *last_timestamp = source.last_timestamp;
        *hash_sum = source.hash_sum;
        expired_log.clone_from(&source.expired_log);
        undo.clone_from(&source.undo);
        *recording = source.recording;
    }
}
