// agla_chair: CHAIR on COCO captions (caption an image list, write the captions, score them as the
// reference chair.py does; --evaluate). Options, outputs and exit codes: agla_chair --help.
#include "common/programs.hpp"

int main(int argc, char** argv) { return agla::tools::program_main(agla::tools::run_chair, argc, argv); }
