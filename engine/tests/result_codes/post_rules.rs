//! Posting and voiding rules adopted from TigerBeetle's own state-machine tests
//! (docs/design.md §3.2): no post into a closed account, retries of a post answer what
//! was applied, and a post or void inherits the pending transfer's user data.

use super::support::*;

fn closing_debit(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    with_flags(pending(id, debit, credit, amount), transfer_flags::PENDING | transfer_flags::CLOSING_DEBIT)
}

/// A pending transfer into account 2, then a later closing transfer closes account 2:
/// the post is refused, the void is not.
#[test]
fn post_into_an_account_closed_later_is_refused_and_void_is_allowed() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[pending(10, 1, 2, 5), closing_debit(11, 2, 3, 1)]);
    transfer_fails(&mut ledger, post(12, 10, 0), R::CreditAccountAlreadyClosed);
    succeed(&mut ledger, &[void(13, 10)]);
    assert_eq!(lookup_account(&ledger, 2).credits_pending, 0);
    assert_ne!(lookup_account(&ledger, 2).flags & account_flags::CLOSED, 0, "a void does not reopen it");
}

/// A closing transfer closes its own debit account, so posting it is refused; voiding it
/// reopens the account.
#[test]
fn posting_the_closing_transfer_itself_is_refused() {
    let mut ledger = ledger_with(&[], &[account(1), account(2)]);
    succeed(&mut ledger, &[closing_debit(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, post(11, 10, 0), R::DebitAccountAlreadyClosed);
    succeed(&mut ledger, &[void(12, 10)]);
    assert_eq!(lookup_account(&ledger, 1).flags & account_flags::CLOSED, 0);
    assert_eq!(create_transfers(&mut ledger, &[post(11, 10, 0)]), [R::IdAlreadyFailed]);
}

/// 13 of 15 posted: a retry with amount 0 asks for all 15 and must not answer `exists`.
#[test]
fn retry_of_a_partial_post_with_amount_zero_differs_in_amount() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 15), post(11, 10, 13)]);
    transfer_fails(&mut ledger, post(11, 10, 0), R::ExistsWithDifferentAmount);
    assert_eq!(create_transfers(&mut ledger, &[post(11, 10, 13)]), [R::Exists]);
    // A full post is matched by a retry with amount 0 or the full amount.
    succeed(&mut ledger, &[pending(20, 1, 2, 15), post(21, 20, 0)]);
    assert_eq!(create_transfers(&mut ledger, &[post(21, 20, 0), post(21, 20, 15)]), [R::Exists, R::Exists]);
}

/// A post or void whose user data is zero takes the pending transfer's; a retry is
/// completed the same way before it is compared.
#[test]
fn post_and_void_inherit_user_data_left_zero() {
    let mut ledger = two_accounts();
    let tagged = |transfer: Transfer| Transfer { user_data_128: 7, user_data_64: 8, user_data_32: 9, ..transfer };
    succeed(&mut ledger, &[tagged(pending(10, 1, 2, 5)), tagged(pending(20, 1, 2, 5))]);
    let own = Transfer { user_data_64: 80, ..post(11, 10, 0) };
    succeed(&mut ledger, &[own, void(21, 20)]);
    let stored = lookup_transfer(&ledger, 11).expect("post stored");
    assert_eq!((stored.user_data_128, stored.user_data_64, stored.user_data_32), (7, 80, 9));
    let stored = lookup_transfer(&ledger, 21).expect("void stored");
    assert_eq!((stored.user_data_128, stored.user_data_64, stored.user_data_32), (7, 8, 9));
    assert_eq!(create_transfers(&mut ledger, &[own, tagged(void(21, 20))]), [R::Exists, R::Exists]);
    transfer_fails(&mut ledger, post(11, 10, 0), R::ExistsWithDifferentUserData64);
    transfer_fails(&mut ledger, Transfer { user_data_32: 1, ..void(21, 20) }, R::ExistsWithDifferentUserData32);
}
