#pragma once
/// \file
/// The programs' logic, callable in-process: each takes the arguments (without the program name),
/// writes its report to `out` and progress, warnings and errors to `err`, and returns the exit
/// status (0 success, 1 any error, with the message on `err`). docs/tools.md describes every option
/// and output.

#include <ostream>
#include <string>
#include <vector>

namespace agla::tools {

/// `agla_caption`: regular and AGLA captions of one image (same seed), their decoding speed, and
/// IPM's heat-map, mask and augmented view as PNG files.
int run_caption(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// `agla_pope`: runs an LVLM with one decoding method over a POPE-format question file (or a
/// caption split) and scores the answers; `--evaluate` scores answer files; `--summarize` turns the
/// results of many runs into markdown tables.
int run_pope(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// `agla_mme`: runs an LVLM with one decoding method over the MME benchmark's folders, writes the
/// official tool's results files and scores them as its calculation.py does; `--evaluate` scores a
/// results folder.
int run_mme(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// `agla_chair`: captions COCO images with one decoding method, writes the captions and scores them
/// with CHAIR as the reference chair.py does; `--evaluate` scores a captions file.
int run_chair(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// `agla_ipm`: AGLA's image-prompt matching on one image and prompt (GradCAM, ITC, mask,
/// augmented view), as text or one JSON object.
int run_ipm(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// `agla_shapesworld`: writes ShapesWorld's evaluation sets in POPE's format and prints the
/// co-occurrence statistics of the training distributions.
int run_shapesworld(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// Runs `run` (one of the above) as a program's main does: with the process's arguments, standard
/// streams and the thread policy's one-time restart allowed.
int program_main(int (*run)(const std::vector<std::string>&, std::ostream&, std::ostream&), int argc, char** argv);

}  // namespace agla::tools
