//! Compact journal payloads. The journal holds every input; at ~200 MB/s of disk a
//! 128-byte transfer caps durable throughput at ~1.5 M transfers/s, so transfers are
//! stored as a presence bitmap plus LEB128 varints (≈ 9 bytes for a typical transfer).
//! Accounts and limit profiles are rare and stored as their fixed 128/80-byte records.
//!
//! Transfer batch: `varint count`, then per transfer `u16 LE presence bitmap` followed by
//! the present fields in bit order:
//!
//! | bit | field | present when | encoded as |
//! |---|---|---|---|
//! | 0 | id | id ≠ previous id + 1 | zigzag(id − (previous id + 1)) |
//! | 1–5 | debit/credit account id, amount, pending id, user_data_128 | ≠ 0 | varint |
//! | 6–8 | user_data_64, user_data_32, timeout | ≠ 0 | varint |
//! | 9–11 | ledger, code, flags | ≠ previous transfer's | varint |
//! | 12 | timestamp | ≠ 0 | varint |
//!
//! "Previous" starts as all zeros for the first transfer. Bits 13–15 are reserved (zero).
//! The encoding is canonical: a decoder refuses a present field holding its default and a
//! varint with redundant bytes, so `encode(decode(bytes)) == bytes` for every accepted
//! input, and decoding never allocates for more than [`EVENTS_PER_PAYLOAD_MAX`] events.

use bytemuck::Pod;

use crate::records::{Account, LimitProfile, Transfer};

/// Most events in one payload: one request's worth.
pub const EVENTS_PER_PAYLOAD_MAX: usize = crate::wire::EVENTS_PER_REQUEST_MAX;

/// The longest LEB128 encoding of a u128: ceil(128 / 7) bytes.
const VARINT_BYTES_MAX: usize = 19;
const BITMAP_BYTES: usize = 2;
const BITS_USED: u16 = (1 << 13) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload ends in the middle of an event")]
    Truncated,
    #[error("varint has redundant bytes or exceeds its field")]
    OverlongVarint,
    #[error("{0} bytes follow the last event")]
    TrailingBytes(usize),
    #[error("payload claims {0} events; at most {EVENTS_PER_PAYLOAD_MAX} are allowed")]
    TooManyEvents(u64),
    #[error("reserved presence bits are set")]
    ReservedBits,
    #[error("a present field holds the value it would have if absent (non-canonical)")]
    NonCanonical,
}

/// Appends the compact encoding of `transfers` to `out`.
pub fn encode_transfers(transfers: &[Transfer], out: &mut Vec<u8>) {
    put_varint(out, transfers.len() as u128);
    let mut previous = Transfer::default();
    for transfer in transfers {
        encode_transfer(transfer, &previous, out);
        previous = *transfer;
    }
}

fn encode_transfer(transfer: &Transfer, previous: &Transfer, out: &mut Vec<u8>) {
    let expected_id = previous.id.wrapping_add(1);
    let fields: [(bool, u128); 13] = [
        (transfer.id != expected_id, zigzag(transfer.id.wrapping_sub(expected_id))),
        (transfer.debit_account_id != 0, transfer.debit_account_id),
        (transfer.credit_account_id != 0, transfer.credit_account_id),
        (transfer.amount != 0, transfer.amount),
        (transfer.pending_id != 0, transfer.pending_id),
        (transfer.user_data_128 != 0, transfer.user_data_128),
        (transfer.user_data_64 != 0, u128::from(transfer.user_data_64)),
        (transfer.user_data_32 != 0, u128::from(transfer.user_data_32)),
        (transfer.timeout != 0, u128::from(transfer.timeout)),
        (transfer.ledger != previous.ledger, u128::from(transfer.ledger)),
        (transfer.code != previous.code, u128::from(transfer.code)),
        (transfer.flags != previous.flags, u128::from(transfer.flags)),
        (transfer.timestamp != 0, u128::from(transfer.timestamp)),
    ];
    let bitmap =
        fields.iter().enumerate().fold(0u16, |bitmap, (bit, (present, _))| bitmap | (u16::from(*present) << bit));
    out.extend_from_slice(&bitmap.to_le_bytes());
    for (_, value) in fields.iter().filter(|(present, _)| *present) {
        put_varint(out, *value);
    }
}

