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
            history_rows,
            history_base,
            transfers,
            transfer_sequences,
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
            sequence,
            hot_window,
            cold,
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
            history_rows: history_rows.clone(),
            history_base: *history_base,
            transfers: transfers.clone(),
            transfer_sequences: transfer_sequences.clone(),
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
            sequence: *sequence,
            hot_window: *hot_window,
            cold: cold.clone(),
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
            history_rows,
            history_base,
            transfers,
            transfer_sequences,
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
            sequence,
            hot_window,
            cold,
            undo,
            recording,
            expired_log,
        } = self;
        accounts.clone_from(&source.accounts);
        balance_keys.clone_from(&source.balance_keys);
        account_index.clone_from(&source.account_index);
        account_transfers.clone_from(&source.account_transfers);
        history.clone_from(&source.history);
        history_rows.clone_from(&source.history_rows);
        *history_base = source.history_base;
        transfers.clone_from(&source.transfers);
        transfer_sequences.clone_from(&source.transfer_sequences);
        *transfers_base = source.transfers_base;
        transfer_index.clone_from(&source.transfer_index);
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
        *sequence = source.sequence;
        *hot_window = source.hot_window;
        cold.clone_from(&source.cold);
        undo.clone_from(&source.undo);
        *recording = source.recording;
        expired_log.clone_from(&source.expired_log);
    }
}
