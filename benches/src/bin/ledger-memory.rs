//! Resident memory of a large ledger: bytes per account and per transfer, and the
//! resident size after `--accounts` accounts and `--transfers` single-phase transfers.
//!
//! Also times a snapshot of the final ledger (image, serialisation, load with checks).
//!
//! Run: `cargo run --release -p tally-bench --bin ledger-memory -- [--accounts N] [--transfers N]`
//! (defaults: 1 000 000 accounts, 10 000 000 transfers; needs ~6 GiB with the snapshot).

use std::time::Instant;

use tally_bench::workload::{self, BATCH_EVENTS, Distribution, TransferGenerator};
use tally_engine::Ledger;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|field| field.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn argument(name: &str, default: u64) -> Result<u64, String> {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.iter().position(|argument| argument == name) {
        None => Ok(default),
        Some(index) => arguments
            .get(index + 1)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{name} needs a whole number")),
    }
}

fn main() -> Result<(), String> {
    let accounts = argument("--accounts", 1_000_000)?;
    let transfers = argument("--transfers", 10_000_000)?;
    let start_rss = resident_bytes();

    // Grown on demand, not pre-reserved, so the numbers show what the data costs.
    let mut ledger = Ledger::new();
    let mut results = Vec::with_capacity(BATCH_EVENTS);
    for chunk in workload::accounts(accounts).chunks(BATCH_EVENTS) {
        ledger.create_accounts(1, chunk, &mut results);
    }
    let accounts_rss = resident_bytes();

    let mut generator = TransferGenerator::new(accounts, Distribution::Uniform, 3);
    let mut applied = 0u64;
    let mut timestamp = 1_000_000u64;
    let mut busy = std::time::Duration::ZERO;
    while applied < transfers {
        let count = (transfers - applied).min(BATCH_EVENTS as u64) as usize;
        let batch = generator.single_phase(count);
        results.clear();
        let began = Instant::now();
        ledger.create_transfers(timestamp, &batch, &mut results);
        busy += began.elapsed();
        applied += count as u64;
        timestamp += 1_000_000;
    }
    let transfers_rss = resident_bytes();
    let created = results.iter().filter(|result| result.status == 0).count();

    println!("accounts                 {accounts}");
    println!("transfers                {transfers} (last batch: {created}/{} created)", results.len());
    println!(
        "bytes per account        {:.1}",
        (accounts_rss.saturating_sub(start_rss)) as f64 / accounts.max(1) as f64
    );
    println!(
        "bytes per transfer       {:.1}",
        (transfers_rss.saturating_sub(accounts_rss)) as f64 / transfers.max(1) as f64
    );
    println!("resident after all       {:.1} MiB", transfers_rss as f64 / (1024.0 * 1024.0));
    println!(
        "apply time (growing)     {:.2} s = {:.2} M transfers/s",
        busy.as_secs_f64(),
        transfers as f64 / busy.as_secs_f64() / 1e6
    );

    // What a snapshot costs: the time the background replica spends, and so the pause a
    // snapshot taken on the business-logic thread itself would cause.
    let began = Instant::now();
    let image = ledger.to_image();
    let imaged = began.elapsed();
    let bytes = image.to_bytes().map_err(|error| error.to_string())?;
    let serialised = began.elapsed();
    let restored = tally_codecs::snapshot::LedgerImage::from_bytes(&bytes)
        .map_err(|error| error.to_string())
        .and_then(|image| Ledger::from_image(&image).map_err(|error| error.to_string()))?;
    let loaded = began.elapsed() - serialised;
    if restored.state_hash() != ledger.state_hash() {
        return Err("the snapshot did not restore the same state".into());
    }
    println!("snapshot image           {:.1} MiB", bytes.len() as f64 / (1024.0 * 1024.0));
    println!("snapshot to_image        {} ms", imaged.as_millis());
    println!("snapshot serialise       {} ms (including to_image)", serialised.as_millis());
    println!("snapshot load + verify   {} ms", loaded.as_millis());
    Ok(())
}
