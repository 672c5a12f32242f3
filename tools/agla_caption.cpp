// agla_caption: regular and AGLA captions of one image side by side, their speed, and IPM's pictures.
// Options, outputs and exit codes: agla_caption --help and docs/tools.md.
#include "common/programs.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::tools::run_caption, argc, argv); }