/// Decodes a transfer batch into `out` (cleared first).
pub fn decode_transfers(bytes: &[u8], out: &mut Vec<Transfer>) -> Result<(), PayloadError> {
    out.clear();
    let mut reader = Reader { bytes, at: 0 };
    let count = reader.count(BITMAP_BYTES)?;
    out.reserve_exact(count);
    let mut previous = Transfer::default();
    for _ in 0..count {
        let transfer = decode_transfer(&mut reader, &previous)?;
        out.push(transfer);
        previous = transfer;
    }
    reader.finish()
}

fn decode_transfer(reader: &mut Reader<'_>, previous: &Transfer) -> Result<Transfer, PayloadError> {
    let bitmap = u16::from_le_bytes(reader.take::<BITMAP_BYTES>()?);
    if bitmap & !BITS_USED != 0 {
        return Err(PayloadError::ReservedBits);
    }
    let present = |bit: u16| bitmap & (1 << bit) != 0;
    let expected_id = previous.id.wrapping_add(1);
    let id = match present(0) {
        true => expected_id.wrapping_add(unzigzag(reader.nonzero(u128::MAX)?)),
        false => expected_id,
    };
    let mut field = |bit: u16, max: u128, default: u128| -> Result<u128, PayloadError> {
        if !present(bit) {
            return Ok(default);
        }
        let value = reader.varint(max)?;
        if value == default { Err(PayloadError::NonCanonical) } else { Ok(value) }
    };
    // The narrowing casts below cannot truncate: each value was bounded by `max`.
    Ok(Transfer {
        id,
        debit_account_id: field(1, u128::MAX, 0)?,
        credit_account_id: field(2, u128::MAX, 0)?,
        amount: field(3, u128::MAX, 0)?,
        pending_id: field(4, u128::MAX, 0)?,
        user_data_128: field(5, u128::MAX, 0)?,
        user_data_64: field(6, u64::MAX.into(), 0)? as u64,
        user_data_32: field(7, u32::MAX.into(), 0)? as u32,
        timeout: field(8, u32::MAX.into(), 0)? as u32,
        ledger: field(9, u32::MAX.into(), previous.ledger.into())? as u32,
        code: field(10, u16::MAX.into(), previous.code.into())? as u16,
        flags: field(11, u16::MAX.into(), previous.flags.into())? as u16,
        timestamp: field(12, u64::MAX.into(), 0)? as u64,
    })
}

/// Appends `varint count` and the accounts' fixed 128-byte records.
pub fn encode_accounts(accounts: &[Account], out: &mut Vec<u8>) {
    encode_records(accounts, out);
}

pub fn decode_accounts(bytes: &[u8], out: &mut Vec<Account>) -> Result<(), PayloadError> {
    decode_records(bytes, out)
}

/// Appends `varint count` and the profiles' fixed 80-byte records.
pub fn encode_limit_profiles(profiles: &[LimitProfile], out: &mut Vec<u8>) {
    encode_records(profiles, out);
}

pub fn decode_limit_profiles(bytes: &[u8], out: &mut Vec<LimitProfile>) -> Result<(), PayloadError> {
    decode_records(bytes, out)
}

fn encode_records<T: Pod>(records: &[T], out: &mut Vec<u8>) {
    put_varint(out, records.len() as u128);
    out.extend_from_slice(bytemuck::cast_slice(records));
}

