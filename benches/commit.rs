//! The commit protocol on this disk: how many messages per second can be made durable, one at a time
//! and many at once. This is the bound of every accept rate mailroot reports: a sequential client
//! (workload a) cannot be acknowledged faster than one commit after another allows, and concurrent
//! sessions only as fast as the group commit's shared flushes allow.
//!
//! - `inline`: the protocol done by the caller alone, one message after another: create the file in
//!   SortTemp, write 1 KiB, fdatasync, rename into Queue, fsync Queue. The ceiling of one client.
//! - `store xN`: the real path (`Store::begin`, write, `Spool::commit` through the group commit) from
//!   N threads at once. With N = 1 it shows what queueing through the group commit costs over
//!   `inline`; with more, what sharing the flushes gains.
//!
//! Run with `cargo bench --bench commit` (`-- --quick` for a tenth of the messages). It writes under
//! the system temp folder (`TMPDIR`), which should be on the disk the mailroot will use.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mailroot::config::Dirs;
use mailroot::id;
use mailroot::mailroot::store::Store;
use mailroot::smtp::envelope::{Envelope, Recipient};

const MESSAGE: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        // `cargo test --all-targets` runs bench targets without arguments: keep test runs short.
        println!("commit bench: run it with `cargo bench --bench commit`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let n = if quick { 200 } else { 2000 };
    let root = std::env::temp_dir().join(format!("mailroot-commit-bench-{}", std::process::id()));
    let body = vec![b'x'; MESSAGE];

    let dirs = fresh(&root);
    let rate = run_inline(&dirs, n, &body);
    println!(
        "inline   x1  : {rate:7.0} commits/s  (write, fdatasync, rename, fsync folder; one at a time)"
    );
    for threads in [1usize, 4, 20] {
        let dirs = fresh(&root);
        let rate = run_store(&dirs, n, threads, &body);
        println!(
            "store    x{threads:<3}: {rate:7.0} commits/s  (Spool::commit through the group commit)"
        );
    }
    let _ = fs::remove_dir_all(&root);
}

/// An empty mailroot under `root`.
fn fresh(root: &Path) -> Dirs {
    let _ = fs::remove_dir_all(root);
    let d = Dirs::under(root);
    for p in [&d.pickup, &d.queue, &d.badmail, &d.drop, &d.sort_temp] {
        fs::create_dir_all(p).expect("create the bench mailroot");
    }
    d
}

fn run_inline(d: &Dirs, n: usize, body: &[u8]) -> f64 {
    let queue = File::open(&d.queue).expect("open Queue");
    let t0 = Instant::now();
    for _ in 0..n {
        let id = id::next();
        let temp: PathBuf = d.sort_temp.join(format!("{id}.tmp"));
        let mut f = File::create_new(&temp).expect("create");
        f.write_all(b"x-sender: a@b.test\r\nx-receiver: c@d.test\r\n")
            .and_then(|_| f.write_all(body))
            .and_then(|_| f.sync_data())
            .expect("write and flush");
        fs::rename(&temp, d.queue.join(format!("{id}.eml"))).expect("rename");
        queue.sync_all().expect("fsync Queue");
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn run_store(d: &Dirs, n: usize, threads: usize, body: &[u8]) -> f64 {
    let store = Store::open(d, None).expect("open the store");
    let per = n / threads;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                for _ in 0..per {
                    let envelope = Envelope {
                        sender: "a@b.test".into(),
                        recipients: vec![Recipient::new("c@d.test".into(), false)],
                        ..Envelope::default()
                    };
                    let mut spool = store.begin(&id::next(), envelope, b"").expect("begin");
                    spool.write(body);
                    spool.commit().expect("commit");
                }
            });
        }
    });
    (per * threads) as f64 / t0.elapsed().as_secs_f64()
}
