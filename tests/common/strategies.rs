//! Proptest helpers shared by the property test files.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// `cases` per property, or `PROPTEST_CASES` when set (for a longer run).
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // Failures are reported with their shrunk input; nothing is written into the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Byte strings built from `tokens`, so that the interesting sequences (verbs, brackets, CR, LF,
/// dots) meet far more often than in uniformly random bytes.
pub fn token_soup(tokens: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(tokens), 0..max).prop_map(|t| t.concat())
}

/// Random bytes or a token soup, half and half.
pub fn bytes_or_soup(
    tokens: &'static [&'static [u8]],
    max_tokens: usize,
    max_bytes: usize,
) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max_bytes),
        token_soup(tokens, max_tokens),
    ]
}
