//! `routes.toml` validation: never panics, is deterministic, names a path or a
//! position for every error, and accepts every well-formed file it is given.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sluicegate::config::{parse, ConfigErrors};
use tokio::time::Instant;

use super::{check, edits, mutate, out_of_time, runner, seeds};

/// Tokens a mutation inserts: the file's own syntax and values at its edges.
const VOCABULARY: &[&str] = &[
    "[[pools]]\nname = \"p\"\n",
    "[[routes]]\nname = \"r\"\nsplit = [{ pool = \"p\", weight = 1 }]\n",
    "[listen]\n",
    "[pools.health]\n",
    "weight = 99999999999999999999\n",
    "weight = -1\n",
    "= \"0s\"\n",
    "max_request_body = \"18446744073709551615GiB\"\n",
    "max_header_bytes = 1\n",
    "idle_timeout = \"1ns\"\n",
    "addr = \"[::1]:0\"\n",
    "addr = \"256.1.1.1:80\"\n",
    "host = \"*.\"\n",
    "path_prefix = \"\"\n",
    "headers = { \"bad header\" = \"\\u0000\" }\n",
    "method = [\"\", \"GET\"]\n",
    "\"",
    "{",
    "]]",
    "é",
    "\u{0}",
    "\n",
    "#",
];

/// Valid files must parse; the others must fail with at least this many errors.
const EXPECTED: &[(&str, usize)] = &[
    ("errors.toml", 15),
    ("example.toml", 0),
    ("limits.toml", 0),
    ("minimal.toml", 0),
    ("shapes.toml", 4),
];

fn assert_errors_explained(errors: &ConfigErrors) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty(), "an error result with no error");
    for e in &errors.0 {
        prop_assert!(
            !e.message.trim().is_empty(),
            "error without a message at {}",
            e.path
        );
        let shown = e.to_string();
        prop_assert!(shown.ends_with(e.message.as_str()));
    }
    Ok(())
}

#[test]
fn config_seeds_replay() {
    let corpus = seeds("routes_toml");
    assert_eq!(
        corpus.len(),
        EXPECTED.len(),
        "update EXPECTED for new seeds"
    );
    for ((name, bytes), (expected_name, errors)) in corpus.iter().zip(EXPECTED) {
        assert_eq!(name, expected_name);
        let text = String::from_utf8_lossy(bytes);
        match parse(&text) {
            Ok(spec) => {
                assert_eq!(*errors, 0, "{name} parsed but should not");
                assert!(!sluicegate::check::render(&spec).is_empty());
                assert!(
                    sluicegate::testing::control_plane::plan::diff(&spec, &spec).is_empty(),
                    "{name}"
                );
            }
            Err(e) => {
                assert!(e.0.len() >= *errors && *errors > 0, "{name}: {e}");
                assert_errors_explained(&e).unwrap_or_else(|err| panic!("{name}: {err}"));
            }
        }
    }
}

#[test]
fn mutated_configs_never_panic_and_explain_every_error() {
    let corpus: Vec<Vec<u8>> = seeds("routes_toml").into_iter().map(|(_, b)| b).collect();
    let started = Instant::now();
    let strategy = (proptest::sample::select(corpus), edits(VOCABULARY));
    check(runner(512), strategy, |(seed, edits)| {
        if out_of_time(started) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&mutate(seed, &edits)).into_owned();
        let first = parse(&text);
        let again = parse(&text);
        match (&first, &again) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.routes.len(), b.routes.len());
                let _ = sluicegate::check::render(a);
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.to_string(), b.to_string(), "not deterministic");
                assert_errors_explained(a)?;
            }
            _ => prop_assert!(false, "one parse failed and the other did not"),
        }
        Ok(())
    });
}

/// A valid file built from parts: pools with backends, routes splitting over them.
fn valid_config() -> impl Strategy<Value = (String, usize, usize)> {
    let backend = (1u8..=254, 1u16..=65535, 1u32..=1_000_000)
        .prop_map(|(ip, port, w)| format!("{{ addr = \"127.0.0.{ip}:{port}\", weight = {w} }}"));
    let pool = proptest::collection::vec(backend, 0..4);
    let pools = proptest::collection::vec(pool, 1..4);
    let limits = (
        8192u32..=1_048_576,
        1u16..=1000,
        1u32..=10_000,
        1u64..=1 << 40,
    );
    (pools, proptest::collection::vec((0u8..4, 0u32..=1_000_000), 1..4), limits).prop_map(
        |(pools, routes, (head, fields, streams, body))| {
            let mut text = format!(
                "[listen]\nhttp = \"127.0.0.1:0\"\nmax_header_bytes = {head}\nmax_headers = {fields}\nhttp2_max_concurrent_streams = {streams}\n"
            );
            for (i, backends) in pools.iter().enumerate() {
                // Duplicate addresses in a pool are an error: keep the first of each.
                let mut unique: Vec<&String> = Vec::new();
                for b in backends {
                    let addr = b.split(',').next().unwrap_or("");
                    if !unique.iter().any(|u| u.starts_with(addr)) {
                        unique.push(b);
                    }
                }
                let list: Vec<&str> = unique.iter().map(|s| s.as_str()).collect();
                text.push_str(&format!("[[pools]]\nname = \"pool-{i}\"\nbackends = [{}]\n", list.join(", ")));
            }
            for (i, (pool, weight)) in routes.iter().enumerate() {
                let pool = usize::from(*pool) % pools.len();
                text.push_str(&format!(
                    "[[routes]]\nname = \"route-{i}\"\nmatch = {{ path_prefix = \"/r{i}\" }}\nsplit = [{{ pool = \"pool-{pool}\", weight = {} }}]\nmax_request_body = {body}\n",
                    weight.max(&1)
                ));
            }
            (text, pools.len(), routes.len())
        },
    )
}

#[test]
fn generated_valid_configs_are_accepted_as_written() {
    let started = Instant::now();
    check(runner(256), valid_config(), |(text, pools, routes)| {
        if out_of_time(started) {
            return Ok(());
        }
        let spec = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(spec.pools.len(), pools);
        prop_assert_eq!(spec.routes.len(), routes);
        prop_assert!(spec.routes.iter().all(|r| r.max_request_body.is_some()));
        prop_assert!(sluicegate::testing::control_plane::plan::diff(&spec, &spec).is_empty());
        Ok(())
    });
}
