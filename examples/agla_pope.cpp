// agla_pope: the POPE / CHAIR benchmark runner.
//
// Run mode: runs an LVLM (a BLIP captioning directory such as the ShapesWorld LVLM, or a llava-hf
// LLaVA-1.5 directory) with one decoding method over a POPE-format question file (question_id,
// image, text, label) or ShapesWorld's caption split, writes the answers jsonl the reference
// scripts write (question_id, prompt, text, model_id, image, plus metadata: method, seed, alpha,
// beta, token ids and, for the IPM views, the ITC value and kept fraction), shows a progress bar
// with an ETA and prints POPE's metrics (or CHAIR):
//   agla_pope --questions shapesworld_eval/shapesworld_pope_adversarial.jsonl --method agla --seed 1
// Methods (DESIGN section 5): regular, greedy, sharpened, cutoff-only, vcd, agla, agla-random-mask,
// agla-released. --num-chunks/--chunk-idx split a run over machines; concatenate the answer files.
//
// Evaluate-only mode: scores an answers file against a POPE question file (accuracy, precision,
// recall, F1, yes-ratio, false-positive rate, counts; the contrast split adds partner present /
// absent) or a caption file (CHAIR_i, CHAIR_s, recall):
//   agla_pope --evaluate GT.jsonl ANSWERS.jsonl [--parser pope|substring] [--json]
//
// Summary mode: markdown tables (mean ± sd over seeds) of the runs appended with --results FILE:
//   agla_pope --summarize FILE
//
// Bad input: the library's message on stderr, exit status 1. Options: agla_pope --help.
#include <iostream>
#include <string>
#include <vector>

#include "common/pope_app.hpp"

int main(int argc, char** argv) {
  return agla::examples::run_pope(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