fn decode_records<T: Pod>(bytes: &[u8], out: &mut Vec<T>) -> Result<(), PayloadError> {
    out.clear();
    let mut reader = Reader { bytes, at: 0 };
    let count = reader.count(size_of::<T>())?;
    let body = &bytes[reader.at..];
    let expected = count * size_of::<T>();
    if body.len() > expected {
        return Err(PayloadError::TrailingBytes(body.len() - expected));
    }
    // The payload is not aligned for T inside a journal record, so read each record
    // unaligned rather than casting the slice.
    out.extend(body.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned::<T>));
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        let end = self.at.checked_add(N).ok_or(PayloadError::Truncated)?;
        let taken = self.bytes.get(self.at..end).ok_or(PayloadError::Truncated)?;
        self.at = end;
        taken.try_into().map_err(|_| PayloadError::Truncated)
    }

    /// The event count, refused before any allocation when above the maximum or when the
    /// remaining bytes cannot hold that many events of at least `event_bytes_min`.
    fn count(&mut self, event_bytes_min: usize) -> Result<usize, PayloadError> {
        let count = self.varint(u128::from(u64::MAX))? as u64;
        if count > EVENTS_PER_PAYLOAD_MAX as u64 {
            return Err(PayloadError::TooManyEvents(count));
        }
        let count = count as usize;
        if count * event_bytes_min > self.bytes.len() - self.at {
            return Err(PayloadError::Truncated);
        }
        Ok(count)
    }

    /// A LEB128 varint of at most `max`, with no redundant trailing zero groups.
    fn varint(&mut self, max: u128) -> Result<u128, PayloadError> {
        let mut value = 0u128;
        for index in 0..VARINT_BYTES_MAX {
            let byte = *self.bytes.get(self.at).ok_or(PayloadError::Truncated)?;
            self.at += 1;
            let group = u128::from(byte & 0x7f);
            let shift = 7 * index as u32;
            if shift > 0 && group.leading_zeros() < shift {
                return Err(PayloadError::OverlongVarint);
            }
            value |= group << shift;
            if byte & 0x80 == 0 {
                if index > 0 && group == 0 {
                    return Err(PayloadError::OverlongVarint);
                }
                return if value <= max { Ok(value) } else { Err(PayloadError::OverlongVarint) };
            }
        }
        Err(PayloadError::OverlongVarint)
    }

    /// A varint that must not be zero (a present delta of zero is non-canonical).
    fn nonzero(&mut self, max: u128) -> Result<u128, PayloadError> {
        match self.varint(max)? {
            0 => Err(PayloadError::NonCanonical),
            value => Ok(value),
        }
    }

    fn finish(&self) -> Result<(), PayloadError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            trailing => Err(PayloadError::TrailingBytes(trailing)),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Maps a two's-complement difference to an unsigned number, small for small |delta|.
fn zigzag(delta: u128) -> u128 {
    (delta << 1) ^ ((delta as i128 >> 127) as u128)
}

