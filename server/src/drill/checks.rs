//! The drill's checks, pure functions of what the drill recorded and what the nodes
//! answered, so that each can be tested on made-up observations.

use std::collections::{BTreeMap, HashMap, HashSet};

use tally_codecs::{Account, Transfer};

/// Σ of each balance over the accounts of one ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LedgerTotals {
    pub ledger: u32,
    /// Decimal strings: u128 sums do not fit a JSON number.
    pub debits_posted: String,
    pub credits_posted: String,
    pub balanced: bool,
}

/// Conservation per ledger: Σ debits_posted = Σ credits_posted and Σ debits_pending =
/// Σ credits_pending over all accounts. A sum that overflows a u128 is an error (the engine
/// refuses any transfer that would make one account's balance overflow, but not a ledger's).
pub fn ledger_totals(accounts: &[Account]) -> Result<Vec<LedgerTotals>, String> {
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for account in accounts {
        let sum = sums.entry(account.ledger).or_default();
        let balances = [account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending];
        for (total, balance) in sum.iter_mut().zip(balances) {
            *total = total
                .checked_add(balance)
                .ok_or_else(|| format!("the balances of ledger {} overflow a u128", account.ledger))?;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(ledger, [debits_posted, credits_posted, debits_pending, credits_pending])| LedgerTotals {
            ledger,
            debits_posted: debits_posted.to_string(),
            credits_posted: credits_posted.to_string(),
            balanced: debits_posted == credits_posted && debits_pending == credits_pending,
        })
        .collect())
}

/// Acknowledged ids that the primary does not have.
pub fn lost(acknowledged: &[u128], found: &HashSet<u128>) -> Vec<u128> {
    acknowledged.iter().copied().filter(|id| !found.contains(id)).collect()
}

/// How the accounts' posted balances compare with the distinct transfers found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Excess {
    /// Units posted beyond what the distinct transfers account for: with the drill's
    /// 1-unit transfers, the number of extra applications.
    pub applied_twice: u128,
    /// Accounts whose posted balances differ from their transfers in either direction.
    pub accounts_off: Vec<u128>,
}

/// Compares each account's posted debits and credits with the sums of the distinct
/// transfers found for it. A transfer applied twice shows up as an excess; a balance below
/// its transfers (money gone) as an account off.
pub fn applied_more_than_once(found: &[Transfer], accounts: &[Account]) -> Excess {
    let mut expected: HashMap<u128, (u128, u128)> = HashMap::new();
    let mut seen = HashSet::new();
    for transfer in found.iter().filter(|transfer| seen.insert(transfer.id)) {
        let debit = expected.entry(transfer.debit_account_id).or_default();
        debit.0 = debit.0.saturating_add(transfer.amount);
        let credit = expected.entry(transfer.credit_account_id).or_default();
        credit.1 = credit.1.saturating_add(transfer.amount);
    }
    let mut excess = Excess::default();
    for account in accounts {
        let (debits, credits) = expected.get(&account.id).copied().unwrap_or_default();
        excess.applied_twice = excess.applied_twice.saturating_add(account.debits_posted.saturating_sub(debits));
        if account.debits_posted != debits || account.credits_posted != credits {
            excess.accounts_off.push(account.id);
        }
    }
    excess
}

/// Whether every node answered with the same applied sequence and state hash.
pub fn states_agree<'a>(states: impl IntoIterator<Item = Option<(u64, &'a str)>>) -> bool {
    let mut states = states.into_iter();
    let Some(Some(first)) = states.next() else { return false };
    states.all(|state| state == Some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: u128, ledger: u32, debits_posted: u128, credits_posted: u128) -> Account {
        Account { id, ledger, code: 1, debits_posted, credits_posted, ..Account::default() }
    }

    fn transfer(id: u128, debit_account_id: u128, credit_account_id: u128) -> Transfer {
        Transfer { id, debit_account_id, credit_account_id, amount: 1, ledger: 1, code: 1, ..Transfer::default() }
    }

    #[test]
    fn an_unbalanced_ledger_fails_conservation_and_the_other_passes() {
        let accounts = [account(1, 1, 5, 0), account(2, 1, 0, 4), account(3, 2, 2, 0), account(4, 2, 0, 2)];
        let totals = ledger_totals(&accounts).expect("no overflow");
        assert_eq!(totals.iter().map(|t| (t.ledger, t.balanced)).collect::<Vec<_>>(), [(1, false), (2, true)]);
    }

    #[test]
    fn unbalanced_pending_amounts_fail_conservation() {
        let accounts = [Account { debits_pending: 3, ..account(1, 1, 0, 0) }, account(2, 1, 0, 0)];
        assert!(!ledger_totals(&accounts).expect("no overflow")[0].balanced);
    }

    #[test]
    fn a_ledger_sum_that_overflows_is_an_error() {
        assert!(ledger_totals(&[account(1, 1, u128::MAX, 0), account(2, 1, 1, 0)]).is_err());
    }

    #[test]
    fn acknowledged_ids_missing_on_the_primary_are_lost() {
        let found: HashSet<u128> = [1, 2, 4].into_iter().collect();
        assert_eq!(lost(&[1, 2, 3, 4, 5], &found), [3, 5]);
        assert!(lost(&[1, 2], &found).is_empty());
    }

    #[test]
    fn balances_above_the_distinct_transfers_count_double_applications() {
        let found = [transfer(10, 1, 2), transfer(11, 1, 2), transfer(11, 1, 2)];
        let exact = [account(1, 1, 2, 0), account(2, 1, 0, 2)];
        assert_eq!(applied_more_than_once(&found, &exact), Excess::default());
        let doubled = [account(1, 1, 3, 0), account(2, 1, 0, 3)];
        assert_eq!(applied_more_than_once(&found, &doubled), Excess { applied_twice: 1, accounts_off: vec![1, 2] });
        let missing = [account(1, 1, 1, 0), account(2, 1, 0, 2)];
        assert_eq!(applied_more_than_once(&found, &missing), Excess { applied_twice: 0, accounts_off: vec![1] });
    }

    #[test]
    fn states_agree_only_when_every_node_answered_the_same() {
        assert!(states_agree([Some((5, "aa")), Some((5, "aa")), Some((5, "aa"))]));
        assert!(!states_agree([Some((5, "aa")), Some((5, "ab")), Some((5, "aa"))]));
        assert!(!states_agree([Some((5, "aa")), Some((4, "aa")), Some((5, "aa"))]));
        assert!(!states_agree([Some((5, "aa")), None, Some((5, "aa"))]));
        assert!(!states_agree([]));
    }
}
