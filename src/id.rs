//! Queue identifiers: unique, sortable by arrival time, never derived from client input.
//! 13 hex digits of microseconds since 1970, 4 of the process id, 6 of a counter, e.g.
//! `63F1A2B3C4D5E` + `0A1B` + `000001`: the names of two processes sharing a mailroot cannot collide,
//! and files listed by name come in arrival order.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new identifier (23 upper-case hex digits).
pub fn next() -> String {
    let micros = crate::time::unix_micros(SystemTime::now()) & 0x1F_FFFF_FFFF_FFFF;
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xFF_FFFF;
    let pid = std::process::id() & 0xFFFF;
    format!("{micros:013X}{pid:04X}{seq:06X}")
}

/// When the message with identifier `id` arrived (from its first 13 digits).
pub fn arrival(id: &str) -> Option<SystemTime> {
    if !is_id(id) {
        return None;
    }
    let micros = u64::from_str_radix(&id[..13], 16).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(micros))
}

/// Whether `name` (a file stem) has the shape of an identifier.
pub fn is_id(name: &str) -> bool {
    name.len() == 23
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_sorted() {
        let a = next();
        let b = next();
        assert!(is_id(&a) && is_id(&b));
        assert_ne!(a, b);
        assert!(a < b || a[..13] == b[..13]);
        assert!(!is_id("../etc/passwd"));
        let age = SystemTime::now()
            .duration_since(arrival(&a).unwrap())
            .unwrap_or_default();
        assert!(age.as_secs() < 60);
    }
}
