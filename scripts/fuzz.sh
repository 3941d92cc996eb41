#!/usr/bin/env bash
# Fuzzing of p2pnat-proto's decoders with cargo-fuzz (libFuzzer). See docs/FUZZING.md.
#
#   scripts/fuzz.sh smoke          every target for SMOKE_SECS seconds (default 5), from the
#                                  committed corpus (fuzz/corpus/<target>, left unchanged),
#                                  AddressSanitizer build; fails on any crash. test-all.sh runs it.
#   scripts/fuzz.sh long N [JOBS] [MAX_SECS]
#                                  N executions per target (JOBS targets at once, default 1;
#                                  each stopped after MAX_SECS seconds if given, 0 = no limit),
#                                  build without sanitizer (throughput); prints executions,
#                                  exec/s, corpus size and coverage per target. New corpus
#                                  entries go to fuzz/target/long-corpus/<target>.
#   scripts/fuzz.sh corpus [DIR..] regenerates fuzz/corpus: the seeds of examples/seeds.rs (real
#                                  encoder output), plus any corpus DIR/<target> given, minimised
#                                  with `cargo fuzz cmin`.
#
# Needs cargo-fuzz and the nightly toolchain (scripts/install-deps.sh installs both). Where no
# nightly can be had (a machine that reaches no toolchain server), it says so loudly and builds
# with the default toolchain and RUSTC_BOOTSTRAP=1, which cargo-fuzz supports (FUZZ_TOOLCHAIN=
# stable forces that). Without cargo-fuzz, or when neither toolchain builds, nothing is fuzzed:
# it says so loudly and fails when CI=true, passes (skipped) otherwise, so an offline developer
# can still run the rest of test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
ALL_TARGETS=(demux stun control control_stream path_wire rv_wire app_frames app_lines turn_server turn_client turn_stream)
# FUZZ_TARGETS="rv_wire stun" restricts smoke and long runs to those targets.
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL_TARGETS[*]}}"
for target in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $target "* ]] || { echo "fuzz: unknown target $target (known: ${ALL_TARGETS[*]})" >&2; exit 2; }
done
TRIPLE=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
# A decoder that allocates more than this in one call is a failure (libFuzzer's malloc limit).
LIMITS=(-rss_limit_mb=1024 -malloc_limit_mb=128)

missing() {
  {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!! FUZZING NOT RUN: $1"
    echo "!! run scripts/install-deps.sh (needs the nightly toolchain and cargo-fuzz)"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  } >&2
  if [ "${CI:-}" = true ]; then
    exit 1
  fi
  exit 0
}

FUZZ_CARGO=(cargo +nightly)
check_tools() {
  cargo fuzz --version >/dev/null 2>&1 || missing "cargo-fuzz is not installed"
  if [ "${FUZZ_TOOLCHAIN:-nightly}" = nightly ] && rustup run nightly rustc --version >/dev/null 2>&1; then
    return
  fi
  command -v rustc >/dev/null 2>&1 || missing "no Rust toolchain"
  {
    echo "!! fuzz: NO NIGHTLY TOOLCHAIN: building with $(rustc --version) and RUSTC_BOOTSTRAP=1"
  } >&2
  export RUSTC_BOOTSTRAP=1
  FUZZ_CARGO=(cargo)
}

