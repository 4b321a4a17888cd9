//! Snapshot images: a round trip keeps the state hash, and damaged images are refused.

use proptest::prelude::*;
use tally_codecs::flags::{account as account_flags, transfer as transfer_flags};
use tally_codecs::snapshot::LedgerImage;
use tally_codecs::{Account, LimitProfile, Transfer};
use tally_engine::Ledger;

/// A ledger with every kind of state: balances, pending and expired transfers, a limit
/// profile, a remembered failure and balance history.
fn busy_ledger() -> Ledger {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    let profile =
        LimitProfile { id: 7, ledger: 1, max_single_debit: 500, overdraft_max: 50, ..LimitProfile::default() };
    ledger.upsert_limit_profiles(1, &[profile], &mut results);
    let accounts: Vec<Account> = (1..=4u128)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            flags: if id == 1 { account_flags::HISTORY } else { 0 },
            limit_profile: if id == 2 { 7 } else { 0 },
            ..Account::default()
        })
        .collect();
    ledger.create_accounts(10, &accounts, &mut results);
    let transfer = |id: u128, debit: u128, credit: u128, amount: u128, flags: u16, timeout: u32| Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        flags,
        timeout,
        ..Transfer::default()
    };
    let batch = [
        transfer(100, 1, 2, 40, 0, 0),
        transfer(101, 2, 3, 30, transfer_flags::PENDING, 1),
        transfer(102, 3, 1, 20, transfer_flags::PENDING, 0),
        transfer(103, 9, 1, 5, 0, 0),
    ];
    ledger.create_transfers(1_000, &batch, &mut results);
    ledger.tick(3_000_000_000);
    results.clear();
    ledger.create_transfers(4_000_000_000, &[transfer(104, 2, 4, 10, 0, 0)], &mut results);
    ledger
}

fn round_trip(ledger: &Ledger) -> Ledger {
    let bytes = ledger.to_image().to_bytes().expect("an image serialises");
    let image = LedgerImage::from_bytes(&bytes).expect("a fresh image validates");
    Ledger::from_image(&image).expect("a fresh image loads")
}

#[test]
fn snapshot_round_trip_keeps_state_hash_and_behaviour() {
    let mut original = busy_ledger();
    let mut restored = round_trip(&original);
    assert_eq!(restored.state_hash(), original.state_hash());
    assert_eq!(restored.recompute_state_hash(), original.state_hash());
    // The same next inputs give the same results and hash on both.
    let post =
        Transfer { id: 105, pending_id: 102, flags: transfer_flags::POST_PENDING_TRANSFER, ..Transfer::default() };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    original.create_transfers(5_000_000_000, &[post], &mut a);
    restored.create_transfers(5_000_000_000, &[post], &mut b);
    assert_eq!(a, b);
    assert_eq!(original.state_hash(), restored.state_hash());
}

/// The state hash covers state that shapes later answers without being an item of its
/// own: the debits an account's rolling window counts, the longest window any profile has
/// had (how long debits are kept), the largest transfer id (which ids replay asks the
/// history store about). Until 2026-12-08 it did not, so two replicas that disagreed on
/// them compared equal at every checkpoint.
#[test]
fn window_debits_and_the_bounds_are_in_the_state_hash() {
    let ledger = busy_ledger();
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash());
    let image = ledger.to_image();
    assert!(!image.window_debits.is_empty(), "the busy ledger keeps a window debit");
    assert_eq!(Ledger::from_image(&image).expect("loads").state_hash(), ledger.state_hash());
    assert_ne!(ledger.previous_state_hash(), ledger.state_hash(), "the two definitions differ");
    let mut debit = image.clone();
    debit.window_debits[0].amount += 1;
    let mut seconds = image.clone();
    seconds.window_seconds_max += 1;
    let mut largest = image.clone();
    largest.largest_id += 1;
    for (what, changed) in [("a window debit", debit), ("the longest window", seconds), ("the largest id", largest)] {
        let loaded = Ledger::from_image(&changed).expect("a changed image still loads");
        assert_ne!(loaded.state_hash(), ledger.state_hash(), "{what} is not in the state hash");
        assert_eq!(loaded.state_hash(), loaded.recompute_state_hash(), "{what}");
        assert_eq!(loaded.previous_state_hash(), ledger.previous_state_hash(), "{what}: the older definition omits it");
    }
}

