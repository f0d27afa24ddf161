// Experiment only (not for main): CPU per slot insert by batch size, token order, page size.
use rusqlite::{params, Connection};
use std::time::Instant;

fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) * 10_000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    let batch: usize = args[2].parse().unwrap();
    let seq = args[3] == "seq";
    let page: i64 = args[4].parse().unwrap();
    let counter = args[5] == "counter";
    let jsl: i64 = args.get(6).map(|v| v.parse().unwrap()).unwrap_or(65536);
    let restart_at: u64 = args.get(7).map(|v| v.parse().unwrap()).unwrap_or(u64::MAX);
    let path = format!("{dir}/db.sqlite3");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(format!("{path}-wal"));
    let _ = std::fs::remove_file(format!("{path}-shm"));
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "page_size", page).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    c.pragma_update(None, "journal_size_limit", jsl).unwrap();
    c.execute_batch("CREATE TABLE slot (token TEXT PRIMARY KEY, jid TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, content_type TEXT, created INTEGER NOT NULL, authorized INTEGER, uploaded INTEGER, area TEXT, expires INTEGER, retention INTEGER) WITHOUT ROWID;
      CREATE INDEX slot_usage ON slot (jid, created, authorized, size);
      CREATE TABLE counter (name TEXT NOT NULL, labels TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (name, labels)) WITHOUT ROWID;").unwrap();
    let ck = Connection::open(&path).unwrap();
    let total = 200_000usize;
    let t0 = Instant::now();
    let c0 = cpu();
    let mut rng: u64 = 0x9E3779B97F4A7C15;
    let mut i = 0usize;
    let mut commits = 0u64;
    let wal = format!("{path}-wal");
    while i < total {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..batch {
            i += 1;
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            let token = if seq { format!("{:012x}{:028x}", i, rng as u128) } else { format!("{:016x}{:024x}", rng, i) };
            let jid = "admin@example.com";
            c.prepare_cached("INSERT INTO slot (token, jid, name, size, content_type, created, authorized, area, expires, retention) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)").unwrap()
              .execute(params![token, jid, format!("photo-1-{i}.jpg"), 100000i64, "image/jpeg", 1_900_000_000i64 + (i as i64)/10000, None::<i64>, None::<String>, None::<i64>, None::<i64>]).unwrap();
        }
        if counter {
            c.prepare_cached("INSERT INTO counter (name, labels, value) VALUES (?1, ?2, ?3) ON CONFLICT (name, labels) DO UPDATE SET value = value + ?3").unwrap()
              .execute(params!["xhu_slots_granted_total", "", batch as i64]).unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        commits += 1;
        if commits % 64 == 0 {
            let sz = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            if sz > restart_at {
                let _: (i64,i64,i64) = ck.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
            }
        }
    }
    let us = (cpu() - c0) / total as f64;
    let wal_sz = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    println!("batch={batch} seq={seq} page={page} counter={counter} jsl={jsl} restart_at={restart_at}: {:.1} us CPU/slot, {:.0} slots/s wall, wal {} KiB", us, total as f64 / t0.elapsed().as_secs_f64(), wal_sz/1024);
}
