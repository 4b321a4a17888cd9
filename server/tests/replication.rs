//! Hot standbys as real processes on loopback: catch-up from an empty directory, the
//! live stream under `replicated:1`, `not_primary` naming the primary on a standby (and a
//! client that follows it), and peers that cannot
//! prove the cluster secret.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ServerProcess, TempDir, account, client, free_address, raw_answer, transfer};

use tally_codecs::ResultCode;
use tally_codecs::wire::{Body, ErrorCode, NodeStatus, VERSION, VERSION_OLDEST};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    // Prefixed with the test's own directory: a node of another test that takes over a
    // port let go of here is refused at the handshake.
    std::fs::write(&path, format!("{} {text}", dir.display())).expect("the secret file can be written");
    path
}

fn status(address: SocketAddr) -> NodeStatus {
    client(&[address], Duration::from_secs(5)).status().expect("the node answers status")
}

fn cluster_args<'a>(cluster: &'a str, secret: &'a Path) -> Vec<&'a str> {
    vec!["--cluster", cluster, "--cluster-secret-file", secret.to_str().expect("a UTF-8 path")]
}

/// Waits until the standby has applied everything the primary has, then compares.
fn wait_converged(primary: SocketAddr, standby: SocketAddr) -> (NodeStatus, NodeStatus) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let (ours, theirs) = (status(primary), status(standby));
        if theirs.applied_sequence == ours.last_sequence && ours.applied_sequence == ours.last_sequence {
            return (ours, theirs);
        }
        assert!(Instant::now() < deadline, "the standby did not catch up: primary {ours:?}, standby {theirs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one `create_accounts` frame of `version` to `address` and returns the answer.
#[test]
fn standby_from_an_empty_directory_converges_and_redirects_writes_to_the_primary() {
    let dir = TempDir::new("standby-converges");
    let key = secret(dir.path(), "secret", "a-shared-cluster-secret\n");
    let (primary_address, standby_address) = (free_address(), free_address());
    let cluster = format!("{primary_address},{standby_address}");
    let mut args = cluster_args(&cluster, &key);
    args.extend(["--durability", "replicated:1"]);

    // Writes acknowledged before the standby exists: it must fetch them from the journal.
    let primary = ServerProcess::start(&dir.path().join("primary"), primary_address, &args);
    let standby = ServerProcess::start_as(
        "standby",
        &dir.path().join("standby"),
        standby_address,
        &[&["--primary", &primary_address.to_string()][..], &cluster_args(&cluster, &key)].concat(),
    );
    let writer = client(&[primary_address], Duration::from_secs(20));
    writer.create_accounts(&[account(1), account(2)]).expect("accounts are created once a standby holds them");
    for id in 0..50u128 {
        writer.create_transfers(&[transfer(100 + id, 1, 2, 1 + id)]).expect("a transfer is acknowledged");
    }
    let (ours, theirs) = wait_converged(primary_address, standby_address);
    assert_eq!(theirs.state_hash, ours.state_hash, "equal state after catch-up");
    assert_eq!(theirs.role_name(), "standby");
    assert_eq!(theirs.primary(), Some(primary_address));

    // A standby applies no client write: it names its primary, and a client given only
    // the standby's address follows and gets its write applied there.
    let via_standby = client(&[standby_address], Duration::from_secs(10));
    let results = via_standby.create_accounts(&[account(3)]).expect("the standby sends the client to the primary");
    assert!(results.iter().all(|result| ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok)));
    let found = writer.lookup_accounts(&[3]).expect("lookup on the primary");
    assert_eq!(found.len(), 1, "the write reached the primary");
    // On the wire: a version-2 request is answered with the primary's address, a
    // version-1 request with a bare `not_primary`, as before version 2.
    assert_eq!(raw_answer(standby_address, VERSION), Body::Redirect(primary_address));
    assert_eq!(raw_answer(standby_address, VERSION_OLDEST), Body::Error(ErrorCode::NotPrimary));
    assert!(status(primary_address).applied_events > 0);
    drop((standby, primary));
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused_and_receives_nothing() {
    let dir = TempDir::new("wrong-secret");
    let right = secret(dir.path(), "right", "the-right-cluster-secret");
    let wrong = secret(dir.path(), "wrong", "the-wrong-cluster-secret");
    let (primary_address, standby_address) = (free_address(), free_address());
    let cluster = format!("{primary_address},{standby_address}");
    let primary = ServerProcess::start(&dir.path().join("primary"), primary_address, &cluster_args(&cluster, &right));
    client(&[primary_address], Duration::from_secs(5))
        .create_accounts(&[account(1)])
        .expect("a local-durability primary acknowledges alone");
    let standby = ServerProcess::start_as(
        "standby",
        &dir.path().join("standby"),
        standby_address,
        &[&["--primary", &primary_address.to_string()][..], &cluster_args(&cluster, &wrong)].concat(),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !primary.log().contains("refused") {
        assert!(Instant::now() < deadline, "the primary logs the refusal:\n{}", primary.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(standby_address).last_sequence, 0, "the impostor received no record");
    assert!(standby.log().contains("could not prove the cluster secret"), "{}", standby.log());
}
