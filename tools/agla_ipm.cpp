// agla_ipm: AGLA's image-prompt matching (GradCAM, ITC, mask, augmented view) on one image and prompt.
// Options, outputs and exit codes: agla_ipm --help and docs/tools.md.
#include "common/programs.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::tools::run_ipm, argc, argv); }