fn unzigzag(encoded: u128) -> u128 {
    (encoded >> 1) ^ (encoded & 1).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn small_or_any_u128() -> impl Strategy<Value = u128> {
        prop_oneof![Just(0u128), 1u128..1_000_000, any::<u128>()]
    }

    fn transfer() -> impl Strategy<Value = Transfer> {
        (
            (small_or_any_u128(), small_or_any_u128(), small_or_any_u128(), small_or_any_u128()),
            (small_or_any_u128(), small_or_any_u128(), any::<u64>(), any::<u32>()),
            (any::<u32>(), 0u32..3, 0u16..3, any::<u16>(), prop_oneof![Just(0u64), any::<u64>()]),
        )
            .prop_map(
                |((id, debit, credit, amount), (pending, ud128, ud64, ud32), (timeout, ledger, code, flags, ts))| {
                    Transfer {
                        id,
                        debit_account_id: debit,
                        credit_account_id: credit,
                        amount,
                        pending_id: pending,
                        user_data_128: ud128,
                        user_data_64: ud64,
                        user_data_32: ud32,
                        timeout,
                        ledger,
                        code,
                        flags,
                        timestamp: ts,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn transfers_round_trip(transfers in prop::collection::vec(transfer(), 0..64)) {
            let mut bytes = Vec::new();
            encode_transfers(&transfers, &mut bytes);
            let mut decoded = Vec::new();
            decode_transfers(&bytes, &mut decoded).expect("own encoding decodes");
            prop_assert_eq!(&decoded, &transfers);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_accepted_bytes_are_canonical(
            bytes in prop::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut transfers = Vec::new();
            if decode_transfers(&bytes, &mut transfers).is_ok() {
                let mut encoded = Vec::new();
                encode_transfers(&transfers, &mut encoded);
                prop_assert_eq!(encoded, bytes.clone());
            }
            let mut accounts = Vec::new();
            let _ = decode_accounts(&bytes, &mut accounts);
            let mut profiles = Vec::new();
            let _ = decode_limit_profiles(&bytes, &mut profiles);
        }

        #[test]
        fn accounts_and_limit_profiles_round_trip(seeds in prop::collection::vec(any::<[u8; 128]>(), 0..16)) {
            let accounts: Vec<Account> = seeds.iter().map(|seed| bytemuck::pod_read_unaligned(seed)).collect();
            let profiles: Vec<LimitProfile> = seeds.iter().map(|seed| bytemuck::pod_read_unaligned(&seed[..80])).collect();
            let (mut bytes, mut decoded) = (Vec::new(), Vec::new());
            encode_accounts(&accounts, &mut bytes);
            decode_accounts(&bytes, &mut decoded).expect("decodes");
            prop_assert_eq!(decoded, accounts);
            let (mut bytes, mut decoded) = (vec![0xEE], Vec::new());
            encode_limit_profiles(&profiles, &mut bytes);
            // Offset by one byte: records inside a journal payload are not aligned.
            decode_limit_profiles(&bytes[1..], &mut decoded).expect("decodes unaligned");
            prop_assert_eq!(decoded, profiles);
        }
    }

    fn typical_batch(count: usize) -> Vec<Transfer> {
        // Deterministic pseudo-random accounts and amounts (xorshift), sequential ids.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|index| Transfer {
                id: 1_000_000 + index as u128,
                debit_account_id: 1 + u128::from(next() % 10_000),
                credit_account_id: 1 + u128::from(next() % 10_000),
                amount: 1 + u128::from(next() % 999_999),
                ledger: 1,
                code: 1,
                ..Transfer::default()
            })
            .collect()
    }

    #[test]
    fn typical_batch_is_under_twelve_bytes_per_transfer() {
        let transfers = typical_batch(EVENTS_PER_PAYLOAD_MAX);
        let mut bytes = Vec::new();
        encode_transfers(&transfers, &mut bytes);
        let per_transfer = bytes.len() as f64 / transfers.len() as f64;
        println!(
            "typical batch: {} transfers in {} bytes = {per_transfer:.2} bytes per transfer (raw: 128)",
            transfers.len(),
            bytes.len()
        );
        assert!(per_transfer < 12.0, "{per_transfer}");
    }

    #[test]
    fn counts_above_the_maximum_are_refused_before_allocating() {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, EVENTS_PER_PAYLOAD_MAX as u128 + 1);
        let mut transfers = Vec::new();
        assert_eq!(decode_transfers(&bytes, &mut transfers), Err(PayloadError::TooManyEvents(8190)));
        let mut bytes = Vec::new();
        put_varint(&mut bytes, 1_000);
        assert_eq!(decode_transfers(&bytes, &mut transfers), Err(PayloadError::Truncated));
        assert_eq!(transfers.capacity(), 0, "nothing reserved for a count the bytes cannot hold");
    }

    #[test]
    fn malformed_varints_trailing_bytes_and_reserved_bits_are_refused() {
        let mut transfers = Vec::new();
        // count 1, bitmap bit 1 (debit account), varint 0x80 0x00 (overlong zero).
        assert_eq!(decode_transfers(&[1, 2, 0, 0x80, 0x00], &mut transfers), Err(PayloadError::OverlongVarint));
        // A present field equal to its default.
        assert_eq!(decode_transfers(&[1, 2, 0, 0x00], &mut transfers), Err(PayloadError::NonCanonical));
        assert_eq!(decode_transfers(&[1, 0, 0x80], &mut transfers), Err(PayloadError::ReservedBits));
        assert_eq!(decode_transfers(&[1, 0, 0, 7], &mut transfers), Err(PayloadError::TrailingBytes(1)));
        assert_eq!(decode_transfers(&[1, 0x40], &mut transfers), Err(PayloadError::Truncated));
        // 19 continuation bytes never terminate a u128.
        let mut endless = vec![1, 2, 0];
        endless.extend([0xFF; 19]);
        assert_eq!(decode_transfers(&endless, &mut transfers), Err(PayloadError::OverlongVarint));
        // A 32-bit field given a 33-bit value.
        let mut wide = vec![1, 0, 1 << 1]; // bit 9 (ledger)
        put_varint(&mut wide, 1 << 32);
        assert_eq!(decode_transfers(&wide, &mut transfers), Err(PayloadError::OverlongVarint));
    }
}
