//! Property tests in place of coverage-guided fuzzing (`cargo fuzz` needs a
//! nightly toolchain, which CI machines do not have): bounded, seeded runs over
//! `routes.toml` validation, admin API bodies and header processing.
//!
//! Each target first replays its corpus in `fuzz/seeds/<target>/`, then runs
//! mutations of those seeds and generated inputs. The run is deterministic
//! (fixed seed) and bounded in cases and time; to fuzz longer, set
//! `SLUICEGATE_FUZZ_CASES=100000 SLUICEGATE_FUZZ_SECS=600` and
//! `SLUICEGATE_FUZZ_SEED=random` (or a number; the seed used is printed).
//! Any failure proptest finds is printed shrunk; add it to the seeds (and, for a
//! crash, a regression test next to the code).

mod admin;
mod config;
mod http;
mod paths;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::time::Instant;

/// Longest one target mutates for by default, whatever the case count (CI time
/// bound); `SLUICEGATE_FUZZ_SECS` overrides it for long runs.
pub const TIME_CAP: Duration = Duration::from_secs(15);

/// A deterministic runner with the configured case count.
pub fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("SLUICEGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let seed: u64 = match std::env::var("SLUICEGATE_FUZZ_SEED").ok().as_deref() {
        None => 0x5eed_a11e_9a7e,
        Some("random") => fastrand::u64(..),
        Some(n) => n.parse().unwrap_or(0x5eed_a11e_9a7e),
    };
    eprintln!("property run: {cases} cases, seed {seed} (SLUICEGATE_FUZZ_SEED)");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Whether a target has used up its [`TIME_CAP`] (later cases pass at once).
pub fn out_of_time(started: Instant) -> bool {
    let cap = std::env::var("SLUICEGATE_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(TIME_CAP, Duration::from_secs);
    started.elapsed() > cap
}

/// The corpus of one target: `(file name, bytes)`, sorted by name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let bytes = std::fs::read(&path).expect("read seed");
            (name.unwrap_or_default(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// One edit of a mutation.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Replace the byte at (position mod length) with this one.
    Flip(usize, u8),
    /// Remove up to `n` bytes at a position.
    Delete(usize, usize),
    /// Insert a token at a position.
    Insert(usize, &'static str),
    /// Repeat the line at a position.
    DuplicateLine(usize),
}

/// Applies `edits` to `bytes`, positions taken modulo the current length.
pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Flip(at, b) if !bytes.is_empty() => bytes[at % len] = *b,
            Edit::Flip(..) => {}
            Edit::Delete(at, n) => {
                let start = (at % len).min(bytes.len());
                let end = (start + n % 16).min(bytes.len());
                bytes.drain(start..end);
            }
            Edit::Insert(at, token) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, token.bytes());
            }
            Edit::DuplicateLine(at) => {
                let at = (at % len).min(bytes.len());
                let start = bytes[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |i| at + i + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(end..end, line);
            }
        }
    }
    bytes
}

/// Up to eight edits using tokens from `vocabulary`.
pub fn edits(vocabulary: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Flip(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), proptest::sample::select(vocabulary))
            .prop_map(|(a, t)| Edit::Insert(a, t)),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ];
    proptest::collection::vec(edit, 0..8)
}

/// Runs `strategy` through `test`, panicking with proptest's shrunk failure.
pub fn check<S: Strategy>(
    mut runner: TestRunner,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(err) = runner.run(&strategy, test) {
        panic!("{err}");
    }
}
