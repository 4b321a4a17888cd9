use redb::{Database, Durability, TableDefinition, ReadableDatabase, ReadableTable};
use std::time::Instant;
const ROWS: TableDefinition<u128, &[u8]> = TableDefinition::new("rows");
const BYNUM: TableDefinition<u64, &[u8]> = TableDefinition::new("bynum");
const IDX: TableDefinition<u128, u64> = TableDefinition::new("idx");
fn cpu() -> f64 { let mut u: libc::rusage = unsafe { std::mem::zeroed() }; unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }; u.ru_utime.tv_sec as f64 + u.ru_utime.tv_usec as f64/1e6 + u.ru_stime.tv_sec as f64 + u.ru_stime.tv_usec as f64/1e6 }
fn main() {
    let mode = std::env::args().nth(1).unwrap();
    let per_commit: u64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(8189);
    let path = "/var/tmp/redbexp.redb"; let _ = std::fs::remove_file(path);
    let db = Database::builder().set_cache_size(128<<20).create(path).unwrap();
    let mut x: u64 = 0x9E3779B97F4A7C15; let mut rnd = || { x ^= x >> 12; x ^= x << 25; x ^= x >> 27; x.wrapping_mul(0x2545F4914F6CDD1D) };
    let total = 4_000_000u64; let value = [7u8; 136];
    let (mut c0, mut n) = (cpu(), 0u64); let t0 = Instant::now(); let mut last_sync = Instant::now();
    while n < total {
        let mut txn = db.begin_write().unwrap();
        if last_sync.elapsed().as_millis() >= 100 { last_sync = Instant::now(); } else { txn.set_durability(Durability::None).unwrap(); }
        {
            let mut ids: Vec<(u128,u64)> = (0..per_commit).map(|i| (((rnd() as u128) << 64) | rnd() as u128, n + i)).collect();
            ids.sort_unstable();
            if mode == "rows" { let mut t = txn.open_table(ROWS).unwrap(); for (id, _) in &ids { t.insert(*id, &value[..]).unwrap(); } }
            else { { let mut t = txn.open_table(BYNUM).unwrap(); for i in 0..per_commit { t.insert(n + i, &value[..]).unwrap(); } }
                   let mut t = txn.open_table(IDX).unwrap(); for (id, num) in &ids { t.insert(*id, *num).unwrap(); } }
        }
        txn.commit().unwrap();
        n += per_commit;
        if n % 1_000_000 < per_commit { let c = cpu(); println!("{} {:.2} us/insert cpu", n, (c - c0) * 1e6 / 1e6); c0 = c; }
    }
    println!("total {:.1}s size {} MiB", t0.elapsed().as_secs_f64(), std::fs::metadata(path).unwrap().len() >> 20);

}
