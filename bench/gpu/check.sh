#!/usr/bin/env bash
# The CUDA check: on a machine with an NVIDIA GPU, builds the CUDA tests and benchmarks against the
# libtorch of that machine's PyTorch (torch.utils.cmake_prefix_path), runs every CUDA test and the
# CUDA benchmarks, and writes report.json and report.md under OUT_DIR.
#
#   bench/gpu/check.sh OUT_DIR [BUILD_DIR]      (BUILD_DIR default: build-cuda)
#
# Exit status: 0 when every test passed, 1 when a test or the build failed, 2 on bad arguments,
# 3 when there is no CUDA device (the report says so; nothing is built).
set -uo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 OUT_DIR [BUILD_DIR]" >&2
  exit 2
fi
cd "$(dirname "$0")/../.."
out=$(mkdir -p "$1" && cd "$1" && pwd)
build=${2:-build-cuda}
python=${PYTHON:-python3}

write_report() {  # STATUS MESSAGE: report.json and report.md from what the run left in $out
  "$python" - "$out" "$1" "$2" <<'PY'
import json, os, sys
out, status, message = sys.argv[1], sys.argv[2], sys.argv[3]
report = {"status": status, "message": message}
device_file = os.path.join(out, "device.txt")
if os.path.exists(device_file):
    report["device"] = open(device_file).read().strip()
tests_file = os.path.join(out, "ctest.log")
if os.path.exists(tests_file):
    lines = open(tests_file).read().splitlines()
    report["tests"] = [l.strip() for l in lines if " Test " in l and ("Passed" in l or "Failed" in l or "Skipped" in l)]
bench_file = os.path.join(out, "cuda_bench.json")
rows = []
if os.path.exists(bench_file):
    for b in json.load(open(bench_file)).get("benchmarks", []):
        keep = {k: v for k, v in b.items() if k not in ("run_name", "run_type", "repetitions", "repetition_index",
                                                        "threads", "family_index", "per_family_instance_index")}
        rows.append(keep)
report["benchmarks"] = rows
json.dump(report, open(os.path.join(out, "report.json"), "w"), indent=2)
with open(os.path.join(out, "report.md"), "w") as md:
    md.write(f"# CUDA check: {status}\n\n{message}\n\n")
    if "device" in report:
        md.write(f"Device: {report['device']}\n\n")
    if report.get("tests"):
        md.write("## Tests\n\n" + "\n".join(f"- {t}" for t in report["tests"]) + "\n\n")
    if rows:
        md.write("## Benchmarks\n\n| benchmark | counters |\n| --- | --- |\n")
        for r in rows:
            counters = ", ".join(f"{k} {v:.4g}" for k, v in r.items() if isinstance(v, float) and k not in
                                 ("real_time", "cpu_time", "iterations"))
            md.write(f"| {r.get('name')} | {r.get('error_message', counters)} |\n")
PY
  echo "check.sh: $1: $2 (report in $out)"
}

# 1. The device: a driver, and a PyTorch that sees it.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >"$out/device.txt" 2>/dev/null ||
   ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  rm -f "$out/device.txt"
  write_report "no-device" "no CUDA device: nvidia-smi or a CUDA-enabled PyTorch is missing, or it sees no GPU"
  exit 3
fi
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')

# 2. Build only what the check runs.
targets="cuda_test blip_test io_image_test cuda_bench"
if ! cmake -S . -B "$build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release -DAGLA_BUILD_TOOLS=OFF \
       -DAGLA_BUILD_EXAMPLES=OFF -DAGLA_INSTALL=OFF -DAGLA_BUILD_BENCHMARKS=ON >"$out/build.log" 2>&1 ||
   ! cmake --build "$build" -j "$(nproc)" --target $targets >>"$out/build.log" 2>&1; then
  write_report "build-failed" "the build failed; see build.log"
  exit 1
fi

# 3. Every CUDA test (the cuda_test program and the CUDA tests of the others), then the benchmarks.
status=0
ctest --test-dir "$build" --output-on-failure -R 'Cuda' >"$out/ctest.log" 2>&1 || status=1
"$build/bench/cuda_bench" --benchmark_format=json --benchmark_out="$out/cuda_bench.json" \
  --benchmark_out_format=json >"$out/cuda_bench.log" 2>&1 || status=1
if [[ $status -eq 0 ]]; then
  write_report "passed" "every CUDA test passed; benchmark figures below"
else
  write_report "failed" "a CUDA test or the benchmark failed; see ctest.log and cuda_bench.log"
fi
exit $status
