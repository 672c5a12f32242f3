#!/usr/bin/env bash
# Produces the ShapesWorld results tables (docs/shapesworld.md): writes the evaluation set, runs
# every decoding method x seed x model (biased, control) over the random / popular / adversarial /
# contrast / caption splits with agla_pope, prints markdown tables of mean ± sd over the seeds, and
# compares every method with sharpened decoding on the same questions, with standard errors over the
# questions (tools/shapesworld_differences.py; the POPE splits and the contrast split).
#
#   tools/run_shapesworld_results.sh [BUILD_DIR]
#
# BUILD_DIR holds tools/agla_pope and tools/agla_shapesworld (default: build). Settings
# (environment variables):
#   QUESTIONS  questions per POPE split and in the contrast split (default 1000; even)
#   CAPTIONS   images in the caption split (default QUESTIONS / 2)
#   SEEDS      decoding seeds (default "1 2 3"); greedy decoding and PAI (greedy, no random view) are
#              deterministic and run once
#   OUT        output folder (default shapesworld_results): eval/, answers/, results.jsonl, results.md,
#              differences.md
#   MODELS     folder with shapesworld-itm, shapesworld-lvlm, shapesworld-lvlm-control
#              (default tools/data/models)
#   JOBS       runs in parallel (default 1; one thread each)
#   SPLITS     splits to run (default "random popular adversarial contrast captions")
#   METHODS    methods to run (default: all sixteen rows; vcd-2 is VCD with alpha 2 / beta 0.5)
#   VARIANTS   models to run (default "biased control"); results of separate runs can be merged with
#              cat A/results.jsonl B/results.jsonl > all.jsonl && agla_pope --summarize all.jsonl
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:-build}"
pope="$build/tools/agla_pope"
world="$build/tools/agla_shapesworld"
questions="${QUESTIONS:-1000}"
captions="${CAPTIONS:-$((questions / 2))}"
seeds="${SEEDS:-1 2 3}"
out="${OUT:-shapesworld_results}"
models="${MODELS:-$here/data/models}"
jobs="${JOBS:-1}"
splits="${SPLITS:-random popular adversarial contrast captions}"
variants="${VARIANTS:-biased control}"
methods="${METHODS:-regular greedy sharpened cutoff-only vcd vcd-2 agla agla-random-mask agla-released ritual icd m3id m3id-logits pai vacode agla+vcd}"

for program in "$pope" "$world"; do
  [[ -x "$program" ]] || { echo "error: $program not found; build it first (cmake --build $build --target $(basename "$program"))" >&2; exit 1; }
done
[[ -f "$models/shapesworld-itm/config.json" ]] || { echo "error: no ITM model in $models/shapesworld-itm" >&2; exit 1; }

mkdir -p "$out/answers"
"$world" --out "$out/eval" --seed 1 --questions-per-split "$questions" --captions "$captions" >/dev/null
: > "$out/results.jsonl"

file_of() {
  case "$1" in
    contrast) echo "$out/eval/shapesworld_contrast.jsonl" ;;
    captions) echo "$out/eval/shapesworld_captions.jsonl" ;;
    *) echo "$out/eval/shapesworld_pope_$1.jsonl" ;;
  esac
}

# One line per run: model dir, model id, method, extra options, seed, split.
plan="$out/plan.txt"
: > "$plan"
for variant in $variants; do
  dir="$models/shapesworld-lvlm"; [[ $variant == control ]] && dir="$models/shapesworld-lvlm-control"
  if [[ ! -f "$dir/config.json" ]]; then
    echo "warning: no $variant model in $dir; its rows are skipped" >&2
    continue
  fi
  for method in $methods; do
    for seed in $seeds; do
      for split in $splits; do
        echo "$dir shapesworld-lvlm-$variant $method $seed $split" >> "$plan"
      done
      [[ $method == greedy || $method == pai ]] && break
    done
  done
done

run_one() {
  local dir="$1" id="$2" method="$3" seed="$4" split="$5" extra=()
  if [[ $method == vcd-2 ]]; then method=vcd; extra=(--alpha 2 --beta 0.5); fi
  "$pope" --questions "$(file_of "$split")" --method "$method" "${extra[@]}" --seed "$seed" \
    --lvlm "$dir" --itm "$models/shapesworld-itm" --model-id "$id" \
    --answers "$out/answers/$id.$3.seed$seed.$split.jsonl" --results "$out/results.jsonl" \
    --quiet --json --threads 1 >/dev/null
  echo "done: $id $3 seed $seed $split" >&2
}
export -f run_one file_of
export pope out models

start=$(date +%s)
total=$(wc -l < "$plan")
echo "running $total runs of $questions questions ($captions captions), $jobs in parallel" >&2
xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ < "$plan"
echo "all runs done in $(( $(date +%s) - start )) s" >&2

"$pope" --summarize "$out/results.jsonl" | tee "$out/results.md"
python3 "$here/shapesworld_differences.py" "$out" | tee "$out/differences.md"
