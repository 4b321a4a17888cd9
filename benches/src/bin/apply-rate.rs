//! The business-logic thread's budget: single-phase transfers applied on one thread to a
//! ledger that grows (nothing reserved up front, as in a node), with increasing or random
//! ids, and what a checkpoint's copy of that ledger costs the thread (its stall).
//!
//! Each batch is one input with its own sequence (`Ledger::begin_input`), under the hot
//! window a node uses (`--hot-window`, default [`HOT_WINDOW_DEFAULT`] inputs; 0 keeps
//! every transfer hot, the ledger of before the hot/cold split): the ledger grows until
//! the window fills and then evicts as much as it adds.
//!
//! Run: `cargo run --release -p tally-bench --bin apply-rate -- --accounts 10000
//! --transfers 20000000 --distribution uniform --ids increasing --checkpoint-every 1000000`
//!
//! Prints one line of `key=value` pairs: the rate over all batches (wall time inside
//! `create_transfers`, and on-CPU time, which leaves out the time other processes held
//! the core), the worst batch, and what the checkpoint copies cost (into fresh memory, and
//! into the previous copy as the node does). `--transfers 0 --checkpoint-every 1` with `--repeat-copies N` times N
//! copies of a ledger that holds accounts only: the hot state alone.

use std::time::{Duration, Instant};

use tally_bench::workload::{self, BATCH_EVENTS, Distribution, Rng, TransferGenerator};
use tally_engine::{HOT_WINDOW_DEFAULT, Ledger};

struct Options {
    accounts: u64,
    transfers: u64,
    distribution: Distribution,
    random_ids: bool,
    checkpoint_every: u64,
    repeat_copies: u64,
    hot_window: u64,
}

fn value<'a>(arguments: &'a [String], name: &str) -> Option<&'a str> {
    let index = arguments.iter().position(|argument| argument == name)?;
    arguments.get(index + 1).map(String::as_str)
}

fn number(arguments: &[String], name: &str, default: u64) -> Result<u64, String> {
    value(arguments, name).map_or(Ok(default), |text| text.parse().map_err(|_| format!("{name} needs a whole number")))
}

fn options() -> Result<Options, String> {
    let arguments: Vec<String> = std::env::args().collect();
    let distribution = match value(&arguments, "--distribution").unwrap_or("uniform") {
        "uniform" => Distribution::Uniform,
        "zipf" => Distribution::Zipfian { s: 1.0 },
        other => return Err(format!("--distribution is uniform or zipf, not {other}")),
    };
    let random_ids = match value(&arguments, "--ids").unwrap_or("increasing") {
        "increasing" => false,
        "random" => true,
        other => return Err(format!("--ids is increasing or random, not {other}")),
    };
    Ok(Options {
        accounts: number(&arguments, "--accounts", 10_000)?,
        transfers: number(&arguments, "--transfers", 10_000_000)?,
        distribution,
        random_ids,
        checkpoint_every: number(&arguments, "--checkpoint-every", 0)?,
        repeat_copies: number(&arguments, "--repeat-copies", 0)?,
        hot_window: number(&arguments, "--hot-window", HOT_WINDOW_DEFAULT)?,
    })
}

