// agla_pope: the POPE / CHAIR benchmark runner (run a model over a question file, --evaluate, --summarize).
// Options, outputs and exit codes: agla_pope --help and docs/tools.md.
#include "common/programs.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::tools::run_pope, argc, argv); }
