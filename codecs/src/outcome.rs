//! The outcome stream's entry: what one journal record did, for sinks.
//!
//! Every journal sequence has exactly one entry (ticks included), so a reader sees a gap
//! as a missing sequence. An entry holds the input's records and their results, and what
//! the ledger committed because of it: the transfers as stored (with the amount a
//! balancing or partial post settled on, and a post's or void's inherited accounts), the
//! accounts it touched as they are afterwards, and the pending transfers a tick expired.
//! A sink never has to re-derive ledger semantics from the inputs.
//!
//! Layout (little-endian): an [`OutcomeHeader`] of 48 bytes, then the body: `events`
//! results (16 bytes each), `events` input records (128 bytes for accounts and transfers,
//! 80 for limit profiles, none for a tick), `transfers` stored transfers (128 bytes each),
//! `accounts` accounts (128 bytes each), `expired` pending transfer ids (16 bytes each).
//! The checksum is CRC32C over the header with the checksum zeroed, then the body.

use bytemuck::{Pod, Zeroable};

use crate::{Account, EventResult, LimitProfile, Operation, Transfer};

/// "TOUT" as a little-endian u32.
pub const OUTCOME_MAGIC: u32 = u32::from_le_bytes(*b"TOUT");
pub const OUTCOME_HEADER_BYTES: usize = size_of::<OutcomeHeader>();
/// The most events one entry can carry (one request's worth), and the most committed
/// transfers, touched accounts or expired ids: a tick can expire many pending transfers,
/// so the limit is generous, but it bounds what a damaged header can make a reader
/// allocate.
pub const OUTCOME_ITEMS_MAX: u32 = 1 << 20;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OutcomeHeader {
    pub magic: u32,
    pub operation: u8,
    pub reserved: [u8; 3],
    pub checksum: u32,
    pub events: u32,
    pub transfers: u32,
    pub accounts: u32,
    pub expired: u32,
    /// Bytes of the body after the header.
    pub body_bytes: u32,
    /// The journal sequence of the input.
    pub sequence: u64,
    /// The input's timestamp as journaled.
    pub timestamp: u64,
}

const _: () = assert!(size_of::<OutcomeHeader>() == 48);

impl OutcomeHeader {
    fn checksum_of(&self, body: &[u8]) -> u32 {
        let zeroed = OutcomeHeader { checksum: 0, ..*self };
        crc32c::crc32c_append(crc32c::crc32c(bytemuck::bytes_of(&zeroed)), body)
    }
}

/// The input records of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeEvents {
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
    LimitProfiles(Vec<LimitProfile>),
    Tick,
}

/// One decoded entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub sequence: u64,
    pub timestamp: u64,
    /// The entry's checksum as stored (CRC32C of its header and body). Entries are a
    /// function of the journal, so two nodes' entries at a sequence have the same
    /// checksum exactly when they record the same input after the same history (as far
    /// as a 32-bit checksum tells): a sink keeps it beside its watermark to notice that
    /// the stream it resumes from is another history.
    pub checksum: u32,
    pub events: OutcomeEvents,
    pub results: Vec<EventResult>,
    /// Transfers committed by this input, as the ledger stored them.
    pub transfers: Vec<Transfer>,
    /// Accounts created or changed by this input, as they are after it.
    pub accounts: Vec<Account>,
    /// Pending transfers a tick expired.
    pub expired: Vec<u128>,
}

/// What an entry is made of, borrowed, for the writer.
pub struct OutcomeParts<'a> {
    pub sequence: u64,
    pub timestamp: u64,
    pub operation: Operation,
    /// The input records' bytes (a slice of accounts, transfers or limit profiles).
    pub events: &'a [u8],
    pub results: &'a [EventResult],
    pub transfers: &'a [Transfer],
    pub accounts: &'a [Account],
    pub expired: &'a [u128],
}

/// Why bytes are not an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    /// The bytes end before the entry does (or hold zeros: nothing was written there).
    #[error("the entry is incomplete")]
    Incomplete,
    #[error("the entry is damaged: {0}")]
    Damaged(&'static str),
}

/// Bytes of one input record of `operation`; `None` for operations without an entry.
pub fn record_bytes_of(operation: Operation) -> Option<usize> {
    match operation {
        Operation::CreateAccounts => Some(size_of::<Account>()),
        Operation::CreateTransfers => Some(size_of::<Transfer>()),
        Operation::UpsertLimitProfiles => Some(size_of::<LimitProfile>()),
        Operation::Tick => Some(0),
        _ => None,
    }
}

