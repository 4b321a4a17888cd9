//! Client authentication on the gateway: the keys file (`tally serve --keys FILE`), its
//! reload on SIGHUP, the node's side of the handshake of `wire::auth`, and key scopes.
//!
//! The keys file holds one key per line (blank lines and `#` comments skipped):
//!
//! ```text
//! # CLIENT_ID  KEY_ID  SECRET (64 hex digits)  [read-only] [ledgers=1,2] [expires=UNIX_SECONDS]
//! 0x2a         1       00112233…eeff
//! 0x2a         2       8899aabb…7766   expires=1798761600
//! 7            1       0123abcd…cdef   read-only
//! ```
//!
//! A client may have several keys (rotation: add the new key, move the clients, remove
//! the old one, `kill -HUP` the node after each edit). A key past `expires` is refused.
//! `read-only` allows lookups and queries only; `ledgers=…` allows writes only for events
//! on those ledgers and hides records of other ledgers from lookups and queries (balance
//! history, whose rows name no ledger, is refused to such a key). A request outside the
//! scope gets the error reply `forbidden` and nothing is applied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tally_client::ClientKey;
use tally_codecs::wire::auth::{NONCE_BYTES, SCOPE_LEDGERS, SCOPE_READ_ONLY, SECRET_BYTES, auth_mac, macs_equal};
use tally_codecs::wire::{AuthHello, AuthProof, Reply, Request};

/// Handshakes refused since the node started (`tally_auth_failures_total`).
pub static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Requests refused as outside their key's scope (`tally_auth_forbidden_total`).
pub static FORBIDDEN: AtomicU64 = AtomicU64::new(0);

/// Most keys one file may hold: a bound on what a reload reads into memory.
pub const KEYS_MAX: usize = 65_536;

/// What a key may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub read_only: bool,
    /// `Some`: only these ledgers.
    pub ledgers: Option<Vec<u32>>,
}

impl Scope {
    /// Everything: a node without keys grants this.
    pub fn full() -> Scope {
        Scope::default()
    }

    /// The scope bits of `wire::auth::AuthGrant`.
    pub fn bits(&self) -> u32 {
        let read_only = if self.read_only { SCOPE_READ_ONLY } else { 0 };
        let ledgers = if self.ledgers.is_some() { SCOPE_LEDGERS } else { 0 };
        read_only | ledgers
    }

    fn allows_ledger(&self, ledger: u32) -> bool {
        self.ledgers.as_ref().is_none_or(|ledgers| ledgers.contains(&ledger))
    }

    /// `Err` with the reason when `request` is outside this scope.
    pub fn check(&self, request: &Request) -> Result<(), &'static str> {
        let writes = matches!(
            request,
            Request::CreateAccounts(_) | Request::CreateTransfers(_) | Request::UpsertLimitProfiles(_)
        );
        if writes && self.read_only {
            return Err("the key is read-only");
        }
        let in_scope = match request {
            Request::CreateAccounts(accounts) => accounts.iter().all(|account| self.allows_ledger(account.ledger)),
            Request::CreateTransfers(transfers) => transfers.iter().all(|transfer| self.allows_ledger(transfer.ledger)),
            Request::UpsertLimitProfiles(profiles) => profiles.iter().all(|profile| self.allows_ledger(profile.ledger)),
            Request::GetAccountBalances(_) => self.ledgers.is_none(),
            Request::LookupAccounts(_) | Request::LookupTransfers(_) | Request::GetAccountTransfers(_) => true,
        };
        if in_scope { Ok(()) } else { Err("an event names a ledger outside the key's scope") }
    }

    /// `Err` with the reason when this key may not promote a standby: promotion changes
    /// who takes every write, so it needs a key that may write to every ledger.
    pub fn check_promote(&self) -> Result<(), &'static str> {
        if self.read_only {
            return Err("the key is read-only; promotion needs a key that may write to every ledger");
        }
        if self.ledgers.is_some() {
            return Err("the key is limited to some ledgers; promotion needs a key that may write to every ledger");
        }
        Ok(())
    }

    /// Drops the records of ledgers outside the scope from a lookup or query reply, as if
    /// they did not exist.
    pub fn filter(&self, reply: &mut Reply) {
        if self.ledgers.is_none() {
            return;
        }
        match reply {
            Reply::LookupAccounts(accounts) => accounts.retain(|account| self.allows_ledger(account.ledger)),
            Reply::LookupTransfers(transfers) | Reply::GetAccountTransfers(transfers) => {
                transfers.retain(|transfer| self.allows_ledger(transfer.ledger));
            }
            Reply::GetAccountBalances(balances) => balances.clear(),
            Reply::CreateAccounts(_) | Reply::CreateTransfers(_) | Reply::UpsertLimitProfiles(_) => {}
        }
    }
}

