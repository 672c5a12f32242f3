#include <iostream>

#include "common/programs.hpp"
#include "common/threads.hpp"

namespace agla::tools {

int program_main(int (*run)(const std::vector<std::string>&, std::ostream&, std::ostream&), int argc, char** argv) {
  allow_restart(argv);
  return run(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}

}  // namespace agla::tools
