// agla_shapesworld: writes ShapesWorld's evaluation sets and prints the training distributions' statistics.
// Options, outputs and exit codes: agla_shapesworld --help and docs/tools.md.
#include "common/programs.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::tools::run_shapesworld, argc, argv); }
