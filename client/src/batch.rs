//! Automatic batching: the calls of concurrent callers become one request per operation,
//! and the reply is split back into each caller's share. A request refused as a whole
//! can be split back into each caller's own request, to be sent alone. Pure: no I/O, no
//! threads.

use std::collections::VecDeque;
use std::time::Instant;

use crossbeam::channel::Sender;
use tally_codecs::flags;
use tally_codecs::wire::{EVENTS_PER_REQUEST_MAX, NodeStatus, Reply, Request};

use crate::error::ClientError;

/// What a caller asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Request(Request),
    Status,
}

/// What a caller gets back.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Reply(Reply),
    Status(NodeStatus),
}

pub type Waiter = Sender<Result<Answer, ClientError>>;

/// A call waiting to be sent.
pub struct Caller {
    pub call: Call,
    pub waiter: Waiter,
    pub since: Instant,
    /// Goes in a request of its own: it was one share of a merged request refused as a
    /// whole, and is sent again to get its own answer (see [`Batch::into_callers`]).
    pub alone: bool,
}

/// One request on the wire and the callers it answers, in order.
pub struct Batch {
    pub call: Call,
    pub parts: Vec<Part>,
    /// When the oldest caller in the batch called.
    pub since: Instant,
}

/// One caller's share of a batch: how many of its events (or ids) it contributed.
pub struct Part {
    pub waiter: Waiter,
    pub events: usize,
}

impl Batch {
    /// Answers every caller of the batch with the same error.
    pub fn fail(self, error: impl Fn() -> ClientError) {
        for part in self.parts {
            // A caller that stopped waiting has nothing to be told.
            let _ = part.waiter.send(Err(error()));
        }
    }

    /// The batch's callers again, each with its own events, ids and bodies unchanged (ids
    /// are idempotency keys), in order, each to go alone. They keep the batch's `since`:
    /// the whole batch was already due to give up then, and the oldest caller came first.
    pub fn into_callers(self) -> Vec<Caller> {
        let Batch { call, parts, since } = self;
        let calls = match call {
            Call::Request(request) => {
                let sizes: Vec<usize> = parts.iter().map(|part| part.events).collect();
                assert_eq!(sizes.iter().sum::<usize>(), events(&request), "the parts account for every event");
                split_request(request, &sizes).into_iter().map(Call::Request).collect()
            }
            Call::Status => vec![Call::Status],
        };
        assert_eq!(calls.len(), parts.len(), "one call per part");
        let callers = calls.into_iter().zip(parts);
        callers.map(|(call, part)| Caller { call, waiter: part.waiter, since, alone: true }).collect()
    }
}

/// Events, ids or filters a request carries.
pub fn events(request: &Request) -> usize {
    match request {
        Request::CreateAccounts(events) => events.len(),
        Request::CreateTransfers(events) => events.len(),
        Request::UpsertLimitProfiles(events) => events.len(),
        Request::LookupAccounts(ids) | Request::LookupTransfers(ids) => ids.len(),
        Request::GetAccountTransfers(_) | Request::GetAccountBalances(_) => 1,
    }
}

/// Whether a request may share a batch with others. A query by filter answers for one
/// filter only. A create whose last event is `linked` leaves a chain open, which the
/// ledger fails as a whole at the end of a request; merged, the chain would run on into
/// the next caller's events instead, so such a call goes alone.
fn mergeable(request: &Request) -> bool {
    match request {
        Request::CreateAccounts(events) => events.last().is_none_or(|last| !last.has(flags::account::LINKED)),
        Request::CreateTransfers(events) => events.last().is_none_or(|last| !last.has(flags::transfer::LINKED)),
        Request::UpsertLimitProfiles(_) | Request::LookupAccounts(_) | Request::LookupTransfers(_) => true,
        Request::GetAccountTransfers(_) | Request::GetAccountBalances(_) => false,
    }
}

