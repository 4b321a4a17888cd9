//! How an input becomes a journal record and back: the operation byte plus the payload.

use tally_codecs::wire::Request;
use tally_codecs::{Account, LimitProfile, Operation, Transfer};
use tally_engine::pipeline::Command;

/// Why a journal record does not decode to an input. The journal has already checked the
/// record's checksum and chain, so this means a record from another format version.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("operation {0} is not an input the journal holds")]
    NotAnInput(u8),
    #[error("{operation} payload of {payload_bytes} bytes is not a whole number of records")]
    Misaligned { operation: &'static str, payload_bytes: usize },
    #[error("a tick carries no payload, found {0} bytes")]
    TickWithPayload(usize),
}

/// Appends the payload of `command` (a mutation) to `out`. Queries never reach the
/// journal; asked for one, this writes nothing.
pub fn encode(command: &Command, out: &mut Vec<u8>) {
    match command {
        Command::Request(Request::CreateAccounts(accounts)) => out.extend_from_slice(bytemuck::cast_slice(accounts)),
        Command::Request(Request::CreateTransfers(transfers)) => {
            out.extend_from_slice(bytemuck::cast_slice(transfers));
        }
        Command::Request(Request::UpsertLimitProfiles(profiles)) => {
            out.extend_from_slice(bytemuck::cast_slice(profiles));
        }
        Command::Tick | Command::Request(_) => {}
    }
}

/// The input a journal record holds.
pub fn decode(operation: u8, payload: &[u8]) -> Result<Command, RecordError> {
    let request = match Operation::from_u8(operation) {
        Some(Operation::CreateAccounts) => {
            Request::CreateAccounts(records::<Account>(Operation::CreateAccounts, payload)?)
        }
        Some(Operation::CreateTransfers) => {
            Request::CreateTransfers(records::<Transfer>(Operation::CreateTransfers, payload)?)
        }
        Some(Operation::UpsertLimitProfiles) => {
            Request::UpsertLimitProfiles(records::<LimitProfile>(Operation::UpsertLimitProfiles, payload)?)
        }
        Some(Operation::Tick) if payload.is_empty() => return Ok(Command::Tick),
        Some(Operation::Tick) => return Err(RecordError::TickWithPayload(payload.len())),
        Some(_) | None => return Err(RecordError::NotAnInput(operation)),
    };
    Ok(Command::Request(request))
}

fn records<T: bytemuck::Pod>(operation: Operation, payload: &[u8]) -> Result<Vec<T>, RecordError> {
    if !payload.len().is_multiple_of(size_of::<T>()) {
        return Err(RecordError::Misaligned { operation: operation.name(), payload_bytes: payload.len() });
    }
    // Copied, not cast in place: the mapping gives no alignment guarantee for u128 fields.
    Ok(bytemuck::pod_collect_to_vec(payload))
}
