//! The client against a scripted node on loopback: automatic batching of concurrent
//! callers, retries with the same ids after a timeout or a dropped connection, and the
//! move to the next address on `not_primary`, and redirects (followed, but not forever);
//! a node that never answers is not redialled in a tight loop, a node that refuses
//! the frame itself fails the call with its code, and a merged request refused
//! `forbidden` fails only the callers whose own events are refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig, ClientError};
use tally_codecs::wire::{Body, ErrorCode, FrameDecoder, Message, NodeStatus, Reply, Request, encode_error_reply};
use tally_codecs::wire::{EVENTS_PER_REQUEST_MAX, encode_redirect, encode_status_reply};
use tally_codecs::{EventResult, Transfer};

/// What the fake node does with a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// One `created` result per event (stamped with the event's id as its timestamp).
    Results,
    /// The same, after a pause in which other callers pile up behind this request.
    SlowResults,
    /// Nothing, ever: the client must time out.
    Silence,
    /// Close the connection without answering.
    HangUp,
    NotPrimary,
    /// `not_primary`, naming this address as the primary.
    Redirect(SocketAddr),
    /// What a node does with a frame it refuses before reading its request id: an error
    /// reply with request id 0, then the close.
    RefuseFrame(ErrorCode),
    /// What a node does for a key limited to other ledgers: `forbidden` for the whole
    /// request if any of its transfers names this ledger, else `Results`.
    ForbidLedger(u32),
}

/// A node on a loopback port that answers the n-th request (counted over all its
/// connections) as `script(n)` says, and reports each request it read.
fn fake_node(script: fn(usize) -> Answer) -> (SocketAddr, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    fake_node_on(listener, script)
}

/// [`fake_node`] on a listener bound already (so that two fakes can name each other).
fn fake_node_on(
    listener: TcpListener,
    script: impl Fn(usize) -> Answer + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<Request>) {
    let address = listener.local_addr().expect("an address");
    let (seen, requests) = mpsc::channel();
    std::thread::spawn(move || {
        let mut count = 0usize;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            serve(stream, &script, &mut count, &seen);
        }
    });
    (address, requests)
}

fn serve(mut stream: TcpStream, script: &dyn Fn(usize) -> Answer, count: &mut usize, seen: &mpsc::Sender<Request>) {
    let mut decoder = FrameDecoder::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let Ok(read) = stream.read(&mut buffer) else { return };
        if read == 0 {
            return;
        }
        decoder.feed(&buffer[..read]);
        while let Ok(Some(message)) = decoder.next_message() {
            let mut out = Vec::new();
            match message {
                Message::StatusRequest { request_id, client_id } => {
                    let status = NodeStatus { last_sequence: 42, ..NodeStatus::default() };
                    encode_status_reply(request_id, client_id, &status, &mut out);
                }
                Message::Frame(frame) => {
                    let Body::Request(request) = frame.body else { return };
                    let _ = seen.send(request.clone());
                    *count += 1;
                    let answer = script(*count);
                    if answer == Answer::SlowResults {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    let Request::CreateTransfers(transfers) = request else { return };
                    match answer {
                        Answer::ForbidLedger(ledger) if transfers.iter().any(|transfer| transfer.ledger == ledger) => {
                            encode_error_reply(frame.request_id, ErrorCode::Forbidden, &mut out);
                        }
                        Answer::Results | Answer::SlowResults | Answer::ForbidLedger(_) => {
                            let results: Vec<EventResult> = transfers
                                .iter()
                                .map(|transfer| EventResult { timestamp: transfer.id as u64, ..EventResult::default() })
                                .collect();
                            Reply::CreateTransfers(results)
                                .encode(frame.request_id, frame.client_id, &mut out)
                                .expect("encodes");
                        }
                        Answer::Silence => continue,
                        Answer::HangUp => return,
                        Answer::NotPrimary => encode_error_reply(frame.request_id, ErrorCode::NotPrimary, &mut out),
                        Answer::Redirect(primary) => encode_redirect(frame.request_id, primary, &mut out),
                        Answer::RefuseFrame(code) => {
                            encode_error_reply(0, code, &mut out);
                            let _ = stream.write_all(&out);
                            return;
                        }
                    }
                }
                _ => return,
            }
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}

fn transfers(ids: std::ops::Range<u128>) -> Vec<Transfer> {
    ids.map(|id| Transfer { id, ..Transfer::default() }).collect()
}

fn config(addresses: &[SocketAddr]) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(300),
        give_up_after: Duration::from_secs(10),
        in_flight_max: 1,
        ..ClientConfig::new(addresses)
    }
}

