//! The operations of the ledger. The numeric values appear in wire frames and journal
//! records: append, never renumber.

macro_rules! operations {
    ($($variant:ident = $value:literal => $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Operation {
            $($variant = $value,)*
        }

        impl Operation {
            pub const ALL: &'static [Operation] = &[$(Operation::$variant,)*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(Operation::$variant => $name,)*
                }
            }

            pub const fn from_u8(value: u8) -> Option<Operation> {
                match value {
                    $($value => Some(Operation::$variant),)*
                    _ => None,
                }
            }

            pub fn from_name(name: &str) -> Option<Operation> {
                match name {
                    $($name => Some(Operation::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

operations! {
    CreateAccounts = 1 => "create_accounts",
    CreateTransfers = 2 => "create_transfers",
    UpsertLimitProfiles = 3 => "upsert_limit_profiles",
    LookupAccounts = 4 => "lookup_accounts",
    LookupTransfers = 5 => "lookup_transfers",
    GetAccountTransfers = 6 => "get_account_transfers",
    GetAccountBalances = 7 => "get_account_balances",
    Tick = 8 => "tick",
}

impl Operation {
    /// Operations that change the ledger and therefore go through the journal.
    pub const fn is_mutation(self) -> bool {
        matches!(
            self,
            Operation::CreateAccounts | Operation::CreateTransfers | Operation::UpsertLimitProfiles | Operation::Tick
        )
    }
}