/// What `CheckpointTaker::offer` does on the business-logic thread, timed into fresh
/// memory and into the previous copy.
fn copy_twice(ledger: &Ledger, fresh: &mut Vec<Duration>, reused: &mut Vec<Duration>, spare: &mut Option<Ledger>) {
    let began = Instant::now();
    let copy = (ledger.state_hash(), ledger.clone());
    fresh.push(began.elapsed());
    drop(copy);
    match spare.as_mut() {
        Some(spare) => {
            let began = Instant::now();
            let hash = ledger.state_hash();
            spare.clone_from(ledger);
            reused.push(began.elapsed());
            assert_eq!(spare.state_hash(), hash, "the copy is the state");
            // What the checkpoint writer does when it hands the copy back (untimed: on
            // the writer's thread in a node).
            spare.release_shared();
        }
        None => {
            let mut copy = ledger.clone();
            copy.release_shared();
            *spare = Some(copy);
        }
    }
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`, first
/// field); 0 where unavailable.
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|field| field.parse().ok()).unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() -> Result<(), String> {
    let options = options()?;
    let mut ledger = Ledger::new();
    if options.hot_window > 0 {
        ledger.set_hot_window(options.hot_window, tally_engine::HOT_WINDOW_EVENTS_DEFAULT);
    }
    let mut results = Vec::with_capacity(BATCH_EVENTS);
    let mut sequence = 0u64;
    for chunk in workload::accounts(options.accounts).chunks(BATCH_EVENTS) {
        sequence += 1;
        ledger.begin_input(sequence, 0, Default::default());
        ledger.create_accounts(1, chunk, &mut results);
        ledger.end_input();
    }
    let mut generator = TransferGenerator::new(options.accounts, options.distribution, 3);
    let mut ids = Rng::new(11);
    let (mut applied, mut timestamp) = (0u64, 1_000_000u64);
    let (mut busy, mut worst_batch, mut cpu_ns) = (Duration::ZERO, Duration::ZERO, 0u64);
    // Each checkpoint is timed twice: into fresh memory (`clone`, the first checkpoint of
    // a run) and into the previous copy (`clone_from`, every later one).
    let mut copies: Vec<Duration> = Vec::new();
    let mut reused_copies: Vec<Duration> = Vec::new();
    let mut spare: Option<Ledger> = None;
    let mut next_checkpoint = options.checkpoint_every;
    while applied < options.transfers {
        let count = (options.transfers - applied).min(BATCH_EVENTS as u64) as usize;
        let mut batch = generator.single_phase(count);
        if options.random_ids {
            for transfer in &mut batch {
                // Never 0 or u128::MAX; a collision (2^-64 per pair) would only fail one event.
                transfer.id = (u128::from(ids.next_u64()) << 64 | u128::from(ids.next_u64())).max(1) >> 1;
            }
        }
        results.clear();
        sequence += 1;
        let cpu_before = thread_cpu_ns();
        let began = Instant::now();
        ledger.begin_input(sequence, batch.len() as u64, Default::default());
        ledger.create_transfers(timestamp, &batch, &mut results);
        ledger.end_input();
        let took = began.elapsed();
        cpu_ns += thread_cpu_ns().saturating_sub(cpu_before);
        busy += took;
        worst_batch = worst_batch.max(took);
        applied += count as u64;
        timestamp += 1_000_000;
        if options.checkpoint_every > 0 && applied >= next_checkpoint {
            next_checkpoint += options.checkpoint_every;
            copy_twice(&ledger, &mut copies, &mut reused_copies, &mut spare);
        }
    }
    for _ in 0..options.repeat_copies {
        copy_twice(&ledger, &mut copies, &mut reused_copies, &mut spare);
    }
    let created = results.iter().filter(|result| result.status == 0).count();
    copies.sort_unstable();
    reused_copies.sort_unstable();
    let millis = |duration: Duration| duration.as_secs_f64() * 1e3;
    println!(
        "accounts={} transfers={} distribution={} ids={} hot_window={} rate_m_per_s={:.2} on_cpu_rate_m_per_s={:.2} \
         worst_batch_ms={:.2} last_batch_created={}/{} \
         checkpoints={} fresh_copy_p50_ms={:.3} fresh_copy_max_ms={:.3} reused_copy_p50_ms={:.3} reused_copy_p99_ms={:.3} \
         reused_copy_max_ms={:.3} ledger_transfers_at_end={} hot_transfers_at_end={}",
        options.accounts,
        options.transfers,
        if matches!(options.distribution, Distribution::Uniform) { "uniform" } else { "zipf" },
        if options.random_ids { "random" } else { "increasing" },
        options.hot_window,
        applied as f64 / busy.as_secs_f64() / 1e6,
        applied as f64 / (cpu_ns.max(1) as f64 / 1e9) / 1e6,
        worst_batch.as_secs_f64() * 1e3,
        created,
        results.len(),
        copies.len(),
        millis(percentile(&copies, 0.5)),
        millis(copies.last().copied().unwrap_or_default()),
        millis(percentile(&reused_copies, 0.5)),
        millis(percentile(&reused_copies, 0.99)),
        millis(reused_copies.last().copied().unwrap_or_default()),
        ledger.transfers_count(),
        ledger.hot_transfers_count(),
    );
    Ok(())
}