# One libFuzzer binary's summary from its log: executions, exec/s, coverage, features.
summary() {
  local log=$1
  local execs speed done
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  done=$(grep -E '^#[0-9]+\s+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
  local cov ft
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done")
  echo "${execs:-?} ${speed:-?} ${cov:-?} ${ft:-?}"
}

# Builds every target (extra arguments: cargo fuzz build options); the log only on failure.
build() {
  local log
  log=$(mktemp)
  if ! "${FUZZ_CARGO[@]}" fuzz build "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "fuzz: cargo fuzz build failed (${FUZZ_CARGO[*]})" >&2
    exit 1
  fi
  rm -f "$log"
}

corpus_size() {
  local dir=$1
  echo "$(find "$dir" -type f | wc -l) files, $(du -sb "$dir" | cut -f1) bytes"
}

mode=${1:-}
case "$mode" in
  smoke)
    check_tools
    secs=${SMOKE_SECS:-5}
    start=$(date +%s)
    echo "fuzz smoke: building ${#TARGETS[@]} targets (${FUZZ_CARGO[*]}, AddressSanitizer)"
    build --sanitizer address
    bin="$CARGO_TARGET_DIR/$TRIPLE/release"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    failed=()
    for target in "${TARGETS[@]}"; do
      mkdir -p "$work/$target" "artifacts/$target"
      log="$work/$target.log"
      if "$bin/$target" -max_total_time="$secs" -print_final_stats=1 "${LIMITS[@]}" \
        -artifact_prefix="artifacts/$target/" "$work/$target" "corpus/$target" >"$log" 2>&1; then
        read -r execs speed cov ft <<<"$(summary "$log")"
        printf '  %-15s ok  %9s execs %7s exec/s  cov %5s  ft %5s\n' "$target" "$execs" "$speed" "$cov" "$ft"
      else
        tail -40 "$log"
        echo "  $target FAILED: reproducer in fuzz/artifacts/$target/" >&2
        failed+=("$target")
      fi
    done
    echo "fuzz smoke: $(( $(date +%s) - start )) s"
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz smoke: crashes in ${failed[*]}" >&2
      exit 1
    fi
    ;;
  long)
    check_tools
    runs=${2:?usage: fuzz.sh long N [JOBS] [MAX_SECS]}
    jobs=${3:-1}
    max_secs=${4:-0}
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/long"
    echo "fuzz long: building ${#TARGETS[@]} targets (${FUZZ_CARGO[*]}, no sanitizer: panics, overflow and bounds checks stay on)"
    build --sanitizer none
    bin="$CARGO_TARGET_DIR/$TRIPLE/release"
    out="$CARGO_TARGET_DIR/../long-corpus"
    logs="$CARGO_TARGET_DIR/../long-logs"
    mkdir -p "$out" "$logs"
    run_one() {
      local target=$1
      mkdir -p "$out/$target" "artifacts/$target"
      local start=$(date +%s)
      if "$bin/$target" -runs="$runs" -max_total_time="$max_secs" -print_final_stats=1 "${LIMITS[@]}" \
        -artifact_prefix="artifacts/$target/" "$out/$target" "corpus/$target" \
        >"$logs/$target.log" 2>&1; then
        echo ok >"$logs/$target.status"
      else
        echo CRASH >"$logs/$target.status"
      fi
      echo $(( $(date +%s) - start )) >"$logs/$target.secs"
    }
    export -f run_one
    export bin runs max_secs out logs
    export LIMITS_STR="${LIMITS[*]}"
    # The slowest (stateful) targets first, so they get the most of a time-capped run.
    printf '%s\n' "${TARGETS[@]}" | awk '/^turn_(server|client)$/ { print; next } { rest = rest $0 "\n" } END { printf "%s", rest }' | xargs -P "$jobs" -I{} bash -c 'LIMITS=($LIMITS_STR); run_one {}'
    printf '| %-15s | %-6s | %12s | %8s | %6s | %6s | %-28s | %6s |\n' target result executions exec/s cov ft "corpus (new + committed)" secs
    for target in "${TARGETS[@]}"; do
      read -r execs speed cov ft <<<"$(summary "$logs/$target.log")"
      printf '| %-15s | %-6s | %12s | %8s | %6s | %6s | %-28s | %6s |\n' "$target" \
        "$(cat "$logs/$target.status")" "$execs" "$speed" "$cov" "$ft" \
        "$(find "$out/$target" "corpus/$target" -type f | wc -l) files" "$(cat "$logs/$target.secs")"
    done
    if grep -q CRASH "$logs"/*.status; then
      echo "fuzz long: crashes, reproducers in fuzz/artifacts/ (logs in $logs)" >&2
      exit 1
    fi
    ;;
  corpus)
    check_tools
    shift
    seeds=$(mktemp -d)
    trap 'rm -rf "$seeds"' EXIT
    cargo run -q --example seeds -- "$seeds"
    for target in "${TARGETS[@]}"; do
      mkdir -p "corpus/$target"
      cp "$seeds/$target"/* "corpus/$target/"
      for extra in "$@"; do
        if [ -d "$extra/$target" ]; then cp "$extra/$target"/* "corpus/$target/" 2>/dev/null || true; fi
      done
      "${FUZZ_CARGO[@]}" fuzz cmin "$target" "corpus/$target" >"$seeds/$target.cmin.log" 2>&1 \
        || { tail -20 "$seeds/$target.cmin.log"; exit 1; }
      echo "  $target: $(corpus_size "corpus/$target")"
    done
    echo "fuzz corpus: $(du -sb corpus | cut -f1) bytes in all"
    ;;
  *)
    echo "usage: scripts/fuzz.sh smoke | long N [JOBS] | corpus [DIR..]" >&2
    exit 2
    ;;
esac