struct KeyEntry {
    secret: [u8; SECRET_BYTES],
    scope: Scope,
    /// Unix seconds after which the key is refused.
    expires: Option<u64>,
}

/// The keys of one reading of the file, by (client id, key id).
#[derive(Default)]
pub struct KeySet {
    entries: HashMap<(u128, u64), KeyEntry>,
}

impl KeySet {
    /// Parses a keys file's text; the error names the line.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let mut entries = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |error: String| format!("line {}: {error}", index + 1);
            let (key, options) = ClientKey::parse(line).map_err(at)?;
            let mut entry = KeyEntry { secret: key.secret, scope: Scope::full(), expires: None };
            // Options follow CLIENT_ID KEY_ID SECRET: the first is field 4.
            for (field, option) in (4..).zip(options) {
                parse_option(field, option, &mut entry).map_err(at)?;
            }
            if entries.len() >= KEYS_MAX {
                return Err(at(format!("more than {KEYS_MAX} keys")));
            }
            if entries.insert((key.client_id, key.key_id), entry).is_some() {
                return Err(at(format!("client {} has key {} twice", key.client_id, key.key_id)));
            }
        }
        if entries.is_empty() {
            return Err("no keys: a node with --keys would refuse every client".to_owned());
        }
        Ok(KeySet { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a proof; `Ok` with the key's scope, or the reason for the refusal (for the
    /// log only: the client is told `unauthenticated` whatever it was).
    pub fn verify(
        &self,
        client_id: u128,
        hello: &AuthHello,
        node_nonce: &[u8; NONCE_BYTES],
        proof: &AuthProof,
        now_unix_s: u64,
    ) -> Result<Scope, String> {
        let Some(entry) = self.entries.get(&(client_id, hello.key_id)) else {
            return Err(format!("client {client_id} has no key {}", hello.key_id));
        };
        let expected = auth_mac(&entry.secret, client_id, hello.key_id, &hello.client_nonce, node_nonce);
        if !macs_equal(&expected, &proof.mac) {
            return Err(format!("client {client_id} key {}: wrong proof", hello.key_id));
        }
        if entry.expires.is_some_and(|expires| now_unix_s >= expires) {
            return Err(format!("client {client_id} key {}: expired", hello.key_id));
        }
        Ok(entry.scope.clone())
    }
}

/// One option, field `field` of its line. An error never repeats the field's text (a
/// second secret pasted onto a rotation line lands here, and the message reaches stderr
/// and the log on every reload): it says which field, what was expected, and its length.
fn parse_option(field: usize, option: &str, entry: &mut KeyEntry) -> Result<(), String> {
    if option == "read-only" {
        entry.scope.read_only = true;
    } else if let Some(list) = option.strip_prefix("ledgers=") {
        let ledgers: Result<Vec<u32>, _> = list.split(',').map(str::parse::<u32>).collect();
        let ledgers = ledgers.map_err(|_| {
            format!(
                "field {field} (option ledgers=) is not a comma-separated list of ledger numbers ({} after `ledgers=`)",
                characters(list)
            )
        })?;
        entry.scope.ledgers = Some(ledgers);
    } else if let Some(seconds) = option.strip_prefix("expires=") {
        entry.expires = Some(seconds.parse().map_err(|_| {
            format!("field {field} (option expires=) is not unix seconds ({} after `expires=`)", characters(seconds))
        })?);
    } else {
        return Err(format!(
            "field {field} is not an option: read-only, ledgers=…, expires=… ({})",
            characters(option)
        ));
    }
    Ok(())
}

/// How a bad field is described instead of being repeated: its length.
fn characters(field: &str) -> String {
    match field.chars().count() {
        1 => "1 character".to_owned(),
        count => format!("{count} characters"),
    }
}

/// The node's keys: the file they came from and its last good reading.
pub struct Keys {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
}

impl Keys {
    pub fn load(path: &Path) -> Result<Keys, String> {
        let set = read(path)?;
        Ok(Keys { path: path.to_owned(), current: RwLock::new(Arc::new(set)) })
    }

    /// Reads the file again; a bad file keeps the keys in force (and says why).
    pub fn reload(&self) -> Result<usize, String> {
        let set = read(&self.path)?;
        let count = set.len();
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(count)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn read(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    KeySet::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// A fresh nonce from the kernel's random source.
pub fn node_nonce() -> std::io::Result<[u8; NONCE_BYTES]> {
    let mut nonce = [0u8; NONCE_BYTES];
    let mut filled = 0;
    while filled < NONCE_BYTES {
        let rest = &mut nonce[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable buffer.
        let written = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if written < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += written.unsigned_abs();
    }
    Ok(nonce)
}

pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

pub fn count_failure() {
    AUTH_FAILURES.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_codecs::{Account, Transfer};

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn proof(secret: [u8; 32], client_id: u128, hello: &AuthHello, node_nonce: &[u8; 32]) -> AuthProof {
        AuthProof { mac: auth_mac(&secret, client_id, hello.key_id, &hello.client_nonce, node_nonce) }
    }

    #[test]
    fn a_valid_proof_is_accepted_and_a_wrong_or_expired_one_is_not() {
        let keys = KeySet::parse(&format!("42 1 {SECRET}\n42 2 {SECRET} expires=100 read-only\n")).unwrap();
        let secret = ClientKey::parse(&format!("42 1 {SECRET}")).unwrap().0.secret;
        let hello = AuthHello { key_id: 1, reserved: [0; 8], client_nonce: [1; 32] };
        let good = proof(secret, 42, &hello, &[2; 32]);
        assert_eq!(keys.verify(42, &hello, &[2; 32], &good, 50), Ok(Scope::full()));
        // The same proof answers no other challenge, no other client, no other key.
        assert!(keys.verify(42, &hello, &[3; 32], &good, 50).is_err());
        assert!(keys.verify(43, &hello, &[2; 32], &good, 50).is_err());
        let mut wrong = good;
        wrong.mac[0] ^= 1;
        assert!(keys.verify(42, &hello, &[2; 32], &wrong, 50).is_err());
        let second = AuthHello { key_id: 2, ..hello };
        let second_proof = proof(secret, 42, &second, &[2; 32]);
        assert!(keys.verify(42, &second, &[2; 32], &second_proof, 99).is_ok_and(|scope| scope.read_only));
        assert!(keys.verify(42, &second, &[2; 32], &second_proof, 100).is_err());
    }

    #[test]
    fn bad_keys_files_are_refused_with_the_line() {
        for bad in [
            "",
            "# only a comment\n",
            "42 1 00\n",
            &format!("42 1 {SECRET} admin\n"),
            &format!("42 1 {SECRET}\n42 1 {SECRET}\n"),
            &format!("42 1 {SECRET} ledgers=a\n"),
        ] {
            assert!(KeySet::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let error = KeySet::parse(&format!("\n42 1 {SECRET} oops\n")).err().expect("refused");
        assert!(error.starts_with("line 2"), "{error}");
    }

    const OTHER_SECRET: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn refusal(text: &str) -> String {
        KeySet::parse(text).err().expect("the keys file is refused")
    }

    #[test]
    fn a_second_secret_pasted_as_an_option_is_not_repeated() {
        // A rotation line with the old secret left after the new one.
        let error = refusal(&format!("42 1 {SECRET}\n42 2 {OTHER_SECRET} {SECRET}\n"));
        assert!(!error.contains(SECRET) && !error.contains("00112233"), "{error}");
        assert!(error.starts_with("line 2: field 4 is not an option"), "{error}");
        assert!(error.contains("64 characters"), "{error}");
    }

    #[test]
    fn a_secret_in_the_key_id_column_is_not_repeated_with_the_line() {
        let error = refusal(&format!("# keys\n0x2a {SECRET} read-only\n"));
        assert!(!error.contains(SECRET) && !error.contains("00112233"), "{error}");
        assert!(error.starts_with("line 2: field 2 (key id)"), "{error}");
    }

    #[test]
    fn bad_ledger_lists_and_expiries_are_not_repeated() {
        let error = refusal(&format!("42 1 {SECRET} read-only ledgers={OTHER_SECRET}\n"));
        assert!(!error.contains(OTHER_SECRET) && !error.contains("ffeedd"), "{error}");
        assert!(error.starts_with("line 1: field 5 (option ledgers=)") && error.contains("64 characters"), "{error}");
        let error = refusal(&format!("42 1 {SECRET} expires={OTHER_SECRET}\n"));
        assert!(!error.contains(OTHER_SECRET) && !error.contains("ffeedd"), "{error}");
        assert!(error.starts_with("line 1: field 4 (option expires=) is not unix seconds"), "{error}");
    }

    #[test]
    fn scopes_refuse_writes_and_foreign_ledgers() {
        let transfer = |ledger| Request::CreateTransfers(vec![Transfer { ledger, ..Transfer::default() }]);
        let read_only = Scope { read_only: true, ledgers: None };
        assert!(read_only.check(&transfer(1)).is_err());
        assert!(read_only.check(&Request::LookupAccounts(vec![1])).is_ok());
        let ledger_one = Scope { read_only: false, ledgers: Some(vec![1]) };
        assert!(ledger_one.check(&transfer(1)).is_ok());
        assert!(ledger_one.check(&transfer(2)).is_err());
        let mut reply = Reply::LookupAccounts(vec![
            Account { id: 1, ledger: 1, ..Account::default() },
            Account { id: 2, ledger: 2, ..Account::default() },
        ]);
        ledger_one.filter(&mut reply);
        assert_eq!(reply, Reply::LookupAccounts(vec![Account { id: 1, ledger: 1, ..Account::default() }]));
    }
}
