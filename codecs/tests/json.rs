//! JSON forms: exact field names, round trips, number and flag rules, request and reply
//! lines, and that no input makes the parser panic.

mod common;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_codecs::flags;
use tally_codecs::json::{self, JsonError, Request};
use tally_codecs::wire::{EVENTS_PER_REQUEST_MAX, Reply};
use tally_codecs::{
    Account, AccountBalance, AccountFilter, EventResult, FilterError, LimitProfile, ResultCode, Transfer,
};

fn to_json<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("records serialize")
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|error| error.to_string())
}

fn assert_error_mentions<T: DeserializeOwned + std::fmt::Debug>(text: &str, expected: &str) {
    match from_json::<T>(text) {
        Ok(record) => panic!("{text} decoded to {record:?}, expected an error mentioning {expected:?}"),
        Err(message) => assert!(message.contains(expected), "error {message:?} for {text} lacks {expected:?}"),
    }
}

#[test]
fn account_form_has_exact_field_names() {
    let account = Account {
        id: 1,
        debits_pending: 2,
        debits_posted: 3,
        credits_pending: 4,
        credits_posted: 5,
        user_data_128: 6,
        user_data_64: 7,
        user_data_32: 8,
        limit_profile: 9,
        ledger: 10,
        code: 11,
        flags: flags::account::LINKED | flags::account::HISTORY,
        timestamp: 13,
    };
    let golden = r#"{"id":"1","debits_pending":"2","debits_posted":"3","credits_pending":"4","credits_posted":"5","user_data_128":"6","user_data_64":7,"user_data_32":8,"limit_profile":9,"ledger":10,"code":11,"flags":["linked","history"],"timestamp":13}"#;
    assert_eq!(to_json(&account), golden);
    assert_eq!(from_json::<Account>(golden), Ok(account));
}

#[test]
fn transfer_form_has_exact_field_names() {
    let transfer = Transfer {
        id: 1,
        debit_account_id: 2,
        credit_account_id: 3,
        amount: 4,
        pending_id: 5,
        user_data_128: 6,
        user_data_64: 7,
        user_data_32: 8,
        timeout: 9,
        ledger: 10,
        code: 11,
        flags: flags::transfer::PENDING | flags::transfer::CLOSING_CREDIT,
        timestamp: 13,
    };
    let golden = r#"{"id":"1","debit_account_id":"2","credit_account_id":"3","amount":"4","pending_id":"5","user_data_128":"6","user_data_64":7,"user_data_32":8,"timeout":9,"ledger":10,"code":11,"flags":["pending","closing_credit"],"timestamp":13}"#;
    assert_eq!(to_json(&transfer), golden);
    assert_eq!(from_json::<Transfer>(golden), Ok(transfer));
}

#[test]
fn limit_profile_form_has_exact_field_names() {
    let profile = LimitProfile {
        max_single_debit: 1,
        window_debit_max: 2,
        overdraft_max: 3,
        id: 4,
        ledger: 5,
        window_seconds: 6,
        flags: 0,
        version: 7,
        timestamp: 8,
    };
    let golden = r#"{"max_single_debit":"1","window_debit_max":"2","overdraft_max":"3","id":4,"ledger":5,"window_seconds":6,"flags":[],"version":7,"timestamp":8}"#;
    assert_eq!(to_json(&profile), golden);
    assert_eq!(from_json::<LimitProfile>(golden), Ok(profile));
}

#[test]
fn account_filter_form_has_exact_field_names_and_no_reserved() {
    let filter = AccountFilter {
        account_id: 1,
        timestamp_min: 2,
        timestamp_max: 3,
        limit: 4,
        flags: flags::filter::DEBITS | flags::filter::REVERSED,
        reserved: [0; 24],
    };
    let golden = r#"{"account_id":"1","timestamp_min":2,"timestamp_max":3,"limit":4,"flags":["debits","reversed"]}"#;
    assert_eq!(to_json(&filter), golden);
    assert_eq!(from_json::<AccountFilter>(golden), Ok(filter));
}

