//! Integers wider than a JSON reader can be trusted with.
//!
//! Most JSON readers hold numbers as f64 and silently round anything past 2^53, so u128
//! values are written as decimal strings. Input accepts either form for every integer
//! field. `parse_request` hands a literal past 64 bits over as its exact digits (see
//! `literals`); a reader of one's own that rounds it to an f64 first gets a refusal with
//! a hint to use a string.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A u128 field: written as a decimal string, read from a string or a JSON number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct U128(pub(crate) u128);

/// A u64 field: written as a JSON number, read from a JSON number or a decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct U64(pub(crate) u64);

impl Serialize for U128 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for U128 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = IntegerVisitor { max: u128::MAX, type_name: "u128" };
        deserializer.deserialize_any(visitor).map(U128)
    }
}

impl Serialize for U64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = IntegerVisitor { max: u128::from(u64::MAX), type_name: "u64" };
        let value = deserializer.deserialize_any(visitor)?;
        u64::try_from(value).map(U64).map_err(|_| de::Error::custom("u64 out of range"))
    }
}

/// Reads a u32 field from a JSON number or a decimal string (`"limit_profile": "7"`).
pub(crate) fn u32_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = deserializer.deserialize_any(IntegerVisitor { max: u128::from(u32::MAX), type_name: "u32" })?;
    u32::try_from(value).map_err(|_| de::Error::custom("u32 out of range"))
}

/// Reads a u16 field from a JSON number or a decimal string.
pub(crate) fn u16_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let value = deserializer.deserialize_any(IntegerVisitor { max: u128::from(u16::MAX), type_name: "u16" })?;
    u16::try_from(value).map_err(|_| de::Error::custom("u16 out of range"))
}

/// Reads a non-negative integer no larger than `max` from a JSON number or decimal string.
struct IntegerVisitor {
    max: u128,
    type_name: &'static str,
}

impl IntegerVisitor {
    fn check<E: de::Error>(&self, value: u128, shown: &dyn fmt::Display) -> Result<u128, E> {
        if value > self.max {
            return Err(E::custom(format!(
                "{} `{shown}` is out of range: the largest is {}",
                self.type_name, self.max
            )));
        }
        Ok(value)
    }

    fn invalid<E: de::Error>(&self, shown: &dyn fmt::Display, why: &str) -> E {
        E::custom(format!("invalid {} `{shown}`: {why}", self.type_name))
    }
}

impl Visitor<'_> for IntegerVisitor {
    type Value = u128;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a non-negative integer ({}) as a JSON number or a decimal string", self.type_name)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u128, E> {
        self.check(u128::from(value), &value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u128, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(self.invalid(&value, "negative")),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u128, E> {
        // 2^64 as f64 is exact; a whole number at or above it was an integer literal too big
        // for the parser, already rounded, so the only safe answer is to ask for a string.
        const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;
        let why = if value.is_sign_negative() {
            "negative"
        } else if value.fract() == 0.0 && value >= TWO_TO_THE_64 {
            "too large for a JSON number, write it as a decimal string"
        } else {
            "not an integer"
        };
        Err(self.invalid(&value, why))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<u128, E> {
        let value = parse_decimal(text).map_err(|why| self.invalid(&text, why))?;
        self.check(value, &text)
    }
}

/// Parses plain ASCII digits. Stricter than `u128::from_str`, which also takes a leading
/// `+`: a ledger id has one spelling.
fn parse_decimal(text: &str) -> Result<u128, &'static str> {
    if text.is_empty() {
        return Err("empty string");
    }
    if text.starts_with('-') {
        return Err("negative");
    }
    let mut value: u128 = 0;
    for byte in text.bytes() {
        let digit = match byte {
            b'0'..=b'9' => u128::from(byte - b'0'),
            b'.' | b'e' | b'E' => return Err("not an integer"),
            _ => return Err("not a decimal integer"),
        };
        value = value
            .checked_mul(10)
            .and_then(|value| value.checked_add(digit))
            .ok_or("out of range: the largest u128 is 340282366920938463463374607431768211455")?;
    }
    Ok(value)
}
