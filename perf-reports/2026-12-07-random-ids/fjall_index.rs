use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use std::time::Instant;
fn cpu() -> f64 { let mut u: libc::rusage = unsafe { std::mem::zeroed() }; unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }; u.ru_utime.tv_sec as f64 + u.ru_utime.tv_usec as f64/1e6 + u.ru_stime.tv_sec as f64 + u.ru_stime.tv_usec as f64/1e6 }
fn main() {
    let per_commit: u64 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(8189);
    let total: u64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(4_000_000);
    let path = "/var/tmp/fjexp"; let _ = std::fs::remove_dir_all(path);
    let db = Database::builder(path).open().unwrap();
    let idx = db.keyspace("idx", KeyspaceCreateOptions::default).unwrap();
    let mut x: u64 = 0x9E3779B97F4A7C15; let mut rnd = || { x ^= x >> 12; x ^= x << 25; x ^= x >> 27; x.wrapping_mul(0x2545F4914F6CDD1D) };
    let (mut c0, mut n) = (cpu(), 0u64); let t0 = Instant::now(); let mut last_sync = Instant::now(); let mut w0 = Instant::now();
    while n < total {
        let mut b = db.batch();
        for i in 0..per_commit { let id = ((rnd() as u128) << 64) | rnd() as u128; b.insert(&idx, id.to_be_bytes(), (n + i).to_be_bytes()); }
        b.commit().unwrap();
        if last_sync.elapsed().as_millis() >= 100 { db.persist(PersistMode::SyncAll).unwrap(); last_sync = Instant::now(); }
        n += per_commit;
        if n % 1_000_000 < per_commit { let c = cpu(); println!("{} {:.2} us/insert cpu(process) {:.2} us wall", n, (c - c0), w0.elapsed().as_secs_f64()); c0 = c; w0 = Instant::now(); }
    }
    db.persist(PersistMode::SyncAll).unwrap();
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
    let t = Instant::now(); let mut found = 0; let mut y: u64 = 0x9E3779B97F4A7C15; let mut r2 = || { y ^= y >> 12; y ^= y << 25; y ^= y >> 27; y.wrapping_mul(0x2545F4914F6CDD1D) };
    for _ in 0..100000 { let id = ((r2() as u128) << 64) | r2() as u128; if idx.get(id.to_be_bytes()).unwrap().is_some() { found += 1; } }
    println!("100k point reads of present ids: {found} found, {:.2} us each", t.elapsed().as_secs_f64() * 10.0);
    let t = Instant::now(); for i in 0..100000u64 { let id = (i as u128) * 7919; let _ = idx.get(id.to_be_bytes()).unwrap(); }
    println!("100k point reads of absent ids: {:.2} us each", t.elapsed().as_secs_f64() * 10.0);
}
