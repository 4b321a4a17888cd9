//! Rows in PostgreSQL's binary `COPY` format (`COPY … FROM STDIN (FORMAT binary)`), with
//! `numeric` written straight from a `u128`'s base-10 000 digits.
//!
//! Why: with text `COPY` the backend spent 6–7 % of its time in `numeric_in` and more
//! splitting lines into fields (perf-reports/2026-12-04-settlement.md). In binary form
//! each field is its length and its value, and a `numeric` is its digits in PostgreSQL's
//! own base, which `numeric_recv` only checks and copies.
//!
//! The format (PostgreSQL documentation, "COPY", "Binary Format"): a signature, flags and
//! a header extension length; per row the field count (int16) and per field its length in
//! bytes (int32, -1 for NULL) and its bytes, integers big-endian; a trailer of -1 (int16).

/// The binary `COPY` signature, then flags (no OIDs) and header extension length, both 0.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
const TRAILER: &[u8] = &[0xff, 0xff];
/// PostgreSQL's `numeric` base: each digit it stores is 0..=9 999.
const NUMERIC_BASE: u64 = 10_000;
/// `u128::MAX` has 39 decimal digits, so at most 10 base-10 000 digits.
const NUMERIC_DIGITS_MAX: usize = 10;
/// Four base-10 000 digits fit a `u64` chunk: 10^16.
const CHUNK: u128 = 10_000_000_000_000_000;
/// `numeric`'s sign word for a value that is not negative.
const NUMERIC_POSITIVE: u16 = 0x0000;

/// A `COPY` payload under construction, rows of `fields` fields each, sent on in chunks
/// (`drain_to`) so that PostgreSQL parses one while the next is encoded.
pub struct BinaryRows {
    /// Encoded and not yet drained.
    bytes: Vec<u8>,
    fields: i16,
    /// Fields still to write in the current row.
    fields_left: i16,
    rows: usize,
    finished: bool,
}

impl BinaryRows {
    pub fn new(fields: i16) -> BinaryRows {
        assert!(fields > 0, "a row has at least one field");
        BinaryRows { bytes: Vec::new(), fields, fields_left: 0, rows: 0, finished: false }
    }

    /// Bytes encoded since the last `drain_to`.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Starts a row; the previous one must be complete.
    pub fn row(&mut self) {
        assert_eq!(self.fields_left, 0, "the previous row is complete");
        assert!(!self.finished, "no row after the trailer");
        if self.rows == 0 {
            self.bytes.extend_from_slice(HEADER);
        }
        self.bytes.extend_from_slice(&self.fields.to_be_bytes());
        self.fields_left = self.fields;
        self.rows += 1;
    }

    fn field(&mut self, length: i32) {
        assert!(self.fields_left > 0, "a field beyond the row's {}", self.fields);
        self.fields_left -= 1;
        self.bytes.extend_from_slice(&length.to_be_bytes());
    }

    pub fn null(&mut self) {
        self.field(-1);
    }

