// agla_mme: the MME runner (run a model over the benchmark's folders, write the official results
// files, score them as calculation.py does; --evaluate). Options, outputs and exit codes: agla_mme --help.
#include "common/programs.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::tools::run_mme, argc, argv); }
