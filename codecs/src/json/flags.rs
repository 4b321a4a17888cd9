//! Flags as arrays of names, e.g. `["linked", "pending"]`, in bit order.
//!
//! A set bit without a name (a reserved bit) is written as its value, e.g. `[32]`, rather
//! than dropped: a record shown as JSON must not look different from what is stored. Input
//! accepts such numbers too, which is also how a client asks for a reserved bit on purpose
//! (to see `reserved_flag`). An unknown *name* is an error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One entry of a flags array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FlagEntry {
    Name(Cow<'static, str>),
    Bits(u32),
}

/// The entries that spell `bits`, one per set bit, lowest bit first.
pub(crate) fn to_entries<T: Copy + Into<u32>>(bits: T, table: &[(T, &'static str)]) -> Vec<FlagEntry> {
    let bits: u32 = bits.into();
    (0..u32::BITS)
        .map(|index| 1u32 << index)
        .filter(|bit| bits & bit != 0)
        .map(|bit| match table.iter().find(|(flag, _)| (*flag).into() == bit) {
            Some((_, name)) => FlagEntry::Name(Cow::Borrowed(name)),
            None => FlagEntry::Bits(bit),
        })
        .collect()
}

/// The bits that `entries` spell; `what` names the record in error messages.
pub(crate) fn from_entries<T>(entries: &[FlagEntry], table: &[(T, &'static str)], what: &str) -> Result<T, String>
where
    T: Copy + Into<u32> + TryFrom<u32>,
{
    let mut bits: u32 = 0;
    for entry in entries {
        bits |= match entry {
            FlagEntry::Name(name) => match table.iter().find(|(_, known)| known == name) {
                Some((flag, _)) => (*flag).into(),
                None => return Err(format!("unknown {what} flag `{name}`")),
            },
            FlagEntry::Bits(value) => *value,
        };
    }
    T::try_from(bits).map_err(|_| format!("{what} flags value {bits} does not fit the field"))
}

impl Serialize for FlagEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FlagEntry::Name(name) => serializer.serialize_str(name),
            FlagEntry::Bits(bits) => serializer.serialize_u32(*bits),
        }
    }
}

impl<'de> Deserialize<'de> for FlagEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FlagEntryVisitor)
    }
}

struct FlagEntryVisitor;

impl Visitor<'_> for FlagEntryVisitor {
    type Value = FlagEntry;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a flag name, or the value of a reserved bit")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<FlagEntry, E> {
        Ok(FlagEntry::Name(Cow::Owned(name.to_owned())))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<FlagEntry, E> {
        u32::try_from(value)
            .map(FlagEntry::Bits)
            .map_err(|_| E::custom(format!("flags value {value} does not fit 32 bits")))
    }
}