    /// A `bigint` (int8) field.
    pub fn bigint(&mut self, value: i64) {
        self.field(8);
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    /// An `integer` (int4) field.
    pub fn integer(&mut self, value: i32) {
        self.field(4);
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    /// A `text` field (its UTF-8 bytes; the labels written here are a few ASCII bytes).
    pub fn text(&mut self, value: &str) {
        let length = i32::try_from(value.len()).expect("a text field is a short label");
        self.field(length);
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// A `numeric` field holding `value`: ndigits, weight, sign and display scale (int16
    /// each), then the digits, most significant first.
    pub fn numeric(&mut self, value: u128) {
        let (digits, count) = numeric_digits(value);
        // The digits are least significant first; trailing (least significant) zeros
        // need not be stored: the weight places the rest.
        let zeros = digits[..count].iter().take_while(|&&digit| digit == 0).count();
        let stored = count - zeros;
        let mut encoded = [0u8; 8 + 2 * NUMERIC_DIGITS_MAX];
        // stored <= count <= 10: these casts are exact.
        let weight = count.saturating_sub(1) as u16;
        for (slot, word) in encoded.chunks_exact_mut(2).zip([stored as u16, weight, NUMERIC_POSITIVE, 0]) {
            slot.copy_from_slice(&word.to_be_bytes());
        }
        for (slot, digit) in encoded[8..].chunks_exact_mut(2).zip(digits[zeros..count].iter().rev()) {
            slot.copy_from_slice(&digit.to_be_bytes());
        }
        let length = 8 + 2 * stored;
        self.field(length as i32);
        self.bytes.extend_from_slice(&encoded[..length]);
    }

    /// Ends the payload with its trailer (nothing if no row was written: no `COPY`
    /// payload at all); `drain_to` sends it on.
    pub fn finish(&mut self) {
        assert_eq!(self.fields_left, 0, "the last row is complete");
        if self.rows > 0 && !self.finished {
            self.bytes.extend_from_slice(TRAILER);
        }
        self.finished = true;
    }

    /// Writes what is buffered to `writer` and empties the buffer (keeping its memory).
    pub fn drain_to(&mut self, writer: &mut impl std::io::Write) -> std::io::Result<()> {
        writer.write_all(&self.bytes)?;
        self.bytes.clear();
        Ok(())
    }
}

/// `value`'s base-10 000 digits, least significant first, and how many there are (0 for
/// zero, as PostgreSQL stores it). `u64` arithmetic (which the compiler turns into
/// multiplications) for values that fit, one or two `u128` divisions beyond; a `u128`
/// division is a library call, a fifth of the sink's time when every field paid it.
fn numeric_digits(value: u128) -> ([u16; NUMERIC_DIGITS_MAX], usize) {
    let (low, rest) = split_chunk(value);
    let (middle, top) = split_chunk(rest);
    let top = u64::try_from(top).expect("u128::MAX / 10^32 is below 3.5 * 10^6");
    let mut digits = [0u16; NUMERIC_DIGITS_MAX];
    let mut count = 0;
    // Four digits from each 10^16 chunk (constant divisors: multiplications); the top
    // chunk holds at most two.
    let mut index = 0;
    for mut chunk in [low, middle, top] {
        for _ in 0..4 {
            if index == NUMERIC_DIGITS_MAX {
                break;
            }
            // A remainder of 10 000 fits a u16.
            let digit = (chunk % NUMERIC_BASE) as u16;
            chunk /= NUMERIC_BASE;
            digits[index] = digit;
            if digit != 0 {
                count = index + 1;
            }
            index += 1;
        }
        assert_eq!(chunk, 0, "a chunk is at most four digits");
    }
    (digits, count)
}

/// `value` as (`value % 10^16`, `value / 10^16`), in `u64` arithmetic where it fits.
fn split_chunk(value: u128) -> (u64, u128) {
    const CHUNK_U64: u64 = CHUNK as u64;
    match u64::try_from(value) {
        Ok(small) => (small % CHUNK_U64, u128::from(small / CHUNK_U64)),
        Err(_) => {
            let quotient = value / CHUNK;
            // The remainder is below 10^16, so it fits a u64.
            ((value - quotient * CHUNK) as u64, quotient)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits back as a number, most significant first, the way PostgreSQL reads them.
    fn value_of(digits: &[u16], count: usize) -> u128 {
        digits[..count].iter().rev().fold(0u128, |value, &digit| value * 10_000 + u128::from(digit))
    }

    #[test]
    fn numeric_digits_are_base_10000_and_give_back_the_value() {
        let u64_max = u128::from(u64::MAX);
        for value in
            [0, 1, 9_999, 10_000, 10_001, 99_990_000, CHUNK - 1, CHUNK, u64_max, u64_max + 1, CHUNK * CHUNK, u128::MAX]
        {
            let (digits, count) = numeric_digits(value);
            assert!(digits.iter().all(|&digit| u64::from(digit) < NUMERIC_BASE), "{value}: {digits:?}");
            assert_eq!(value_of(&digits, count), value);
            let decimal = value.to_string().len();
            let expected = if value == 0 { 0 } else { decimal.div_ceil(4) };
            assert_eq!(count, expected, "{value} has {decimal} decimal digits");
        }
    }

    #[test]
    fn numeric_fields_are_written_as_numeric_send_writes_them() {
        let mut rows = BinaryRows::new(3);
        rows.row();
        rows.numeric(0);
        rows.numeric(10_000);
        rows.numeric(12_345);
        rows.finish();
        let mut bytes = Vec::new();
        rows.drain_to(&mut bytes).expect("write to a Vec");
        let fields = &bytes[HEADER.len() + 2..bytes.len() - TRAILER.len()];
        let expected: &[u8] = &[
            0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, // 0: no digits
            0, 0, 0, 10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, // 10 000: one digit 1 of weight 1
            0, 0, 0, 12, 0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0x09, 0x29, // 1 2345
        ];
        assert_eq!(fields, expected);
    }

    #[test]
    #[should_panic(expected = "a field beyond the row")]
    fn a_row_with_too_many_fields_is_refused() {
        let mut rows = BinaryRows::new(1);
        rows.row();
        rows.bigint(1);
        rows.bigint(2);
    }

    #[test]
    fn no_rows_is_an_empty_payload_and_drained_chunks_add_up_to_the_whole() {
        let mut bytes = Vec::new();
        let mut rows = BinaryRows::new(2);
        rows.finish();
        rows.drain_to(&mut bytes).expect("write to a Vec");
        assert!(bytes.is_empty());

        let mut rows = BinaryRows::new(2);
        rows.row();
        rows.null();
        rows.integer(1);
        rows.drain_to(&mut bytes).expect("write to a Vec");
        assert_eq!(rows.buffered_bytes(), 0);
        rows.row();
        rows.text("debit");
        rows.bigint(-1);
        rows.finish();
        rows.drain_to(&mut bytes).expect("write to a Vec");
        let row_bytes = [2 + 4 + 4 + 4, 2 + 4 + 5 + 4 + 8];
        assert_eq!(bytes.len(), HEADER.len() + row_bytes[0] + row_bytes[1] + TRAILER.len());
        assert!(bytes.starts_with(HEADER) && bytes.ends_with(TRAILER), "one header, one trailer");
    }
}