#[test]
fn concurrent_callers_are_batched_and_get_their_own_results() {
    // While the first request is held up, the other callers queue behind it.
    let (address, requests) = fake_node(|n| if n == 1 { Answer::SlowResults } else { Answer::Results });
    let config = ClientConfig { request_timeout: Duration::from_secs(5), ..config(&[address]) };
    let client = Client::with_config(config).expect("connect");
    let callers = 16u128;
    std::thread::scope(|scope| {
        for caller in 0..callers {
            let client = client.clone();
            scope.spawn(move || {
                let first = caller * 100 + 1;
                let results = client.create_transfers(&transfers(first..first + 10)).expect("results");
                let timestamps: Vec<u64> = results.iter().map(|result| result.timestamp).collect();
                assert_eq!(timestamps, (first as u64..first as u64 + 10).collect::<Vec<_>>(), "caller {caller}");
            });
        }
    });
    let requests: Vec<Request> = requests.try_iter().collect();
    let events: usize = requests
        .iter()
        .map(|request| match request {
            Request::CreateTransfers(transfers) => transfers.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(events, (callers * 10) as usize, "every event sent exactly once");
    assert!(
        requests.len() < callers as usize,
        "{} requests for {callers} callers: nothing was batched",
        requests.len()
    );
}

#[test]
fn a_request_that_times_out_is_resent_with_the_same_ids() {
    // The first request is never answered; the retry is.
    let (address, requests) = fake_node(|n| if n == 1 { Answer::Silence } else { Answer::Results });
    let client = Client::with_config(config(&[address])).expect("connect");
    let results = client.create_transfers(&transfers(7..10)).expect("answered on the retry");
    assert_eq!(results.len(), 3);
    let requests: Vec<Request> = requests.try_iter().collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], requests[1], "the retry carries the very same events");
}

#[test]
fn a_dropped_connection_is_retried_and_not_primary_moves_on() {
    let (hangs_up_once, _) = fake_node(|n| if n == 1 { Answer::HangUp } else { Answer::Results });
    let client = Client::with_config(config(&[hangs_up_once])).expect("connect");
    assert_eq!(client.create_transfers(&transfers(1..3)).expect("retried").len(), 2);

    let (standby, _) = fake_node(|_| Answer::NotPrimary);
    let (primary, seen_by_primary) = fake_node(|_| Answer::Results);
    let client = Client::with_config(config(&[standby, primary])).expect("connect");
    assert_eq!(client.create_transfers(&transfers(1..5)).expect("answered by the primary").len(), 4);
    assert_eq!(seen_by_primary.try_iter().count(), 1);
    assert_eq!(client.status().expect("status").last_sequence, 42);
}

#[test]
fn calls_fail_cleanly_when_no_node_answers() {
    let (silent, _) = fake_node(|_| Answer::Silence);
    let config = ClientConfig { give_up_after: Duration::from_millis(800), ..config(&[silent]) };
    let client = Client::with_config(config).expect("connect");
    assert!(matches!(client.create_transfers(&transfers(1..2)), Err(ClientError::Timeout { .. })));

    let too_many = transfers(1..EVENTS_PER_REQUEST_MAX as u128 + 2);
    assert!(matches!(client.create_transfers(&too_many), Err(ClientError::TooManyEvents { .. })));

    let nobody = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("an address");
    assert!(matches!(Client::connect(&[nobody]), Err(ClientError::Unreachable { .. })));
    assert!(matches!(Client::connect(&[]), Err(ClientError::NoAddresses)));
}

#[test]
fn a_redirect_moves_the_client_to_a_primary_missing_from_its_list() {
    let (primary, seen_by_primary) = fake_node_on(TcpListener::bind("127.0.0.1:0").expect("bind"), |_| Answer::Results);
    let (standby, seen_by_standby) =
        fake_node_on(TcpListener::bind("127.0.0.1:0").expect("bind"), move |_| Answer::Redirect(primary));
    let client = Client::with_config(config(&[standby])).expect("connect");
    let sent = transfers(1..5);
    assert_eq!(client.create_transfers(&sent).expect("answered by the primary").len(), 4);
    let at_standby: Vec<Request> = seen_by_standby.try_iter().collect();
    let at_primary: Vec<Request> = seen_by_primary.try_iter().collect();
    assert_eq!(at_standby, vec![Request::CreateTransfers(sent.clone())]);
    assert_eq!(at_primary, vec![Request::CreateTransfers(sent)], "the same request, resent once, to the primary");
}

#[test]
fn two_nodes_naming_each_other_do_not_bounce_a_request_without_end() {
    let (first, second) =
        (TcpListener::bind("127.0.0.1:0").expect("bind"), TcpListener::bind("127.0.0.1:0").expect("bind"));
    let (first_address, second_address) = (first.local_addr().unwrap(), second.local_addr().unwrap());
    let (_, seen_by_first) = fake_node_on(first, move |_| Answer::Redirect(second_address));
    let (_, seen_by_second) = fake_node_on(second, move |_| Answer::Redirect(first_address));
    let give_up_after = Duration::from_millis(1500);
    let client = Client::with_config(ClientConfig { give_up_after, ..config(&[first_address]) }).expect("connect");
    assert!(matches!(client.create_transfers(&transfers(1..2)), Err(ClientError::Timeout { .. })));
    // Within 1.5 s the reconnection pauses after each run of hops (20 ms, doubling) allow
    // about seven runs of REDIRECT_HOPS_MAX + 1 requests; bouncing without a bound sends
    // one request per loopback round trip, thousands.
    let bounced = seen_by_first.try_iter().count() + seen_by_second.try_iter().count();
    let runs_max = 8;
    assert!(
        bounced <= runs_max * (tally_client::REDIRECT_HOPS_MAX as usize + 1),
        "{bounced} requests bounced between two nodes naming each other"
    );
}

