// agla_train: trains the ShapesWorld models shipped in tools/data/models and prints their quality gates.
// Options, outputs and exit codes: agla_train --help and docs/tools.md.
#include "common/programs.hpp"
#include "train/train_program.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::train::run_train, argc, argv); }