/// Takes the oldest waiting call and every later one that can join it (same operation,
/// within [`EVENTS_PER_REQUEST_MAX`]), in their order.
pub fn next_batch(waiting: &mut VecDeque<Caller>) -> Option<Batch> {
    let first = waiting.pop_front()?;
    let since = first.since;
    let mut parts = Vec::new();
    let Call::Request(mut merged) = first.call else {
        parts.push(Part { waiter: first.waiter, events: 0 });
        return Some(Batch { call: Call::Status, parts, since });
    };
    let mut total = events(&merged);
    parts.push(Part { waiter: first.waiter, events: total });
    if !first.alone && mergeable(&merged) {
        let operation = merged.operation();
        let mut index = 0;
        while index < waiting.len() && total < EVENTS_PER_REQUEST_MAX {
            let candidate = &waiting[index];
            let count = match &candidate.call {
                Call::Request(request)
                    if request.operation() == operation
                        && !candidate.alone
                        && mergeable(request)
                        && total + events(request) <= EVENTS_PER_REQUEST_MAX =>
                {
                    events(request)
                }
                Call::Request(_) | Call::Status => {
                    index += 1;
                    continue;
                }
            };
            if let Some(Caller { call: Call::Request(request), waiter, .. }) = waiting.remove(index) {
                append(&mut merged, request);
                total += count;
                parts.push(Part { waiter, events: count });
            }
        }
    }
    Some(Batch { call: Call::Request(merged), parts, since })
}

/// Appends the events of `more` to `merged`; both are of the same operation.
fn append(merged: &mut Request, more: Request) {
    match (merged, more) {
        (Request::CreateAccounts(all), Request::CreateAccounts(more)) => all.extend(more),
        (Request::CreateTransfers(all), Request::CreateTransfers(more)) => all.extend(more),
        (Request::UpsertLimitProfiles(all), Request::UpsertLimitProfiles(more)) => all.extend(more),
        (Request::LookupAccounts(all), Request::LookupAccounts(more))
        | (Request::LookupTransfers(all), Request::LookupTransfers(more)) => all.extend(more),
        // `next_batch` merges only requests of one operation.
        _ => {}
    }
}

/// Undoes [`append`]: the events of `merged` in runs of `sizes`, one request each.
fn split_request(merged: Request, sizes: &[usize]) -> Vec<Request> {
    match merged {
        Request::CreateAccounts(all) => split_events(all, sizes, Request::CreateAccounts),
        Request::CreateTransfers(all) => split_events(all, sizes, Request::CreateTransfers),
        Request::UpsertLimitProfiles(all) => split_events(all, sizes, Request::UpsertLimitProfiles),
        Request::LookupAccounts(ids) => split_events(ids, sizes, Request::LookupAccounts),
        Request::LookupTransfers(ids) => split_events(ids, sizes, Request::LookupTransfers),
        // Filter queries are never merged: the batch has one part.
        query @ (Request::GetAccountTransfers(_) | Request::GetAccountBalances(_)) => vec![query],
    }
}

fn split_events<T>(all: Vec<T>, sizes: &[usize], wrap: impl Fn(Vec<T>) -> Request) -> Vec<Request> {
    let mut all = all.into_iter();
    sizes.iter().map(|&size| wrap(all.by_ref().take(size).collect())).collect()
}

/// Splits the reply to a batch into one reply per part, in the parts' order.
pub fn split(call: &Call, parts: &[Part], reply: Reply) -> Result<Vec<Reply>, ClientError> {
    let Call::Request(request) = call else {
        return Err(ClientError::Protocol("a ledger reply to a status request".to_owned()));
    };
    if reply.operation() != request.operation() {
        let names = (reply.operation().name(), request.operation().name());
        return Err(ClientError::Protocol(format!("a {} reply to a {} request", names.0, names.1)));
    }
    let sizes = parts.iter().map(|part| part.events);
    match (request, reply) {
        (_, Reply::CreateAccounts(results)) => split_counted(results, sizes, Reply::CreateAccounts),
        (_, Reply::CreateTransfers(results)) => split_counted(results, sizes, Reply::CreateTransfers),
        (_, Reply::UpsertLimitProfiles(results)) => split_counted(results, sizes, Reply::UpsertLimitProfiles),
        (Request::LookupAccounts(ids), Reply::LookupAccounts(found)) => {
            split_found(ids, sizes, found, |account| account.id, Reply::LookupAccounts)
        }
        (Request::LookupTransfers(ids), Reply::LookupTransfers(found)) => {
            split_found(ids, sizes, found, |transfer| transfer.id, Reply::LookupTransfers)
        }
        // Filter queries are never merged: the batch has one part.
        (_, reply) => Ok(vec![reply]),
    }
}