/// Sends one call to a node that never answers it as `script` says, and returns how many
/// times the request reached the node before the call gave up after 1.5 s.
fn requests_until_timeout(script: fn(usize) -> Answer) -> usize {
    let (address, requests) = fake_node(script);
    let give_up_after = Duration::from_millis(1500);
    let client = Client::with_config(ClientConfig { give_up_after, ..config(&[address]) }).expect("connect");
    let result = client.create_transfers(&transfers(1..2));
    assert!(matches!(result, Err(ClientError::Timeout { .. })), "{result:?}");
    requests.try_iter().count()
}

/// Within 1.5 s the reconnection pauses after each unanswered connection (20 ms, doubling)
/// allow about seven attempts; redialling at once sends one per loopback round trip,
/// thousands.
const UNANSWERED_ATTEMPTS_MAX: usize = 10;

#[test]
fn not_primary_without_a_redirect_backs_off() {
    let requests = requests_until_timeout(|_| Answer::NotPrimary);
    assert!(requests <= UNANSWERED_ATTEMPTS_MAX, "{requests} requests to a standby that names no primary");
}

#[test]
fn a_node_that_hangs_up_on_every_request_is_not_redialled_in_a_tight_loop() {
    let requests = requests_until_timeout(|_| Answer::HangUp);
    assert!(requests <= UNANSWERED_ATTEMPTS_MAX, "{requests} requests to a node that hangs up on each");
}

#[test]
fn a_refused_frame_fails_the_call_with_the_nodes_code() {
    let (address, requests) = fake_node(|_| Answer::RefuseFrame(ErrorCode::UnsupportedVersion));
    let client = Client::with_config(config(&[address])).expect("connect");
    let started = Instant::now();
    let result = client.create_transfers(&transfers(1..2));
    assert!(matches!(result, Err(ClientError::Rejected(ErrorCode::UnsupportedVersion))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused after {:?}", started.elapsed());
    assert_eq!(requests.try_iter().count(), 1, "a refused frame is not sent again");
}

#[test]
fn a_merged_request_refused_forbidden_fails_only_the_caller_with_events_out_of_scope() {
    // The first request is held up while the other two callers queue behind it and merge;
    // the node then refuses any request with a ledger-2 transfer, as it does for a key
    // limited to ledger 1.
    let (address, requests) = fake_node(|n| if n == 1 { Answer::SlowResults } else { Answer::ForbidLedger(2) });
    let config = ClientConfig { request_timeout: Duration::from_secs(5), ..config(&[address]) };
    let client = Client::with_config(config).expect("connect");
    let on_ledger = |ids: std::ops::Range<u128>, ledger| -> Vec<Transfer> {
        ids.map(|id| Transfer { id, ledger, ..Transfer::default() }).collect()
    };
    let (in_scope, out_of_scope) = (on_ledger(10..13, 1), on_ledger(20..22, 2));
    let (in_scope_result, out_of_scope_result) = std::thread::scope(|scope| {
        let holder = scope.spawn(|| client.create_transfers(&on_ledger(1..2, 1)));
        requests.recv_timeout(Duration::from_secs(5)).expect("the first request reaches the node");
        let in_scope_call = scope.spawn(|| client.create_transfers(&in_scope));
        let out_of_scope_call = scope.spawn(|| client.create_transfers(&out_of_scope));
        assert!(holder.join().expect("joins").is_ok());
        (in_scope_call.join().expect("joins"), out_of_scope_call.join().expect("joins"))
    });
    let timestamps: Vec<u64> =
        in_scope_result.expect("the ledger-1 call is accepted").iter().map(|result| result.timestamp).collect();
    assert_eq!(timestamps, [10, 11, 12]);
    assert!(matches!(out_of_scope_result, Err(ClientError::Rejected(ErrorCode::Forbidden))), "{out_of_scope_result:?}");
    let requests: Vec<Request> = requests.try_iter().collect();
    let merged = |request: &Request| matches!(request, Request::CreateTransfers(events) if events.len() == 5);
    assert!(merged(&requests[0]), "the two calls were merged into one request first");
    let alone = [Request::CreateTransfers(in_scope), Request::CreateTransfers(out_of_scope)];
    assert_eq!(requests.len(), 3, "each share sent again once");
    assert!(alone.iter().all(|share| requests[1..].contains(share)), "each share sent again unchanged");
}
