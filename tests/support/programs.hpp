// The programs of tools/ run in-process with captured streams, and the ShapesWorld inputs they
// are run on, for the test programs that test their code (tools_test, eval_tools_test: they link
// agla_tools).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "agla/io/image.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/tensor.hpp"
#include "common/programs.hpp"
#include "scratch.hpp"

namespace agla::test {

/// agla_caption on `args`.
inline Output caption(const std::vector<std::string>& args) { return run(agla::tools::run_caption, args); }
/// agla_pope on `args`.
inline Output pope(const std::vector<std::string>& args) { return run(agla::tools::run_pope, args); }
/// agla_ipm on `args`.
inline Output ipm(const std::vector<std::string>& args) { return run(agla::tools::run_ipm, args); }
/// agla_mme on `args`.
inline Output mme(const std::vector<std::string>& args) { return run(agla::tools::run_mme, args); }
/// agla_chair on `args`.
inline Output chair(const std::vector<std::string>& args) { return run(agla::tools::run_chair, args); }

/// Runs `program` on the arguments of every case and expects exit status 1, nothing on stdout and
/// the case's message in stderr.
inline void expect_errors(Program program,
                          const std::vector<std::pair<std::vector<std::string>, std::string>>& cases) {
  for (const auto& [args, message] : cases) {
    const Output o = run(program, args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(o.status, 1) << joined;
    EXPECT_NE(o.err.find(message), std::string::npos) << joined << "\nexpected: " << message << "\nstderr: " << o.err;
    EXPECT_TRUE(o.out.empty()) << joined << ": " << o.out;
  }
}

/// Writes a ShapesWorld evaluation set (default seed) with `questions_per_split` questions in each
/// split and `captions` captions, with its PNG images, to `dir`.
inline void write_shapesworld_eval_set(const std::string& dir, int questions_per_split, int captions) {
  agla::shapesworld::EvalOptions options;
  options.questions_per_split = questions_per_split;
  options.captions = captions;
  agla::shapesworld::write_eval_set(agla::shapesworld::build_eval_set(options), dir,
                                    [](const std::string& path, const agla::shapesworld::Scene& scene) {
                                      agla::io::write_png(path, agla::shapesworld::image_tensor(scene));
                                    });
}

}  // namespace agla::test