/// One result per event: each part takes as many as it sent.
fn split_counted<T>(
    results: Vec<T>,
    sizes: impl Iterator<Item = usize> + Clone,
    wrap: impl Fn(Vec<T>) -> Reply,
) -> Result<Vec<Reply>, ClientError> {
    let expected: usize = sizes.clone().sum();
    if results.len() != expected {
        return Err(ClientError::Protocol(format!("{} results for {expected} events", results.len())));
    }
    let mut results = results.into_iter();
    Ok(sizes.map(|size| wrap(results.by_ref().take(size).collect())).collect())
}

/// Lookups leave out ids that do not exist, so each part takes, of the records in order,
/// those whose id is the next one it asked for.
fn split_found<T>(
    ids: &[u128],
    sizes: impl Iterator<Item = usize>,
    found: Vec<T>,
    id_of: impl Fn(&T) -> u128,
    wrap: impl Fn(Vec<T>) -> Reply,
) -> Result<Vec<Reply>, ClientError> {
    let mut found = found.into_iter().peekable();
    let mut ids = ids.iter();
    let mut replies = Vec::new();
    for size in sizes {
        let mut mine = Vec::new();
        for id in ids.by_ref().take(size) {
            if let Some(record) = found.next_if(|record| id_of(record) == *id) {
                mine.push(record);
            }
        }
        replies.push(wrap(mine));
    }
    if found.next().is_some() {
        return Err(ClientError::Protocol("a lookup returned records that were not asked for".to_owned()));
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use crossbeam::channel::{Receiver, bounded};
    use tally_codecs::{Account, AccountFilter, EventResult, Transfer};

    use super::*;

    fn caller(call: Call) -> (Caller, Receiver<Result<Answer, ClientError>>) {
        let (waiter, receiver) = bounded(1);
        (Caller { call, waiter, since: Instant::now(), alone: false }, receiver)
    }

    fn transfers(ids: std::ops::Range<u128>, flags: u16) -> Request {
        Request::CreateTransfers(ids.map(|id| Transfer { id, flags, ..Transfer::default() }).collect())
    }

    fn queue(calls: Vec<Call>) -> VecDeque<Caller> {
        calls.into_iter().map(|call| caller(call).0).collect()
    }

    #[test]
    fn calls_of_one_operation_merge_in_order_and_others_wait() {
        let mut waiting = queue(vec![
            Call::Request(transfers(1..3, 0)),
            Call::Request(Request::LookupAccounts(vec![9])),
            Call::Request(transfers(3..4, 0)),
            Call::Status,
        ]);
        let batch = next_batch(&mut waiting).expect("a batch");
        assert_eq!(batch.call, Call::Request(transfers(1..4, 0)));
        assert_eq!(batch.parts.iter().map(|part| part.events).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(waiting.len(), 2);
        assert_eq!(
            next_batch(&mut waiting).map(|batch| batch.call),
            Some(Call::Request(Request::LookupAccounts(vec![9])))
        );
        assert_eq!(next_batch(&mut waiting).map(|batch| batch.call), Some(Call::Status));
        assert!(next_batch(&mut waiting).is_none());
    }

    #[test]
    fn an_open_chain_and_filter_queries_go_alone() {
        let linked = tally_codecs::flags::transfer::LINKED;
        let filter = Request::GetAccountTransfers(AccountFilter::default());
        let mut waiting = queue(vec![
            Call::Request(transfers(1..3, linked)),
            Call::Request(transfers(3..4, 0)),
            Call::Request(filter.clone()),
            Call::Request(filter),
        ]);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| next_batch(&mut waiting)).map(|batch| batch.parts.len()).collect();
        assert_eq!(sizes, [1, 1, 1, 1]);
    }

    #[test]
    fn a_batch_splits_back_into_its_callers_requests_which_then_go_alone() {
        let mut waiting = queue(vec![
            Call::Request(transfers(1..3, 0)),
            Call::Request(transfers(3..4, 0)),
            Call::Request(transfers(4..6, 0)),
        ]);
        let batch = next_batch(&mut waiting).expect("a batch");
        assert_eq!(batch.parts.len(), 3);
        let calls: Vec<Call> = batch.into_callers().into_iter().map(|caller| caller.call).collect();
        let expected = [transfers(1..3, 0), transfers(3..4, 0), transfers(4..6, 0)].map(Call::Request);
        assert_eq!(calls, expected, "each caller's own events, unchanged");

        let mut waiting = queue(vec![Call::Request(transfers(1..3, 0)), Call::Request(transfers(3..4, 0))]);
        let batch = next_batch(&mut waiting).expect("a batch");
        waiting.extend(batch.into_callers());
        waiting.push_back(caller(Call::Request(transfers(4..5, 0))).0);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| next_batch(&mut waiting)).map(|batch| batch.parts.len()).collect();
        assert_eq!(sizes, [1, 1, 1], "a share sent again alone merges with nothing");
    }

    #[test]
    fn batches_stop_at_the_request_limit() {
        let half = EVENTS_PER_REQUEST_MAX as u128 / 2 + 1;
        let mut waiting = queue(vec![
            Call::Request(transfers(0..half, 0)),
            Call::Request(transfers(half..2 * half, 0)),
            Call::Request(transfers(2 * half..2 * half + 1, 0)),
        ]);
        let batch = next_batch(&mut waiting).expect("a batch");
        assert_eq!(batch.parts.iter().map(|part| part.events).collect::<Vec<_>>(), [half as usize, 1]);
        assert_eq!(waiting.len(), 1);
    }

    #[test]
    fn results_split_by_count_and_lookups_by_id() {
        let parts: Vec<Part> =
            [2, 1].iter().map(|&events| Part { waiter: caller(Call::Status).0.waiter, events }).collect();
        let result = |timestamp| EventResult { timestamp, ..EventResult::default() };
        let call = Call::Request(transfers(1..4, 0));
        let replies = split(&call, &parts, Reply::CreateTransfers(vec![result(1), result(2), result(3)]));
        let expected =
            vec![Reply::CreateTransfers(vec![result(1), result(2)]), Reply::CreateTransfers(vec![result(3)])];
        assert_eq!(replies.expect("counts match"), expected);
        assert!(split(&call, &parts, Reply::CreateTransfers(vec![result(1)])).is_err());
        assert!(split(&call, &parts, Reply::CreateAccounts(vec![])).is_err());

        // Ids 5 and 7 do not exist; 6 is asked for by both parts.
        let call = Call::Request(Request::LookupAccounts(vec![5, 6, 6, 7]));
        let parts: Vec<Part> =
            [2, 2].iter().map(|&events| Part { waiter: caller(Call::Status).0.waiter, events }).collect();
        let account = |id| Account { id, ..Account::default() };
        let replies = split(&call, &parts, Reply::LookupAccounts(vec![account(6), account(6)]));
        let expected = vec![Reply::LookupAccounts(vec![account(6)]), Reply::LookupAccounts(vec![account(6)])];
        assert_eq!(replies.expect("records match ids"), expected);
        assert!(split(&call, &parts, Reply::LookupAccounts(vec![account(8)])).is_err());
    }
}
