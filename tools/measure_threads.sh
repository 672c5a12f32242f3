#!/usr/bin/env bash
# Measures the thread settings docs/tools.md compares, on the shipped ShapesWorld models:
# agla_caption's decoding speed (regular and AGLA tokens/s, each run reporting the median of its
# timing runs) and agla_ipm's IPM time, over REPS rounds in which the settings alternate, so a
# change in the machine's load hits them alike. Prints a markdown table: median over the rounds
# (min - max).
#
#   tools/measure_threads.sh [BUILD_DIR]        # REPS=6 by default
#
# Settings: "auto" is the default (--threads 0: one thread for these small models); "2, spinning"
# is two threads with libgomp's default waiting (the programs' former default on a 2-core
# machine; an empty OMP_WAIT_POLICY makes libgomp keep its default and the program not restart);
# "2, passive" is two threads after the program's restart with OMP_WAIT_POLICY=PASSIVE.
set -euo pipefail
build="${1:-build}"
caption="$build/tools/agla_caption"
ipm="$build/tools/agla_ipm"
data="$build/tools/data"
reps="${REPS:-6}"
for program in "$caption" "$ipm"; do
  [[ -x "$program" ]] || { echo "error: $program not found; build it first" >&2; exit 1; }
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

for rep in $(seq 1 "$reps"); do
  for setting in auto spin2 passive2; do
    case $setting in
      auto) env=(env -u OMP_WAIT_POLICY); threads=0 ;;
      spin2) env=(env OMP_WAIT_POLICY=); threads=2 ;;
      passive2) env=(env -u OMP_WAIT_POLICY); threads=2 ;;
    esac
    start=$(date +%s.%N)
    "${env[@]}" "$caption" --json --threads "$threads" --out "$out/pictures" 2>/dev/null > "$out/caption.json"
    end=$(date +%s.%N)
    "${env[@]}" "$ipm" --itm "$data/models/shapesworld-itm" --image "$data/sample.png" \
      --prompt "Is there a star in the image?" --threads "$threads" --json 2>/dev/null > "$out/ipm.json"
    python3 - "$setting" "$start" "$end" "$out/caption.json" "$out/ipm.json" >> "$out/rows.tsv" <<'PY'
import json, sys
setting, start, end, caption, ipm = sys.argv[1:]
c, i = json.load(open(caption)), json.load(open(ipm))
print(setting, c["regular"]["tokens_per_second"], c["agla"]["tokens_per_second"],
      i["timings_ms"]["total"], float(end) - float(start), sep="\t")
PY
  done
done

python3 - "$out/rows.tsv" "$reps" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
names = {"auto": "auto (1 thread)", "spin2": "2, spinning", "passive2": "2, passive"}
print(f"{sys.argv[2]} rounds; median (min - max)\n")
print("| setting | regular tokens/s | AGLA tokens/s | IPM ms | agla_caption process s |")
print("| --- | ---: | ---: | ---: | ---: |")
for key, name in names.items():
    cols = [[float(r[c]) for r in rows if r[0] == key] for c in range(1, 5)]
    cell = lambda v, f: f"{f.format(statistics.median(v))} ({f.format(min(v))} - {f.format(max(v))})"
    print(f"| {name} | {cell(cols[0], '{:.0f}')} | {cell(cols[1], '{:.0f}')} | {cell(cols[2], '{:.1f}')} | "
          f"{cell(cols[3], '{:.2f}')} |")
PY
