//! A fenced old primary that rejoins while it runs: real processes with a fault proxy on
//! every link (`common::cluster`). The old primary is cut off, journals a suffix nobody
//! acknowledges, a standby is promoted, the links heal, and the old primary — never
//! restarted — learns the newer epoch, finds the new primary, truncates its suffix,
//! rebuilds, follows, and sends clients there.

mod common;

use std::time::{Duration, Instant};

use tally_client::Client;
use tally_codecs::{ResultCode, Transfer};

use common::cluster::TestCluster;
use common::{account, client, transfer};

const ACCOUNTS: u128 = 8;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

fn batch(first_id: u128, count: u128) -> Vec<Transfer> {
    (first_id..first_id + count).map(|id| transfer(id, 1 + id % ACCOUNTS, 1 + (id + 1) % ACCOUNTS, 1)).collect()
}

fn ids(transfers: &[Transfer]) -> Vec<u128> {
    transfers.iter().map(|transfer| transfer.id).collect()
}

fn all_acknowledged(node: &Client, transfers: &[Transfer]) {
    let results = node.create_transfers(transfers).expect("the transfers are answered");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
}

#[test]
fn fenced_old_primary_rejoins_without_a_restart_and_sends_clients_to_the_new_primary() {
    let mut cluster = TestCluster::new("rejoin-running", 3, "replicated:1");
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0, 2], &[]);
    cluster.start_standby(2, &[0, 1], &[]);
    let first = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    first.create_accounts(&accounts).expect("the accounts are answered");
    all_acknowledged(&first, &batch(1, 500));
    cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);

    // The primary is cut off from both standbys; what it journals now nobody acknowledges.
    for link in cluster.links_of(0) {
        link.cut();
    }
    let unacknowledged = batch(20_000, 300);
    let cut_off = client(&[cluster.addresses[0]], Duration::from_secs(2));
    assert!(cut_off.create_transfers(&unacknowledged).is_err(), "a cut-off primary acknowledges nothing");
    let diverged = cluster.status(0).expect("the old primary answers");
    let follower = cluster.status(1).expect("the standby answers");
    assert!(diverged.last_sequence > follower.last_sequence, "a suffix: {diverged:?} vs {follower:?}");

    cluster.promote_ok(1);
    let new_primary = client(&[cluster.addresses[1]], Duration::from_secs(20));
    let acknowledged = batch(30_000, 300);
    all_acknowledged(&new_primary, &acknowledged);

    cluster.heal_all();
    let converged = cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
    let old = cluster.status(0).expect("the old primary answers");
    assert_eq!(old.role, "standby", "the old primary follows: {old:?}\n{}", cluster.logs());
    assert!(converged.epoch > diverged.epoch, "in the new epoch: {converged:?}");
    let log = cluster.log(0);
    for step in ["REJOIN: the new primary is", "truncating the", "REJOIN: rebuilt"] {
        assert!(log.contains(step), "the old primary logs `{step}`:\n{log}");
    }
    assert!(new_primary.lookup_transfers(&ids(&unacknowledged)).expect("lookup").is_empty(), "the suffix is gone");
    assert_eq!(new_primary.lookup_transfers(&ids(&acknowledged)).expect("lookup").len(), acknowledged.len());

    // A client that knows only the old primary's address is sent to the new one.
    let via_old = client(&[cluster.addresses[0]], Duration::from_secs(20));
    let later = batch(40_000, 100);
    all_acknowledged(&via_old, &later);
    assert_eq!(new_primary.lookup_transfers(&ids(&later)).expect("lookup").len(), later.len());
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while cluster.status(0).is_none_or(|status| status.applied_sequence < converged.applied_sequence + 1) {
        assert!(Instant::now() < deadline, "the rejoined node keeps following:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_converged(&[0, 1, 2], CONVERGE_TIMEOUT);
}
