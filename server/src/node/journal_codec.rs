//! How an input becomes a journal record and back: the operation byte, plus the payload
//! in the compact encoding of `tally_codecs::payload`.

use tally_codecs::Operation;
use tally_codecs::payload::{self, PayloadError};
use tally_codecs::wire::Request;
use tally_engine::pipeline::Command;

/// Why a journal record does not decode to an input. The journal has already checked the
/// record's checksum and chain, so this means a record from another format version.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("operation {0} is not an input the journal holds")]
    NotAnInput(u8),
    #[error("{operation} payload: {source}")]
    Payload {
        operation: &'static str,
        #[source]
        source: PayloadError,
    },
    #[error("a tick carries no payload, found {0} bytes")]
    TickWithPayload(usize),
}

/// Appends the payload of `command` (a mutation) to `out`. Queries never reach the
/// journal; asked for one, this writes nothing.
pub fn encode(command: &Command, out: &mut Vec<u8>) {
    match command {
        Command::Request(Request::CreateAccounts(accounts)) => payload::encode_accounts(accounts, out),
        Command::Request(Request::CreateTransfers(transfers)) => payload::encode_transfers(transfers, out),
        Command::Request(Request::UpsertLimitProfiles(profiles)) => payload::encode_limit_profiles(profiles, out),
        Command::Tick | Command::Request(_) => {}
    }
}

/// The input a journal record holds.
pub fn decode(operation: u8, bytes: &[u8]) -> Result<Command, RecordError> {
    let operation = Operation::from_u8(operation).ok_or(RecordError::NotAnInput(operation))?;
    let failed = |source| RecordError::Payload { operation: operation.name(), source };
    let request = match operation {
        Operation::CreateAccounts => {
            let mut accounts = Vec::new();
            payload::decode_accounts(bytes, &mut accounts).map_err(failed)?;
            Request::CreateAccounts(accounts)
        }
        Operation::CreateTransfers => {
            let mut transfers = Vec::new();
            payload::decode_transfers(bytes, &mut transfers).map_err(failed)?;
            Request::CreateTransfers(transfers)
        }
        Operation::UpsertLimitProfiles => {
            let mut profiles = Vec::new();
            payload::decode_limit_profiles(bytes, &mut profiles).map_err(failed)?;
            Request::UpsertLimitProfiles(profiles)
        }
        Operation::Tick if bytes.is_empty() => return Ok(Command::Tick),
        Operation::Tick => return Err(RecordError::TickWithPayload(bytes.len())),
        Operation::LookupAccounts
        | Operation::LookupTransfers
        | Operation::GetAccountTransfers
        | Operation::GetAccountBalances => return Err(RecordError::NotAnInput(operation as u8)),
    };
    Ok(Command::Request(request))
}

#[cfg(test)]
mod tests {
    use tally_codecs::{Account, LimitProfile, Transfer};

    use super::*;

    #[test]
    fn every_mutation_round_trips_and_queries_are_refused() {
        let transfer = Transfer {
            id: 9,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 3,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        let commands = [
            Command::Request(Request::CreateAccounts(vec![Account {
                id: 1,
                ledger: 1,
                code: 1,
                ..Account::default()
            }])),
            Command::Request(Request::CreateTransfers(vec![transfer, Transfer { id: 10, ..transfer }])),
            Command::Request(Request::UpsertLimitProfiles(vec![LimitProfile {
                id: 4,
                ledger: 1,
                ..LimitProfile::default()
            }])),
            Command::Tick,
        ];
        for command in commands {
            let mut bytes = Vec::new();
            encode(&command, &mut bytes);
            let decoded = decode(command.operation() as u8, &bytes).expect("an encoded input decodes");
            assert_eq!(decoded, command);
        }
        assert!(matches!(decode(Operation::LookupAccounts as u8, &[]), Err(RecordError::NotAnInput(_))));
        assert!(matches!(decode(200, &[]), Err(RecordError::NotAnInput(200))));
        assert!(matches!(decode(Operation::Tick as u8, &[0]), Err(RecordError::TickWithPayload(1))));
        assert!(matches!(decode(Operation::CreateTransfers as u8, &[5]), Err(RecordError::Payload { .. })));
    }
}
