//! Resident memory and single-thread apply rate of the ledger as the business-logic thread
//! runs it: each batch of 8 189 single-phase transfers (`--batch B` for fewer) is one
//! input with its own sequence,
//! applied through `pipeline::apply_collecting` (what the outcome stream receives),
//! followed by `Ledger::effects()` (what the history stage receives). With `--hot-window W` (0: everything stays hot, the old behaviour)
//! transfers older than W inputs leave memory, and with `--hot-window-events E` (0: no
//! bound in events) also those the window's last E transfer events push out. Prints the resident size every tenth of the
//! run, so a flat line after the window fills shows bounded memory.
//!
//! Run: `cargo run --release -p tally-bench --bin hot-window -- [--accounts N]
//! [--transfers N] [--batch B] [--hot-window W] [--hot-window-events E] [--random-ids 0|1]
//! [--zipf 0|1]`

use std::time::{Duration, Instant};

use tally_bench::workload::{self, BATCH_EVENTS, Distribution, Rng, TransferGenerator};
use tally_codecs::wire::Request;
use tally_engine::Ledger;
use tally_engine::pipeline::{Command, apply, apply_collecting};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|field| field.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`, first
/// field): unlike wall time, it does not count the time other processes held the core, so
/// a rate over it is comparable between runs on a loaded machine. 0 where unavailable.
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|field| field.parse().ok()).unwrap_or(0)
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
    let accounts = argument("--accounts", 10_000)?;
    let transfers = argument("--transfers", 20_000_000)?;
    let hot_window = argument("--hot-window", 0)?;
    let hot_window_events = argument("--hot-window-events", 0)?;
    let batch_events = usize::try_from(argument("--batch", BATCH_EVENTS as u64)?)
        .ok()
        .filter(|batch| (1..=BATCH_EVENTS).contains(batch))
        .ok_or_else(|| format!("--batch must be 1 to {BATCH_EVENTS}"))?;
    let random_ids = argument("--random-ids", 0)? != 0;
    let distribution =
        if argument("--zipf", 0)? != 0 { Distribution::Zipfian { s: 1.0 } } else { Distribution::Uniform };

    let mut ledger = Ledger::new();
    if hot_window > 0 || hot_window_events > 0 {
        let bound = |value: u64| if value == 0 { u64::MAX } else { value };
        ledger.set_hot_window(bound(hot_window), bound(hot_window_events));
    }
    let mut sequence = 0u64;
    let mut timestamp = 1_000_000u64;
    for chunk in workload::accounts(accounts).chunks(BATCH_EVENTS) {
        sequence += 1;
        let command = Command::Request(Request::CreateAccounts(chunk.to_vec()));
        apply(&mut ledger, sequence, timestamp, &command, Default::default());
        timestamp += 1_000_000;
    }
    let mut generator = TransferGenerator::new(accounts, distribution, 3);
    let mut rng = Rng::new(11);
    let mut applied = 0u64;
    let mut busy = Duration::ZERO;
    let mut worst = Duration::ZERO;
    let mut cpu_ns = 0u64;
    let mut next_report = transfers / 10;
    println!(
        "hot window {hot_window} inputs / {hot_window_events} events (0: unbounded), {batch_events} transfers per input, {accounts} accounts {}, ids {}",
        if matches!(distribution, Distribution::Uniform) { "uniform" } else { "zipf" },
        if random_ids { "random" } else { "increasing" }
    );
    println!("transfers applied   resident MiB   hot transfers");
    while applied < transfers {
        let count = (transfers - applied).min(batch_events as u64) as usize;
        let mut batch = generator.single_phase(count);
        if random_ids {
            for transfer in &mut batch {
                transfer.id = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())).max(1);
            }
        }
        sequence += 1;
        let command = Command::Request(Request::CreateTransfers(batch));
        let cpu_before = thread_cpu_ns();
        let began = Instant::now();
        let (_, committed) = apply_collecting(&mut ledger, sequence, timestamp, &command, Default::default());
        let effects = ledger.effects();
        let took = began.elapsed();
        cpu_ns += thread_cpu_ns().saturating_sub(cpu_before);
        drop((committed, effects));
        busy += took;
        worst = worst.max(took);
        applied += count as u64;
        timestamp += 1_000_000;
        if applied >= next_report {
            println!(
                "{applied:>17}   {:>12.1}   {:>13}",
                resident_bytes() as f64 / 1048576.0,
                ledger.hot_transfers_count()
            );
            next_report += transfers / 10;
        }
    }
    println!(
        "apply + effects: {:.2} s = {:.2} M transfers/s; on-CPU {:.2} s = {:.2} M transfers/s; worst batch {:.2} ms; \
         transfers ever {}",
        busy.as_secs_f64(),
        transfers as f64 / busy.as_secs_f64() / 1e6,
        cpu_ns as f64 / 1e9,
        transfers as f64 / (cpu_ns.max(1) as f64 / 1e9) / 1e6,
        worst.as_secs_f64() * 1e3,
        ledger.transfers_count()
    );
    Ok(())
}
