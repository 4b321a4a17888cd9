//! The fault proxy the replication tests put between nodes does what they rely on: a cut
//! closes connections and refuses new ones, dropped traffic gets no answer, a delay holds
//! each chunk, and heal restores everything. Checked against a real `tally serve`.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{ServerProcess, TempDir, client, free_address};

fn node(dir: &TempDir) -> ServerProcess {
    ServerProcess::start(&dir.path().join("data"), free_address(), &["--durability", "local"])
}

#[test]
fn cut_closes_open_connections_and_refuses_new_ones_until_healed() {
    let dir = TempDir::new("proxy-cut");
    let server = node(&dir);
    let proxy = Proxy::new(server.address);
    let mut open = TcpStream::connect(proxy.address).expect("the proxy accepts");
    client(&[proxy.address], Duration::from_secs(5)).status().expect("the node answers through the proxy");

    proxy.cut();
    open.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout can be set");
    assert_eq!(open.read(&mut [0u8; 16]).expect("the cut connection ends, not times out"), 0);
    assert!(client(&[proxy.address], Duration::from_millis(500)).status().is_err(), "nothing passes a cut");

    proxy.heal();
    client(&[proxy.address], Duration::from_secs(5)).status().expect("the node answers again after heal");
}

#[test]
fn dropped_traffic_gets_no_answer_and_heal_lets_a_new_attempt_through() {
    let dir = TempDir::new("proxy-drop");
    let server = node(&dir);
    let proxy = Proxy::new(server.address);
    let node = client(&[proxy.address], Duration::from_millis(1_500));
    node.status().expect("the node answers through the proxy");

    proxy.drop_traffic();
    assert!(node.status().is_err(), "a request into a black hole gets no answer");

    proxy.heal();
    node.status().expect("after heal the client's next attempt is answered");
}

#[test]
fn delay_holds_every_chunk_in_both_directions() {
    let dir = TempDir::new("proxy-delay");
    let server = node(&dir);
    let proxy = Proxy::new(server.address);
    let node = client(&[proxy.address], Duration::from_secs(10));
    node.status().expect("the node answers through the proxy");

    let delay = Duration::from_millis(300);
    proxy.delay(delay);
    let started = Instant::now();
    node.status().expect("a delayed request is still answered");
    assert!(started.elapsed() >= 2 * delay, "the request and its reply were each held: {:?}", started.elapsed());

    proxy.heal();
    node.status().expect("the node answers after heal");
}