/// Appends the entry to `out`.
pub fn encode_outcome(parts: &OutcomeParts<'_>, out: &mut Vec<u8>) {
    let count = |items: usize| u32::try_from(items).expect("invariant: an entry's item counts fit in u32");
    let start = out.len();
    out.extend_from_slice(&[0; OUTCOME_HEADER_BYTES]);
    out.extend_from_slice(bytemuck::cast_slice(parts.results));
    out.extend_from_slice(parts.events);
    out.extend_from_slice(bytemuck::cast_slice(parts.transfers));
    out.extend_from_slice(bytemuck::cast_slice(parts.accounts));
    out.extend_from_slice(bytemuck::cast_slice(parts.expired));
    let body = &out[start + OUTCOME_HEADER_BYTES..];
    let mut header = OutcomeHeader {
        magic: OUTCOME_MAGIC,
        operation: parts.operation as u8,
        reserved: [0; 3],
        checksum: 0,
        events: count(parts.results.len()),
        transfers: count(parts.transfers.len()),
        accounts: count(parts.accounts.len()),
        expired: count(parts.expired.len()),
        body_bytes: count(body.len()),
        sequence: parts.sequence,
        timestamp: parts.timestamp,
    };
    header.checksum = header.checksum_of(body);
    out[start..start + OUTCOME_HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
}

/// Reads the header at the start of `bytes` and checks the entry it announces, without
/// decoding the body. Returns the header and the entry's length in bytes.
pub fn check_outcome(bytes: &[u8]) -> Result<(OutcomeHeader, usize), OutcomeError> {
    let Some(head) = bytes.get(..OUTCOME_HEADER_BYTES) else { return Err(OutcomeError::Incomplete) };
    let header: OutcomeHeader = bytemuck::pod_read_unaligned(head);
    if header.magic == 0 {
        return Err(OutcomeError::Incomplete);
    }
    if header.magic != OUTCOME_MAGIC {
        return Err(OutcomeError::Damaged("bad magic"));
    }
    let operation = Operation::from_u8(header.operation).ok_or(OutcomeError::Damaged("unknown operation"))?;
    let record_bytes = record_bytes_of(operation).ok_or(OutcomeError::Damaged("not a mutation"))?;
    let counts = [header.events, header.transfers, header.accounts, header.expired];
    if counts.iter().any(|&count| count > OUTCOME_ITEMS_MAX) {
        return Err(OutcomeError::Damaged("an item count is too large"));
    }
    let [events, transfers, accounts, expired] = counts.map(|count| count as usize);
    let body_bytes = events * (size_of::<EventResult>() + record_bytes)
        + transfers * size_of::<Transfer>()
        + accounts * size_of::<Account>()
        + expired * size_of::<u128>();
    if body_bytes != header.body_bytes as usize {
        return Err(OutcomeError::Damaged("the body length does not match the counts"));
    }
    let end = OUTCOME_HEADER_BYTES + body_bytes;
    let Some(body) = bytes.get(OUTCOME_HEADER_BYTES..end) else { return Err(OutcomeError::Incomplete) };
    if header.checksum_of(body) != header.checksum {
        return Err(OutcomeError::Damaged("checksum mismatch"));
    }
    Ok((header, end))
}

/// Decodes the entry at the start of `bytes`; returns it and its length in bytes.
pub fn decode_outcome(bytes: &[u8]) -> Result<(Outcome, usize), OutcomeError> {
    let (header, length) = check_outcome(bytes)?;
    let mut body = &bytes[OUTCOME_HEADER_BYTES..length];
    let mut take = |items: u32, item_bytes: usize| {
        let (taken, rest) = body.split_at(items as usize * item_bytes);
        body = rest;
        taken
    };
    let results = bytemuck::pod_collect_to_vec(take(header.events, size_of::<EventResult>()));
    let operation = Operation::from_u8(header.operation).ok_or(OutcomeError::Damaged("unknown operation"))?;
    let record_bytes = record_bytes_of(operation).ok_or(OutcomeError::Damaged("not a mutation"))?;
    let records = take(header.events, record_bytes);
    let events = match operation {
        Operation::CreateAccounts => OutcomeEvents::Accounts(bytemuck::pod_collect_to_vec(records)),
        Operation::CreateTransfers => OutcomeEvents::Transfers(bytemuck::pod_collect_to_vec(records)),
        Operation::UpsertLimitProfiles => OutcomeEvents::LimitProfiles(bytemuck::pod_collect_to_vec(records)),
        _ => OutcomeEvents::Tick,
    };
    let transfers = bytemuck::pod_collect_to_vec(take(header.transfers, size_of::<Transfer>()));
    let accounts = bytemuck::pod_collect_to_vec(take(header.accounts, size_of::<Account>()));
    let expired = bytemuck::pod_collect_to_vec(take(header.expired, size_of::<u128>()));
    let outcome = Outcome {
        sequence: header.sequence,
        timestamp: header.timestamp,
        checksum: header.checksum,
        events,
        results,
        transfers,
        accounts,
        expired,
    };
    Ok((outcome, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &mut Vec<u8>) -> Outcome {
        let transfer =
            Transfer { id: 7, debit_account_id: 1, credit_account_id: 2, amount: 5, ledger: 1, ..Default::default() };
        let account = Account { id: 1, debits_posted: 5, ledger: 1, ..Default::default() };
        let result = EventResult { timestamp: 99, status: 0, reserved: 0 };
        let events = [transfer];
        let parts = OutcomeParts {
            sequence: 3,
            timestamp: 90,
            operation: Operation::CreateTransfers,
            events: bytemuck::cast_slice(&events),
            results: &[result],
            transfers: &[Transfer { timestamp: 99, ..transfer }],
            accounts: &[account],
            expired: &[11],
        };
        let start = out.len();
        encode_outcome(&parts, out);
        let header: OutcomeHeader = bytemuck::pod_read_unaligned(&out[start..start + OUTCOME_HEADER_BYTES]);
        Outcome {
            sequence: 3,
            timestamp: 90,
            checksum: header.checksum,
            events: OutcomeEvents::Transfers(vec![transfer]),
            results: vec![result],
            transfers: vec![Transfer { timestamp: 99, ..transfer }],
            accounts: vec![account],
            expired: vec![11],
        }
    }

    #[test]
    fn an_entry_decodes_to_what_was_encoded() {
        let mut bytes = Vec::new();
        let expected = sample(&mut bytes);
        assert_eq!(decode_outcome(&bytes), Ok((expected, bytes.len())));
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_refused() {
        let mut bytes = Vec::new();
        sample(&mut bytes);
        for cut in 0..bytes.len() {
            assert!(decode_outcome(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[index] ^= 1 << bit;
                assert!(decode_outcome(&damaged).is_err(), "bit {bit} of byte {index}");
            }
        }
    }
}
