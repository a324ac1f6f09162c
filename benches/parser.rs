//! Parser benchmarks: the cost of framing and parsing one typical command, and the throughput of the
//! DATA terminator scanner (and the BDAT flaw check) over a megabyte of message.
//!
//! Targets: under 100 ns per typical command, at least 1 GB/s of DATA scanning.
//!
//! Run with `cargo bench --bench parser` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
// The connection's read buffer size: the scanner sees at most this much per call.
use mailroot::server::connection::READ_BUF;
use mailroot::smtp::command::{self, Line};
use mailroot::smtp::data::{ChunkCheck, DataScanner, Scan};

const MIB: usize = 1 << 20;

/// Frames the first line of `buf` and parses it, as the session loop does for each command.
#[inline]
fn frame_and_parse(buf: &[u8]) -> usize {
    match command::take_line(buf) {
        Line::Complete(line, used) => match command::parse(line) {
            Ok(_) => used,
            Err(_) => 0,
        },
        Line::Bare(..) | Line::Partial | Line::TooLong => usize::MAX,
    }
}

fn commands(c: &mut Criterion) {
    let mut g = c.benchmark_group("command");
    for (name, cmd) in [
        (
            "mail_from",
            &b"MAIL FROM:<user@example.com> SIZE=1024 BODY=8BITMIME\r\n"[..],
        ),
        ("rcpt_to", b"RCPT TO:<a@b.example> NOTIFY=FAILURE\r\n"),
        ("ehlo", b"EHLO client.example.com\r\n"),
        ("data", b"DATA\r\n"),
    ] {
        // Every benchmarked command must be accepted, or the numbers measure the error path.
        assert_eq!(frame_and_parse(cmd), cmd.len(), "{name}");
        g.bench_with_input(BenchmarkId::new("take_line+parse", name), cmd, |b, cmd| {
            b.iter(|| frame_and_parse(black_box(cmd)))
        });
    }
    g.finish();
}

/// About 1 MiB of a realistic message body: headers, then 76-character lines (base64-like text), with
/// every 40th line starting with a dot (so dot-stuffed on the wire), then the terminator.
fn realistic_message() -> Vec<u8> {
    let mut m = Vec::with_capacity(MIB + 256);
    m.extend_from_slice(
        b"Received: from client.example.com ([192.0.2.1])\r\n\
          From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: benchmark\r\n\
          MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
    );
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut n = 0usize;
    while m.len() < MIB - 80 {
        if n.is_multiple_of(40) {
            // A line that starts with "." is sent as "..".
            m.extend_from_slice(b"..");
            m.extend((0..74).map(|k| alphabet[(n * 7 + k) % 64]));
        } else {
            m.extend((0..76).map(|k| alphabet[(n * 7 + k) % 64]));
        }
        m.extend_from_slice(b"\r\n");
        n += 1;
    }
    while m.len() < MIB - 5 {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(m.len(), MIB);
    m
}

/// 1 MiB of long lines (64 KiB each, e.g. an unwrapped HTML part), then the terminator.
fn long_lines() -> Vec<u8> {
    let mut m = Vec::with_capacity(MIB);
    while m.len() + READ_BUF <= MIB - 5 {
        m.resize(m.len() + READ_BUF - 2, b'y');
        m.extend_from_slice(b"\r\n");
    }
    m.resize(MIB - 5, b'y');
    m.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(m.len(), MIB);
    m
}

/// Scans `msg` in read-buffer-sized pieces with a sink that only counts bytes.
fn scan_counting(msg: &[u8]) -> usize {
    let mut s = DataScanner::new();
    let mut total = 0usize;
    for chunk in msg.chunks(READ_BUF) {
        if let Scan::End(_) = s.scan(chunk, &mut |b: &[u8]| total += b.len()) {
            break;
        }
    }
    total
}

fn data_scanning(c: &mut Criterion) {
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(MIB as u64));
    for (name, msg) in [
        ("realistic_1MiB", realistic_message()),
        ("long_lines_1MiB", long_lines()),
    ] {
        // The whole message is seen, the terminator is found and only the dots and the terminator go.
        let dots = if name.starts_with("realistic") {
            msg.windows(3).filter(|w| w == b"\n..").count()
        } else {
            0
        };
        assert_eq!(scan_counting(&msg), msg.len() - 3 - dots, "{name}");
        g.bench_with_input(BenchmarkId::new("scan", name), &msg, |b, msg| {
            b.iter(|| scan_counting(black_box(msg)))
        });
        g.bench_with_input(BenchmarkId::new("chunk_check", name), &msg, |b, msg| {
            b.iter(|| {
                let mut c = ChunkCheck::default();
                for chunk in black_box(msg).chunks(READ_BUF) {
                    c.scan(chunk);
                }
                c.finish()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = commands, data_scanning
}
criterion_main!(benches);