#[test]
fn inconsistent_image_is_refused() {
    let mut image = busy_ledger().to_image();
    image.pending[0].number = 10_000;
    assert!(Ledger::from_image(&image).is_err());
    let mut image = busy_ledger().to_image();
    image.transfers.truncate(image.transfers.len() - 3);
    assert!(Ledger::from_image(&image).is_err());
    let mut image = busy_ledger().to_image();
    image.format_version += 1;
    let bytes = image.to_bytes().unwrap();
    assert!(LedgerImage::from_bytes(&bytes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoding_arbitrary_bytes_as_an_image_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(image) = LedgerImage::from_bytes(&bytes) {
            let _ = Ledger::from_image(&image);
        }
    }

    #[test]
    fn flipping_a_byte_of_an_image_never_panics(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = busy_ledger().to_image().to_bytes().unwrap().to_vec();
        let at = index.index(bytes.len());
        bytes[at] ^= 1 << bit;
        if let Ok(image) = LedgerImage::from_bytes(&bytes) {
            let _ = Ledger::from_image(&image);
        }
    }
}

/// Found by `flipping_a_byte_of_an_image_never_panics` (a flipped bit turned account 4's
/// id into 0): the account index asserted instead of the image being refused.
#[test]
fn image_with_an_account_of_id_zero_is_refused_without_a_panic() {
    let mut image = busy_ledger().to_image();
    image.accounts[..16].fill(0);
    assert!(Ledger::from_image(&image).is_err());
}

#[test]
fn image_whose_balances_do_not_add_up_is_refused() {
    let mut image = busy_ledger().to_image();
    // Raise account #1's credits_posted (bytes 64..80 of the first record) by one.
    image.accounts[64] = image.accounts[64].wrapping_add(1);
    assert!(Ledger::from_image(&image).is_err());
}

/// Issue 12: limits apply to the next debit. An account 100 below zero under an overdraft
/// of 100 is left 90 beyond it when the overdraft is lowered to 10; that state is valid,
/// so a snapshot of it loads with the same hash, and the next debit is refused.
#[test]
fn account_beyond_a_lowered_overdraft_survives_a_snapshot() {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    let overdraft = |version: u64, overdraft_max: u128| LimitProfile {
        id: 1,
        ledger: 1,
        overdraft_max,
        version,
        ..LimitProfile::default()
    };
    ledger.upsert_limit_profiles(1, &[overdraft(1, 100)], &mut results);
    let limited = Account {
        id: 1,
        ledger: 1,
        code: 1,
        flags: account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        limit_profile: 1,
        ..Account::default()
    };
    let other = Account { id: 2, ledger: 1, code: 1, ..Account::default() };
    ledger.create_accounts(2, &[limited, other], &mut results);
    let debit = |id: u128, amount: u128| Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    ledger.create_transfers(3, &[debit(10, 100)], &mut results);
    ledger.upsert_limit_profiles(4, &[overdraft(2, 10)], &mut results);
    assert!(results.iter().all(|result| result.status == 0), "{results:?}");

    let mut loaded = round_trip(&ledger);
    assert_eq!(loaded.state_hash(), ledger.state_hash());
    results.clear();
    loaded.create_transfers(5, &[debit(11, 1)], &mut results);
    assert_eq!(results[0].status, tally_codecs::ResultCode::ExceedsOverdraft as u32);
}

/// §5: an image holds only the hot state plus the evicted items' share of the state hash;
/// a ledger that has evicted most of its history round-trips with the same hash, and
/// goes on to decide the same.
#[test]
fn an_image_of_an_evicting_ledger_keeps_its_state_hash() {
    use tally_codecs::wire::Request;
    use tally_engine::pipeline::{Command, apply};

    let mut ledger = Ledger::new();
    ledger.set_hot_window(2, u64::MAX);
    let accounts = (1..=3u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
    let mut sequence = 1;
    apply(&mut ledger, sequence, 1_000, &Command::Request(Request::CreateAccounts(accounts)), Default::default());
    let transfer = |id: u128, flags: u16, pending_id: u128| Transfer {
        id,
        debit_account_id: if pending_id == 0 { 1 } else { 0 },
        credit_account_id: if pending_id == 0 { 2 } else { 0 },
        amount: if pending_id == 0 { 3 } else { 0 },
        ledger: if pending_id == 0 { 1 } else { 0 },
        code: if pending_id == 0 { 1 } else { 0 },
        flags,
        pending_id,
        ..Transfer::default()
    };
    let mut inputs = vec![vec![transfer(100, transfer_flags::PENDING, 0)]];
    inputs.extend((0..10).map(|n| vec![transfer(200 + n, 0, 0)]));
    inputs.push(vec![transfer(300, transfer_flags::POST_PENDING_TRANSFER, 100)]);
    inputs.extend((0..10).map(|n| vec![transfer(400 + n, 0, 0)]));
    for events in inputs {
        sequence += 1;
        let command = Command::Request(Request::CreateTransfers(events));
        apply(&mut ledger, sequence, 1_000 + sequence, &command, Default::default());
    }
    assert!(ledger.hot_transfers_count() < ledger.transfers_count(), "most transfers were evicted");
    let mut restored = round_trip(&ledger);
    restored.set_hot_window(2, u64::MAX);
    assert_eq!(restored.state_hash(), ledger.state_hash());
    assert_eq!(restored.recompute_state_hash(), ledger.state_hash());
    assert_eq!(restored.transfers_count(), ledger.transfers_count());
    for target in [&mut ledger, &mut restored] {
        let command = Command::Request(Request::CreateTransfers(vec![transfer(500, 0, 0)]));
        apply(target, sequence + 5, 1_000_000, &command, Default::default());
    }
    assert_eq!(restored.state_hash(), ledger.state_hash(), "the same next input, the same state");
    assert_eq!(restored.hot_transfers_count(), ledger.hot_transfers_count(), "the same evictions");
}

/// The streamed encoding writes exactly the bytes of `to_bytes`, and an image is decoded
/// the same from an aligned buffer (read in place) and a misaligned one (copied first).
#[test]
fn a_streamed_image_is_the_buffered_one_and_decodes_at_any_alignment() {
    let image = busy_ledger().to_image();
    let buffered = image.to_bytes().expect("an image serialises");
    let mut streamed = Vec::new();
    image.write_to(&mut streamed).expect("an image streams");
    assert_eq!(&streamed[..], &buffered[..]);
    assert_eq!(LedgerImage::from_bytes(&buffered).expect("aligned"), image);
    let mut shifted = vec![0u8; streamed.len() + 1];
    shifted[1..].copy_from_slice(&streamed);
    assert_eq!(LedgerImage::from_bytes(&shifted[1..]).expect("misaligned"), image);
}

/// A copy for a checkpoint has the ledger's image and state hash without its transfer
/// id index, made fresh and into the previous copy after more transfers.
#[test]
fn a_checkpoint_copy_has_the_image_and_hash_but_no_id_index() {
    let mut ledger = busy_ledger();
    let mut copy = Ledger::new();
    copy.copy_for_checkpoint_from(&ledger);
    assert_eq!(copy.to_image(), ledger.to_image());
    assert_eq!(copy.state_hash(), ledger.state_hash());
    assert_eq!(copy.recompute_state_hash(), ledger.state_hash());
    let found = |ledger: &Ledger, id: u128| {
        let mut out = Vec::new();
        ledger.lookup_transfers(&[id], &mut out);
        !out.is_empty()
    };
    assert!(!found(&copy, 100) && found(&ledger, 100), "no id index");
    let more = Transfer {
        id: 200,
        debit_account_id: 3,
        credit_account_id: 4,
        amount: 3,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    ledger.create_transfers(6_000_000_000, &[more], &mut Vec::new());
    copy.release_shared();
    copy.copy_for_checkpoint_from(&ledger);
    assert_eq!(copy.to_image(), ledger.to_image());
    assert_eq!(copy.state_hash(), ledger.state_hash());
    assert!(!found(&copy, 200) && found(&ledger, 200), "no id index");
}

/// The bound replay puts on history look-ups (`cold::Bounded`): the largest id committed
/// or failed stays after the transfer that set it leaves the hot window, and survives an
/// image round trip and a checkpoint copy, where the hot ids alone would lower it.
#[test]
fn the_largest_id_committed_or_failed_outlives_eviction_the_image_and_the_checkpoint_copy() {
    use tally_codecs::wire::Request;
    use tally_engine::pipeline::{Command, apply};

    let mut ledger = Ledger::new();
    ledger.set_hot_window(2, u64::MAX);
    assert_eq!(ledger.largest_id(), 0);
    let accounts = (1..=2u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
    apply(&mut ledger, 1, 1_000, &Command::Request(Request::CreateAccounts(accounts)), Default::default());
    let transfer = |id: u128, credit: u128| Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: credit,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    // A committed id, then a larger one that fails (an unknown account: remembered).
    let inputs = [vec![transfer(9_000, 2)], vec![transfer(50_000, 7)]];
    let mut sequence = 1;
    for events in inputs {
        sequence += 1;
        apply(
            &mut ledger,
            sequence,
            1_000 + sequence,
            &Command::Request(Request::CreateTransfers(events)),
            Default::default(),
        );
    }
    assert_eq!(ledger.largest_id(), 50_000, "a failed id counts");
    for n in 0..6 {
        sequence += 1;
        let command = Command::Request(Request::CreateTransfers(vec![transfer(10 + n, 2)]));
        apply(&mut ledger, sequence, 1_000 + sequence, &command, Default::default());
    }
    assert!(ledger.hot_transfers_count() < 6, "9 000 has left the hot window");
    assert_eq!(ledger.largest_id(), 50_000, "eviction keeps it");
    assert_eq!(round_trip(&ledger).largest_id(), 50_000, "the image keeps it");
    let mut copy = Ledger::new();
    copy.copy_for_checkpoint_from(&ledger);
    assert_eq!(copy.largest_id(), 50_000, "the checkpoint copy keeps it");
    assert_eq!(Ledger::from_image(&copy.to_image()).expect("loads").largest_id(), 50_000);
}

/// A pending transfer's deadline must follow from its timestamp and timeout: the state
/// hash does not cover the deadline, so an image with another one loaded with the same
/// hash and expired (or never expired) differently from the ledger that wrote it.
#[test]
fn an_image_whose_pending_deadline_disagrees_with_its_transfer_is_refused() {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    let accounts: Vec<Account> =
        (1..=2u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
    ledger.create_accounts(1, &accounts, &mut results);
    let pending = Transfer {
        id: 10,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 5,
        ledger: 1,
        code: 1,
        flags: transfer_flags::PENDING,
        timeout: 1,
        ..Transfer::default()
    };
    ledger.create_transfers(1_000, &[pending], &mut results);
    let image = ledger.to_image();
    assert!(Ledger::from_image(&image).is_ok(), "the ledger's own image loads");
    let mut changed = image.clone();
    changed.pending[0].expires_at = u64::MAX;
    assert!(Ledger::from_image(&changed).is_err(), "a deadline that does not follow from the transfer is refused");
}
