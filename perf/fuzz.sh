#!/usr/bin/env bash
# Run each fuzz target for N seconds (default 60) with libFuzzer.
#
#   perf/fuzz.sh            # every target, 60 s each
#   perf/fuzz.sh 300 core_events
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain it
# runs with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags for the
# sanitizer). New inputs go to fuzz/target/corpus-<target>; the seed corpus
# in fuzz/corpus/<target> is read, never written. Crashes land in
# fuzz/artifacts/<target>/; reproduce one with
#   cargo test --test fuzz_corpus   (after copying it into fuzz/corpus/<target>)
# or `cargo fuzz run <target> fuzz/artifacts/<target>/crash-...`.
# To grow the checked-in corpus: cargo fuzz cmin <target> fuzz/corpus/<target>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config_line config_grammar core_events client_hello proxy_header)
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "target/corpus-$t"
    echo "== $t for ${SECS}s"
    # The dictionary is generated from the command table (see config::grammar::fuzz_dictionary).
    DICT=()
    [ "$t" = config_line ] && DICT=(-dict=config_line.dict)
    if ! cargo fuzz run "$t" "target/corpus-$t" "corpus/$t" -- "${DICT[@]}" -max_total_time="$SECS" -max_len=4096 -print_final_stats=1 2>&1 \
        | grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|thread '.*' panicked|artifact_prefix|Test unit written)"; then
        :
    fi
    if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
        echo "!! $t: findings in fuzz/artifacts/$t/"
        status=1
    fi
done
exit $status
