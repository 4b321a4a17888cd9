//! Tally embedded in a Rust program: the full pipeline (journal, business logic, outcome
//! log) in this process, over a temporary data directory, with no network.
//!
//! Run with `cargo run --release --example embedded`.

use std::process::ExitCode;

use tally::{Node, NodeConfig};
use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, ResultCode, Transfer, flags};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("embedded: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::temp_dir().join(format!("tally-embedded-{}", std::process::id()));
    let node = Node::open(&NodeConfig::new(&data_dir))?;
    let tally = node.submitter();

    // A customer wallet that may not go below zero, and the bank's funding account.
    let customer = Account {
        id: 1,
        ledger: 1,
        code: 10,
        flags: flags::account::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Account::default()
    };
    let bank = Account { id: 2, ledger: 1, code: 20, ..Account::default() };
    print_results("create_accounts", &tally.execute(Request::CreateAccounts(vec![customer, bank]))?);

    let deposit = Transfer {
        id: 100,
        debit_account_id: 2,
        credit_account_id: 1,
        amount: 500,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    let spend = Transfer { id: 101, debit_account_id: 1, credit_account_id: 2, amount: 200, ..deposit };
    let overspend = Transfer { id: 102, debit_account_id: 1, credit_account_id: 2, amount: 400, ..deposit };
    let reply = tally.execute(Request::CreateTransfers(vec![deposit, spend, overspend]))?;
    print_results("create_transfers", &reply);

    if let Reply::LookupAccounts(accounts) = tally.execute(Request::LookupAccounts(vec![1, 2]))? {
        for account in accounts {
            let balance = i128::try_from(account.credits_posted)? - i128::try_from(account.debits_posted)?;
            println!(
                "account {}: debits {}, credits {}, balance {balance}",
                account.id, account.debits_posted, account.credits_posted
            );
        }
    }

    let ledger = node.shutdown();
    println!("state hash {:#034x}; journal and outcome log in {}", ledger.state_hash(), data_dir.display());
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}

fn print_results(operation: &str, reply: &Reply) {
    let (Reply::CreateAccounts(results) | Reply::CreateTransfers(results)) = reply else { return };
    for (index, result) in results.iter().enumerate() {
        let status = ResultCode::from_u32(result.status).map_or("unknown", ResultCode::name);
        println!("{operation}[{index}]: {status} at {}", result.timestamp);
    }
}
