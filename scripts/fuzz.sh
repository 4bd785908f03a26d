#!/usr/bin/env bash
# Runs every coverage-guided fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a
# bounded time each; exits non-zero on the first crash, leaving the input that
# crashed in fuzz/artifacts/<target>/ (reproduce: cargo fuzz run -a <target> <file>).
#
#   FUZZ_SECS=25 scripts/fuzz.sh              # every target, 25 s each (the default)
#   FUZZ_SECS=300 scripts/fuzz.sh chunked     # one target, longer
#
# Each run starts from the corpus kept in the repository (fuzz/corpus/<target>/ and,
# for targets that share them with the property tests, fuzz/seeds/<dir>/); what it
# finds goes to a scratch directory, so a run never edits the tree. To keep new
# coverage, minimise into the corpus: FUZZ_MERGE=1 scripts/fuzz.sh <target>.
#
# cargo-fuzz passes nightly-only `-Z` flags to rustc; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them, so no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-25}
export RUSTC_BOOTSTRAP=1
# Debug assertions on (overflow checks), AddressSanitizer (the default) for the
# dependencies' unsafe code.
flags=(--debug-assertions)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    timeout 900 cargo install cargo-fuzz --locked
fi

# Seeds shared with the property tests (tests/it/props/).
seeds_of() {
    case "$1" in
        request_head) echo fuzz/seeds/http_heads ;;
        config) echo fuzz/seeds/routes_toml ;;
        admin_body) echo fuzz/seeds/admin_json ;;
    esac
}

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build "${flags[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "$scratch/$t"
    dirs=("fuzz/corpus/$t")
    seeds=$(seeds_of "$t")
    [ -n "$seeds" ] && dirs+=("$seeds")
    echo "== fuzz $t for ${secs}s (corpus: ${dirs[*]})"
    # -timeout: one input taking this long is a hang, reported like a crash.
    status=0
    cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$scratch/$t.log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$scratch/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$scratch/$t.log" >&2
        echo "fuzz: $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
        exit "$status"
    fi
    if [ -n "${FUZZ_MERGE:-}" ]; then
        # Keeps only the inputs that add coverage to the kept corpus.
        cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "$scratch/$t" -- -merge=1 \
            >"$scratch/$t.merge.log" 2>&1 || { tail -n 20 "$scratch/$t.merge.log" >&2; exit 1; }
    fi
done
echo "fuzz: ${#targets[@]} target(s), ${secs}s each, no crash"