#[test]
fn account_balance_form_has_exact_field_names_and_no_reserved() {
    let balance = AccountBalance {
        debits_pending: 1,
        debits_posted: 2,
        credits_pending: 3,
        credits_posted: 4,
        timestamp: 5,
        reserved: [0; 7],
    };
    let golden =
        r#"{"debits_pending":"1","debits_posted":"2","credits_pending":"3","credits_posted":"4","timestamp":5}"#;
    assert_eq!(to_json(&balance), golden);
    assert_eq!(from_json::<AccountBalance>(golden), Ok(balance));
}

#[test]
fn event_result_form_is_status_name_and_timestamp() {
    let result = EventResult { timestamp: 123, status: ResultCode::ExceedsCredits as u32, reserved: 0 };
    let golden = r#"{"status":"exceeds_credits","timestamp":123}"#;
    assert_eq!(to_json(&result), golden);
    assert_eq!(from_json::<EventResult>(golden), Ok(result));
}

#[test]
fn reserved_fields_are_neither_shown_nor_accepted() {
    let filter = AccountFilter { reserved: [7; 24], ..AccountFilter::default() };
    assert!(!to_json(&filter).contains("reserved"));
    assert_error_mentions::<AccountFilter>(r#"{"reserved":[]}"#, "unknown field `reserved`");
    assert_error_mentions::<AccountBalance>(r#"{"reserved":[]}"#, "unknown field `reserved`");
    assert_error_mentions::<EventResult>(r#"{"reserved":0}"#, "unknown field `reserved`");
}

#[test]
fn omitted_fields_are_zero() {
    assert_eq!(from_json::<Account>("{}"), Ok(Account::default()));
    assert_eq!(from_json::<Transfer>(r#"{"amount":"5"}"#), Ok(Transfer { amount: 5, ..Transfer::default() }));
    assert_eq!(from_json::<EventResult>("{}"), Ok(EventResult::default()));
}

#[test]
fn u128_max_is_accepted_as_a_string_and_u64_range_as_a_number() {
    let max = u128::MAX.to_string();
    let account: Account = from_json(&format!(r#"{{"id":"{max}"}}"#)).expect("u128::MAX as a string");
    assert_eq!(account.id, u128::MAX);
    assert!(to_json(&account).starts_with(&format!(r#"{{"id":"{max}","#)));

    let account: Account = from_json(&format!(r#"{{"id":{}}}"#, u64::MAX)).expect("u64::MAX as a number");
    assert_eq!(account.id, u128::from(u64::MAX));
    let account: Account = from_json(r#"{"user_data_64":"18446744073709551615"}"#).expect("u64 as a string");
    assert_eq!(account.user_data_64, u64::MAX);
}

#[test]
fn a_reader_that_rounds_numbers_beyond_u64_is_told_to_use_strings() {
    // serde_json on its own reads such a literal as an f64; `parse_request` does not.
    assert_error_mentions::<Account>(&format!(r#"{{"id":{}}}"#, u128::MAX), "write it as a decimal string");
}

fn parse_error(line: &str) -> String {
    match json::parse_request(line) {
        Err(error) => error.to_string(),
        Ok(request) => panic!("{line} parsed as {request:?}"),
    }
}

#[test]
fn request_lines_read_numbers_of_any_size_exactly() {
    let line = format!(
        r#"{{"op": "create_transfers", "events": [{{"id": {}, "amount": 18446744073709551616, "user_data_64": 18446744073709551615}}]}}"#,
        u128::MAX - 1
    );
    let Ok(Request::CreateTransfers(transfers)) = json::parse_request(&line) else { panic!("{line} parses") };
    assert_eq!(transfers[0].id, u128::MAX - 1);
    assert_eq!(transfers[0].amount, 1u128 << 64);
    assert_eq!(transfers[0].user_data_64, u64::MAX);
    let Ok(Request::LookupAccounts(ids)) =
        json::parse_request(&format!(r#"{{"op": "lookup_accounts", "ids": [{}]}}"#, u128::MAX))
    else {
        panic!("a lookup parses")
    };
    assert_eq!(ids, [u128::MAX]);
}

#[test]
fn number_errors_echo_the_input_digits() {
    let error = parse_error(r#"{"op": "lookup_accounts", "ids": [340282366920938463463374607431768211456]}"#);
    assert!(error.contains("`340282366920938463463374607431768211456`: out of range"), "{error}");
    let error = parse_error(r#"{"op": "create_accounts", "events": [{"user_data_64": 18446744073709551616}]}"#);
    assert!(error.contains("`18446744073709551616` is out of range"), "{error}");
    let error = parse_error(r#"{"op": "create_transfers", "events": [{"amount": 1.50e3}]}"#);
    assert!(error.contains("`1.50e3`: not an integer"), "{error}");
    let error = parse_error(r#"{"op": "create_transfers", "events": [{"amount": -18446744073709551617}]}"#);
    assert!(error.contains("`-18446744073709551617`: negative"), "{error}");
}

#[test]
fn every_integer_field_is_accepted_as_a_string() {
    let line = r#"{"op": "upsert_limit_profiles", "events": [{"id": "7", "ledger": "1", "window_seconds": "60"}]}"#;
    let Ok(Request::UpsertLimitProfiles(profiles)) = json::parse_request(line) else { panic!("{line} parses") };
    assert_eq!((profiles[0].id, profiles[0].ledger, profiles[0].window_seconds), (7, 1, 60));
    let line = r#"{"op": "create_accounts", "events": [{"limit_profile": "7", "ledger": "1", "code": "2", "user_data_32": "3"}]}"#;
    let Ok(Request::CreateAccounts(accounts)) = json::parse_request(line) else { panic!("{line} parses") };
    assert_eq!(
        (accounts[0].limit_profile, accounts[0].ledger, accounts[0].code, accounts[0].user_data_32),
        (7, 1, 2, 3)
    );
    assert_error_mentions::<Account>(r#"{"code":"65536"}"#, "u16 `65536` is out of range");
    assert_error_mentions::<LimitProfile>(r#"{"id":"x"}"#, "invalid u32 `x`");
}

#[test]
fn negative_fractional_and_overflowing_numbers_are_rejected() {
    assert_error_mentions::<Account>(r#"{"id":-1}"#, "negative");
    assert_error_mentions::<Account>(r#"{"id":"-1"}"#, "negative");
    assert_error_mentions::<Account>(r#"{"id":1.5}"#, "not an integer");
    assert_error_mentions::<Account>(r#"{"id":"1.5"}"#, "not an integer");
    assert_error_mentions::<Account>(r#"{"id":"+1"}"#, "not a decimal integer");
    assert_error_mentions::<Account>(r#"{"id":""}"#, "empty");
    assert_error_mentions::<Account>(r#"{"id":"340282366920938463463374607431768211456"}"#, "out of range");
    assert_error_mentions::<Account>(r#"{"user_data_64":"18446744073709551616"}"#, "out of range");
    assert_error_mentions::<Account>(r#"{"user_data_64":-3}"#, "negative");
    assert_error_mentions::<Account>(r#"{"code":65536}"#, "u16");
    assert_error_mentions::<Account>(r#"{"ledger":-1}"#, "u32");
}

#[test]
fn unknown_fields_are_rejected() {
    assert_error_mentions::<Account>(r#"{"id":"1","balance":"5"}"#, "unknown field `balance`");
    assert_error_mentions::<Transfer>(r#"{"ammount":"5"}"#, "unknown field `ammount`");
}

#[test]
fn unknown_flag_names_are_rejected() {
    assert_error_mentions::<Account>(r#"{"flags":["linked","pending"]}"#, "unknown account flag `pending`");
    assert_error_mentions::<Transfer>(r#"{"flags":["history"]}"#, "unknown transfer flag `history`");
    assert_error_mentions::<AccountFilter>(r#"{"flags":["linked"]}"#, "unknown filter flag `linked`");
    assert_error_mentions::<LimitProfile>(r#"{"flags":["any"]}"#, "unknown limit profile flag `any`");
}

#[test]
fn reserved_flag_bits_are_written_as_numbers_and_read_back() {
    let account = Account { flags: flags::account::LINKED | 1 << 5 | 1 << 15, ..Account::default() };
    assert!(to_json(&account).contains(r#""flags":["linked",32,32768]"#));
    assert_eq!(from_json::<Account>(&to_json(&account)), Ok(account));
    assert_error_mentions::<Account>(r#"{"flags":[65536]}"#, "does not fit");
}

#[test]
fn unknown_status_names_are_rejected_and_unnamed_codes_are_numbers() {
    assert_error_mentions::<EventResult>(r#"{"status":"fine"}"#, "unknown status `fine`");
    let result = EventResult { timestamp: 1, status: 999, reserved: 0 };
    assert_eq!(to_json(&result), r#"{"status":999,"timestamp":1}"#);
    assert_eq!(from_json::<EventResult>(&to_json(&result)), Ok(result));
}

#[test]
fn each_request_line_parses_to_its_request() {
    let cases = [
        (
            r#"{"op":"create_accounts","events":[{"id":"1","ledger":1,"code":1}]}"#,
            Request::CreateAccounts(vec![Account { id: 1, ledger: 1, code: 1, ..Account::default() }]),
        ),
        (r#"{"op":"create_transfers","events":[]}"#, Request::CreateTransfers(vec![])),
        (
            r#"{"op":"upsert_limit_profiles","events":[{"id":2}]}"#,
            Request::UpsertLimitProfiles(vec![LimitProfile { id: 2, ..LimitProfile::default() }]),
        ),
        (r#"{"op":"lookup_accounts","ids":["1",2]}"#, Request::LookupAccounts(vec![1, 2])),
        (r#"{"ids":["3"],"op":"lookup_transfers"}"#, Request::LookupTransfers(vec![3])),
        (
            r#"{"op":"get_account_transfers","filter":{"account_id":"4","limit":10,"flags":["credits"]}}"#,
            Request::GetAccountTransfers(AccountFilter {
                account_id: 4,
                limit: 10,
                flags: flags::filter::CREDITS,
                ..AccountFilter::default()
            }),
        ),
        (
            r#"{"op":"get_account_balances","filter":{"limit":1,"flags":["debits"]}}"#,
            Request::GetAccountBalances(AccountFilter {
                limit: 1,
                flags: flags::filter::DEBITS,
                ..AccountFilter::default()
            }),
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(json::parse_request(line).expect(line), expected, "{line}");
        assert_eq!(json::parse_request(&json::request_line(&expected)).expect(line), expected, "{line}");
    }
}

#[test]
fn malformed_and_invalid_request_lines_are_told_apart() {
    for line in ["", "{", r#"{"op":"create_accounts","events":[]} x"#, r#"{"op":"#] {
        assert!(matches!(json::parse_request(line), Err(JsonError::Syntax(_))), "{line:?}");
    }
    let invalid = [
        (r#"{"op":"tick"}"#, "unknown variant `tick`"),
        (r#"{"events":[]}"#, "missing field `op`"),
        (r#"{"op":"create_accounts"}"#, "missing field `events`"),
        (r#"{"op":"create_accounts","events":[],"ids":[]}"#, "unknown field `ids`"),
        (r#"{"op":"lookup_accounts","ids":[-1]}"#, "negative"),
        (r#"{"op":"create_accounts","events":[{"flags":["nope"]}]}"#, "unknown account flag `nope`"),
        ("5", "invalid type"),
    ];
    for (line, expected) in invalid {
        match json::parse_request(line) {
            Err(JsonError::Invalid(error)) => assert!(error.to_string().contains(expected), "{line}: {error}"),
            other => panic!("{line}: expected an invalid-request error, got {other:?}"),
        }
    }
}

#[test]
fn invalid_filters_are_refused_with_their_reason() {
    let line = |filter: &str| format!(r#"{{"op":"get_account_transfers","filter":{filter}}}"#);
    let cases = [
        (r#"{"limit":10}"#, FilterError::NoSide),
        (r#"{"flags":["debits"]}"#, FilterError::LimitZero),
        (r#"{"limit":8190,"flags":["credits"]}"#, FilterError::LimitAboveMax { limit: 8_190 }),
    ];
    for (filter, expected) in cases {
        match json::parse_request(&line(filter)) {
            Err(JsonError::Filter(error)) => assert_eq!(error, expected, "{filter}"),
            other => panic!("{filter}: expected a filter error, got {other:?}"),
        }
    }
}

#[test]
fn requests_beyond_the_event_limit_are_rejected() {
    let ids = |count: usize| format!(r#"{{"op":"lookup_accounts","ids":[{}]}}"#, vec!["1"; count].join(","));
    let at_limit = json::parse_request(&ids(EVENTS_PER_REQUEST_MAX)).expect("exactly the limit");
    assert_eq!(at_limit, Request::LookupAccounts(vec![1; EVENTS_PER_REQUEST_MAX]));
    let over = json::parse_request(&ids(EVENTS_PER_REQUEST_MAX + 1));
    assert!(matches!(over, Err(JsonError::TooManyEvents { count: 8190, max: 8189 })), "{over:?}");
}

#[test]
fn reply_lines_have_their_documented_shape() {
    let result = EventResult { timestamp: 7, status: ResultCode::Created as u32, reserved: 0 };
    assert_eq!(json::results_line(&[result]), r#"{"results":[{"status":"created","timestamp":7}]}"#);
    assert_eq!(json::accounts_line(&[]), r#"{"accounts":[]}"#);
    assert_eq!(json::transfers_line(&[]), r#"{"transfers":[]}"#);
    assert_eq!(json::balances_line(&[]), r#"{"balances":[]}"#);
    assert_eq!(json::error_line("bad \"line\"\n"), r#"{"error":"bad \"line\"\n"}"#);
    assert_eq!(json::reply_line(&Reply::CreateTransfers(vec![result])), json::results_line(&[result]));
    assert_eq!(json::reply_line(&Reply::GetAccountTransfers(vec![])), r#"{"transfers":[]}"#);
}

fn round_trips<T>(record: T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = to_json(&record);
    prop_assert_eq!(from_json::<T>(&text), Ok(record), "via {}", text);
    Ok(())
}

proptest! {
    #[test]
    fn any_account_round_trips(account in common::record::<Account>()) {
        round_trips(account)?;
    }

    #[test]
    fn any_transfer_round_trips(transfer in common::record::<Transfer>()) {
        round_trips(transfer)?;
    }

    #[test]
    fn any_limit_profile_round_trips(profile in common::record::<LimitProfile>()) {
        round_trips(profile)?;
    }

    #[test]
    fn any_filter_round_trips_with_reserved_zeroed(filter in common::record::<AccountFilter>()) {
        round_trips(AccountFilter { reserved: [0; 24], ..filter })?;
    }

    #[test]
    fn any_balance_round_trips_with_reserved_zeroed(balance in common::record::<AccountBalance>()) {
        round_trips(AccountBalance { reserved: [0; 7], ..balance })?;
    }

    #[test]
    fn any_result_round_trips_with_reserved_zeroed(result in common::record::<EventResult>()) {
        round_trips(EventResult { reserved: 0, ..result })?;
    }

    #[test]
    fn any_request_round_trips_through_its_line(
        accounts in proptest::collection::vec(common::record::<Account>(), 0..4),
        ids in proptest::collection::vec(any::<u128>(), 0..4),
        filter in common::record::<AccountFilter>(),
    ) {
        // A valid filter: known flags with a side, a limit from 1 to 8 189, an ordered range.
        let flags = (filter.flags & flags::filter::KNOWN) | flags::filter::DEBITS;
        let limit = 1 + filter.limit % EVENTS_PER_REQUEST_MAX as u32;
        let timestamp_max = if filter.timestamp_max == 0 { 0 } else { filter.timestamp_max.max(filter.timestamp_min) };
        let filter = AccountFilter { reserved: [0; 24], flags, limit, timestamp_max, ..filter };
        for request in [Request::CreateAccounts(accounts.clone()), Request::LookupTransfers(ids.clone()), Request::GetAccountBalances(filter)] {
            let line = json::request_line(&request);
            prop_assert_eq!(json::parse_request(&line).map_err(|error| error.to_string()), Ok(request), "via {}", line);
        }
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(line in "\\PC*") {
        let _ = json::parse_request(&line);
    }

    #[test]
    fn parsing_mutated_requests_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let valid = r#"{"op":"create_transfers","events":[{"id":"1","amount":5,"flags":["linked","pending"],"timeout":3,"user_data_64":"9"}]}"#;
        let mut bytes = valid.as_bytes().to_vec();
        for (index, byte, kind) in edits {
            let at = index.index(bytes.len() + 1);
            match kind {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => { bytes.remove(at); }
                _ if at < bytes.len() => bytes[at] = byte,
                _ => bytes.push(byte),
            }
        }
        let _ = json::parse_request(&String::from_utf8_lossy(&bytes));
    }
}
