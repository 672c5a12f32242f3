#!/usr/bin/env bash
# Runs every libFuzzer target that BUILD_DIR/tests/fuzz holds (configure with clang and
# -DAGLA_BUILD_FUZZERS=ON) for SECONDS each: first over its regression inputs
# (tests/fuzz/regressions/<target>/, each run once), then fuzzing a scratch copy of its seed corpus
# (tests/fuzz/corpus/<target>/) plus the regressions. Builds nothing and writes nothing into the
# source tree. Fails if any target crashes, leaks, hits UB, times out or runs out of memory; the
# input that did it is kept under BUILD_DIR/fuzz-artifacts/.
#
#   tests/fuzz/run_fuzzers.sh build-rel-fuzz 60
#   AGLA_FUZZ_SEED=0 tests/fuzz/run_fuzzers.sh build-rel-fuzz 600    # explore with a random seed
set -euo pipefail

if [[ $# -ne 2 || ! $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 BUILD_DIR SECONDS_PER_TARGET" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
artifacts="$build_dir/fuzz-artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/agla-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"

# Leak checking stays on (libFuzzer checks every input that allocated more than it freed).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# One intra-op thread: the inputs are tiny, and the runs must not compete for the CI cores.
export OMP_NUM_THREADS=1
# A fixed mutation seed makes a run repeat the previous ones' inputs (as far as its time reaches), so
# CI does not fail at random on a path no one has fuzzed yet; AGLA_FUZZ_SEED=0 picks a fresh seed for
# exploring.
seed="${AGLA_FUZZ_SEED:-1}"

failed=()
for corpus in "$here"/corpus/*/; do
  name=$(basename "$corpus")
  exe="$build_dir/tests/fuzz/fuzz_$name"
  if [[ ! -x $exe ]]; then
    echo "run_fuzzers: $exe is missing (build the fuzz_$name target)" >&2
    failed+=("$name (not built)")
    continue
  fi
  regressions="$here/regressions/$name"
  options=(-timeout=30 -rss_limit_mb=2560 -seed="$seed" -artifact_prefix="$artifacts/$name-")
  [[ -f $here/$name.dict ]] && options+=(-dict="$here/$name.dict")

  if [[ -d $regressions ]] && compgen -G "$regressions/*" >/dev/null; then
    echo "=== fuzz_$name: regression inputs"
    if ! "$exe" "${options[@]}" "$regressions"/* >"$work/$name.regressions.log" 2>&1; then
      tail -n 60 "$work/$name.regressions.log"
      failed+=("$name (regression input)")
      continue
    fi
  fi

  echo "=== fuzz_$name: ${seconds}s"
  mkdir -p "$work/$name"
  cp "$corpus"* "$work/$name/"
  dirs=("$work/$name")
  [[ -d $regressions ]] && dirs+=("$regressions")
  if "$exe" "${options[@]}" -max_total_time="$seconds" -print_final_stats=1 "${dirs[@]}" >"$work/$name.log" 2>&1; then
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$work/$name.log" || true
    echo "corpus: $(ls "$work/$name" | wc -l) inputs after fuzzing"
  else
    tail -n 80 "$work/$name.log"
    failed+=("$name")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run_fuzzers: FAILED: ${failed[*]} (inputs in $artifacts)" >&2
  exit 1
fi
echo "run_fuzzers: all targets clean"
