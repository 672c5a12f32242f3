#pragma once
/// \file
/// MME (Fu et al., "MME: A Comprehensive Evaluation Benchmark for Multimodal Large Language
/// Models"): reading the benchmark's own folder layout, writing and reading the official
/// evaluation tool's results files, and scoring them exactly as its `eval_tool/calculation.py`
/// does.
///
/// Benchmark layout (`MME_Benchmark_release_version/`): one folder per subtask. A folder with an
/// `images/` subfolder keeps its images there and one `<image stem>.txt` per image in
/// `questions_answers_YN/`; any other folder keeps images and `.txt` files side by side. Each
/// `.txt` holds two lines `question<TAB>Yes|No`.
///
/// Results layout: one `<subtask>.txt` per subtask, lines `image<TAB>question<TAB>ground
/// truth<TAB>prediction`, the two questions of an image on consecutive lines.
///
/// Scoring rules of `calculation.py`, kept here:
/// - a file is read as Python's `readlines()` does in text mode: `\n`, `\r\n` and a lone `\r` end
///   a line, and the line keeps its ending (as `\n`), so the prediction field ends with it;
/// - lines are paired by position (lines 1-2, 3-4, ...) whatever their image names; an odd count,
///   a line without exactly four tab-separated fields, a ground truth other than `yes`/`no` after
///   lower-casing (no trimming), and an empty file stop the tool, and throw `FormatError` here;
/// - the prediction is lower-cased; it is `yes` or `no` when it is exactly that, otherwise it is
///   read from its first four characters: `yes` when they contain "yes", else `no` when they
///   contain "no", else `other` (a wrong answer). Four characters cannot hold both words, so no
///   tie can arise; leading spaces count ("  yes" is `other`); the line ending never changes the
///   reading; an empty prediction (a missing answer) is `other`;
/// - acc = correct questions / questions, acc+ = images with both questions correct / images,
///   score = acc * 100 + acc+ * 100 (in that order, in double precision), and a total is the sum of
///   its subtasks' scores in the tool's order, starting from 0.
/// Departures, each where the tool would crash: subtasks may be a subset of the fourteen (the
/// tool opens all fourteen files); a total whose subtasks are all absent is reported as absent.
/// Files in the results folder that are not named after a subtask are ignored, as by the tool.

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/pope.hpp"
#include "agla/eval/words.hpp"

namespace agla::eval {

/// Perception subtasks in the order of `calculation.py`'s `eval_type_dict`.
inline const std::vector<std::string>& mme_perception_subtasks() {
  static const std::vector<std::string> names{"existence", "count", "position", "color",   "posters",
                                              "celebrity", "scene", "landmark", "artwork", "OCR"};
  return names;
}

/// Cognition subtasks in the order of `calculation.py`'s `eval_type_dict`.
inline const std::vector<std::string>& mme_cognition_subtasks() {
  static const std::vector<std::string> names{"commonsense_reasoning", "numerical_calculation", "text_translation",
                                              "code_reasoning"};
  return names;
}

/// The hallucination subset papers report (object existence, count, position, color).
inline const std::vector<std::string>& mme_hallucination_subtasks() {
  static const std::vector<std::string> names{"existence", "count", "position", "color"};
  return names;
}

/// All fourteen subtasks: perception then cognition, in the tool's order.
inline std::vector<std::string> mme_subtasks() {
  std::vector<std::string> all = mme_perception_subtasks();
  all.insert(all.end(), mme_cognition_subtasks().begin(), mme_cognition_subtasks().end());
  return all;
}

/// True when `name` is one of the fourteen subtasks (case-sensitive, as the tool's file names).
inline bool is_mme_subtask(const std::string& name) {
  const std::vector<std::string> all = mme_subtasks();
  return std::find(all.begin(), all.end(), name) != all.end();
}

/// `x` as Python's `repr(float)` (and numpy's `str(float64)`) writes it: the shortest digits that
/// read back as `x`, positional with at least one decimal for 1e-4 <= |x| < 1e16 ("195.0",
/// "148.33333333333334"), else scientific ("1e+16", "1.5e-05"); "nan", "inf", "-inf".
inline std::string python_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buffer[64];
  for (int precision = 0; precision <= 16; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*e", precision, x);
    if (std::strtod(buffer, nullptr) == x) break;
  }
  // buffer: [-]d[.ddd]e[+-]XX -- the correctly rounded shortest digits that round-trip.
  std::string text(buffer);
  const bool negative = text[0] == '-';
  if (negative) text.erase(0, 1);
  const std::size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits = text.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out = "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(static_cast<std::size_t>(exponent + 1) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<std::size_t>(exponent + 1)) + "." +
            digits.substr(static_cast<std::size_t>(exponent + 1));
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp[16];
    std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp;
  }
  return negative ? "-" + out : out;
}

namespace detail {

/// Length of the UTF-8 sequence starting at `s[i]` (1 to 4), or 0 when it is not valid UTF-8.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  std::size_t n = 0;
  std::uint32_t code = 0;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    code = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    code = c & 0x0Fu;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    code = c & 0x07u;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0u) != 0x80u) return 0;
    code = (code << 6) | (byte(i + k) & 0x3Fu);
  }
  const bool overlong = (n == 3 && code < 0x800) || (n == 4 && code < 0x10000);
  const bool surrogate = code >= 0xD800 && code <= 0xDFFF;
  if (overlong || surrogate || code > 0x10FFFF) return 0;
  return n;
}

/// The first `count` characters of `s` after Python's `str.lower()`, as far as it matters for
/// finding the ASCII words "yes" and "no": ASCII letters are lower-cased, other characters are
/// kept, and U+0130 (capital I with dot) becomes the two characters "i" + U+0307 as in Python.
/// `s` must be valid UTF-8.
inline std::string lowered_prefix(std::string_view s, std::size_t count) {
  std::string out;
  std::size_t characters = 0;
  for (std::size_t i = 0; i < s.size() && characters < count;) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 1) {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
      ++characters;
    } else if (s.substr(i, n) == "\xC4\xB0") {
      out += 'i';
      if (++characters < count) {
        out += "\xCC\x87";
        ++characters;
      }
    } else {
      out.append(s.substr(i, n));
      ++characters;
    }
    i += n;
  }
  return out;
}

}  // namespace detail

/// An MME prediction as `calculation.py` reads it.
enum class MmeAnswer { No, Yes, Other };

/// "yes", "no" or "other".
inline const char* mme_answer_name(MmeAnswer a) {
  return a == MmeAnswer::Yes ? "yes" : a == MmeAnswer::No ? "no" : "other";
}

/// `calculation.py`'s `parse_pred_ans` on the lower-cased prediction field (which still ends
/// with its line ending): exactly "yes" or "no", else "yes" / "no" / "other" from the first four
/// characters. `prediction` must be valid UTF-8.
inline MmeAnswer mme_answer(std::string_view prediction) {
  const std::string lower = detail::lowered_prefix(prediction, prediction.size());
  if (lower == "yes") return MmeAnswer::Yes;
  if (lower == "no") return MmeAnswer::No;
  const std::string prefix = detail::lowered_prefix(prediction, 4);
  if (prefix.find("yes") != std::string::npos) return MmeAnswer::Yes;
  if (prefix.find("no") != std::string::npos) return MmeAnswer::No;
  return MmeAnswer::Other;
}

/// One benchmark question.
struct MmeQuestion {
  std::string subtask;       ///< e.g. "existence"
  std::string image;         ///< image file name, e.g. "000000006040.jpg"
  std::string image_path;    ///< full path of the image
  std::string question;      ///< as in the benchmark file, e.g. "Is there a ...? Please answer yes or no."
  std::string ground_truth;  ///< as in the benchmark file ("Yes" or "No")
  Answer label = Answer::No;
  int index = 0;         ///< 1 or 2: which question of the image
  std::string source;    ///< the benchmark `.txt` file it comes from
  std::size_t line = 0;  ///< its line there

  /// A stable id "subtask/image/index" (e.g. "existence/000000006040.jpg/1") for answers files.
  std::string id() const { return subtask + "/" + image + "/" + std::to_string(index); }
};

/// Reads the questions of `subtasks` (all fourteen when empty) from the benchmark folder `root`
/// (the folder that holds the subtask folders), in the tool's subtask order, images sorted by
/// name, the two questions of an image in file order. Throws `FormatError` naming file and line
/// for a missing subtask folder, a question file without its image, a line that is not
/// `question<TAB>yes|no` (case and surrounding whitespace ignored, as LLaVA's converter reads
/// it), or an image without exactly two questions; blank lines are skipped.
inline std::vector<MmeQuestion> read_mme_benchmark(const std::string& root,
                                                   const std::vector<std::string>& subtasks = {}) {
  namespace fs = std::filesystem;
  const std::string who = "agla::eval::read_mme_benchmark";
  std::error_code ec;
  check<FormatError>(fs::is_directory(root, ec), who, ": '", root, "' is not a directory");
  std::vector<std::string> wanted;
  for (const std::string& name : mme_subtasks())
    if (subtasks.empty() || std::find(subtasks.begin(), subtasks.end(), name) != subtasks.end()) wanted.push_back(name);
  for (const std::string& name : subtasks)
    check<InvalidArgument>(is_mme_subtask(name), who, ": unknown subtask '", name, "'; expected one of the fourteen (",
                           mme_subtasks().front(), ", ..., ", mme_subtasks().back(), ")");
  std::vector<MmeQuestion> questions;
  for (const std::string& subtask : wanted) {
    const fs::path folder = fs::path(root) / subtask;
    check<FormatError>(fs::is_directory(folder, ec), who, ": no subtask folder '", folder.string(), "'",
                       fs::is_directory(fs::path(root) / "MME_Benchmark", ec)
                           ? " (the subtask folders are in " + (fs::path(root) / "MME_Benchmark").string() + ")"
                           : "");
    const bool split = fs::is_directory(folder / "images", ec);
    const fs::path image_dir = split ? folder / "images" : folder;
    const fs::path text_dir = split ? folder / "questions_answers_YN" : folder;
    check<FormatError>(fs::is_directory(text_dir, ec), who, ": '", folder.string(),
                       "' has images/ but no questions_answers_YN/");
    // Image files by stem (any extension but .txt).
    std::map<std::string, std::string> images;
    for (const fs::directory_entry& entry : fs::directory_iterator(image_dir)) {
      if (!entry.is_regular_file() || entry.path().extension() == ".txt") continue;
      images.emplace(entry.path().stem().string(), entry.path().filename().string());
    }
    std::vector<fs::path> texts;
    for (const fs::directory_entry& entry : fs::directory_iterator(text_dir))
      if (entry.is_regular_file() && entry.path().extension() == ".txt") texts.push_back(entry.path());
    std::sort(texts.begin(), texts.end());
    check<FormatError>(!texts.empty(), who, ": no question files (.txt) in '", text_dir.string(), "'");
    std::vector<MmeQuestion> subtask_questions;
    for (const fs::path& text : texts) {
      const auto image = images.find(text.stem().string());
      check<FormatError>(image != images.end(), who, ": ", text.string(), ": no image named '", text.stem().string(),
                         ".*' in '", image_dir.string(), "'");
      const std::vector<std::string> lines = detail::python_readlines(detail::read_file_bytes(text.string(), who));
      int index = 0;
      for (std::size_t number = 1; number <= lines.size(); ++number) {
        const std::string line = detail::strip(lines[number - 1]);
        if (line.empty()) continue;
        const std::vector<std::string> fields = detail::split(line, '\t');
        check<FormatError>(fields.size() == 2, who, ": ", text.string(), ":", number,
                           ": expected 'question<TAB>answer'; got ", fields.size(), " tab-separated fields");
        std::string answer = detail::strip(fields[1]);
        std::transform(answer.begin(), answer.end(), answer.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        check<FormatError>(answer == "yes" || answer == "no", who, ": ", text.string(), ":", number,
                           ": answer must be Yes or No; got '", fields[1], "'");
        MmeQuestion q;
        q.subtask = subtask;
        q.image = image->second;
        q.image_path = (image_dir / image->second).string();
        q.question = fields[0];
        q.ground_truth = detail::strip(fields[1]);
        q.label = answer == "yes" ? Answer::Yes : Answer::No;
        q.index = ++index;
        q.source = text.string();
        q.line = number;
        subtask_questions.push_back(std::move(q));
      }
      check<FormatError>(index == 2, who, ": ", text.string(), ": expected two questions per image; got ", index);
    }
    std::stable_sort(subtask_questions.begin(), subtask_questions.end(),
                     [](const MmeQuestion& a, const MmeQuestion& b) { return a.image < b.image; });
    questions.insert(questions.end(), std::make_move_iterator(subtask_questions.begin()),
                     std::make_move_iterator(subtask_questions.end()));
  }
  return questions;
}

/// One results-file line `image<TAB>question<TAB>ground truth<TAB>prediction`, ending in `\n`.
/// Tabs, carriage returns and newlines inside the prediction become spaces, so the line keeps its
/// four fields and the file its pairing (the tool would otherwise stop or mis-pair).
inline std::string mme_result_line(const MmeQuestion& q, std::string_view prediction) {
  std::string p(prediction);
  std::replace_if(
      p.begin(), p.end(), [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
  return q.image + "\t" + q.question + "\t" + q.ground_truth + "\t" + p + "\n";
}

/// Writes `<results_dir>/<subtask>.txt` for every subtask in `questions` (in their order),
/// taking each question's prediction from `answers` by `MmeQuestion::id()`. A question without
/// an answer gets an empty prediction, which the tool reads as `other` (wrong); the number of
/// such questions is returned. Throws `FormatError` for an answer whose id is not a question or
/// repeats, and when a file cannot be written.
inline std::size_t write_mme_results(const std::string& results_dir, const std::vector<MmeQuestion>& questions,
                                     const std::vector<ModelAnswer>& answers) {
  namespace fs = std::filesystem;
  const std::string who = "agla::eval::write_mme_results";
  std::map<std::string, const MmeQuestion*> by_id;
  for (const MmeQuestion& q : questions) by_id.emplace(q.id(), &q);
  std::map<std::string, std::string> predictions;
  for (const ModelAnswer& a : answers) {
    check<FormatError>(by_id.count(a.id) == 1, who, ": answer id '", a.id, "' is not an MME question id",
                       " (expected subtask/image/index, e.g. existence/000000006040.jpg/1)");
    check<FormatError>(predictions.emplace(a.id, a.text).second, who, ": answer id '", a.id, "' repeats");
  }
  std::error_code ec;
  fs::create_directories(results_dir, ec);
  check<FormatError>(fs::is_directory(results_dir, ec), who, ": cannot create '", results_dir, "'");
  std::map<std::string, std::string> files;
  std::vector<std::string> order;
  std::size_t missing = 0;
  for (const MmeQuestion& q : questions) {
    const auto it = predictions.find(q.id());
    if (it == predictions.end()) ++missing;
    if (files.find(q.subtask) == files.end()) order.push_back(q.subtask);
    files[q.subtask] += mme_result_line(q, it == predictions.end() ? std::string_view() : std::string_view(it->second));
  }
  for (const std::string& subtask : order) {
    const std::string path = (fs::path(results_dir) / (subtask + ".txt")).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << files[subtask];
    check<FormatError>(out.good(), who, ": cannot write '", path, "'");
  }
  return missing;
}

/// One line of a results file as read for scoring.
struct MmeResultLine {
  std::string image, question, ground_truth;
  std::string prediction;  ///< with its line ending, as the tool reads it
  std::size_t line = 0;
};

/// Reads a results file with the tool's rules (see the file comment); throws `FormatError` naming
/// file and line for invalid UTF-8, a line without four tab-separated fields or a ground truth
/// other than yes/no, an empty file, or an odd number of lines.
inline std::vector<MmeResultLine> read_mme_results(const std::string& path) {
  const std::string who = "agla::eval::read_mme_results";
  const std::vector<std::string> lines = detail::python_readlines(detail::read_file_bytes(path, who));
  check<FormatError>(!lines.empty(), who, ": ", path, ": no lines");
  std::vector<MmeResultLine> out;
  out.reserve(lines.size());
  for (std::size_t number = 1; number <= lines.size(); ++number) {
    const std::string& text = lines[number - 1];
    for (std::size_t i = 0; i < text.size();) {
      const std::size_t n = detail::utf8_sequence_length(text, i);
      check<FormatError>(n > 0, who, ": ", path, ":", number, ": not valid UTF-8 at byte ", i + 1);
      i += n;
    }
    std::vector<std::string> fields = detail::split(text, '\t');
    check<FormatError>(fields.size() == 4, who, ": ", path, ":", number,
                       ": expected 4 tab-separated fields (image, question, ground truth, prediction); got ",
                       fields.size());
    std::string truth = fields[2];
    std::transform(truth.begin(), truth.end(), truth.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    check<FormatError>(truth == "yes" || truth == "no", who, ": ", path, ":", number,
                       ": ground truth must be yes or no (any case, no spaces); got '", fields[2], "'");
    out.push_back({fields[0], fields[1], fields[2], fields[3], number});
  }
  check<FormatError>(out.size() % 2 == 0, who, ": ", path, ":", out.size(), ": the second question of the image '",
                     out.back().image, "' is missing (", out.size(), " lines; two per image)");
  return out;
}

/// The scores of one subtask.
struct MmeSubtaskScore {
  std::string name;
  long long questions = 0, images = 0;
  long long correct = 0;       ///< questions answered right
  long long both_correct = 0;  ///< images with both questions right
  long long other = 0;         ///< predictions read as neither yes nor no
  double acc = 0;              ///< correct / questions
  double acc_plus = 0;         ///< both_correct / images
  double score = 0;            ///< acc * 100 + acc_plus * 100
};

/// Scores the lines of one results file (as `calculation.py`'s `process_result` for one task).
inline MmeSubtaskScore score_mme_subtask(const std::string& name, const std::vector<MmeResultLine>& lines) {
  check<InvalidArgument>(!lines.empty() && lines.size() % 2 == 0, "agla::eval::score_mme_subtask: ", name,
                         ": need a positive even number of lines; got ", lines.size());
  MmeSubtaskScore s;
  s.name = name;
  for (std::size_t i = 0; i < lines.size(); i += 2) {
    int right = 0;
    for (std::size_t k = i; k < i + 2; ++k) {
      const MmeAnswer predicted = mme_answer(lines[k].prediction);
      std::string truth = lines[k].ground_truth;
      std::transform(truth.begin(), truth.end(), truth.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      const MmeAnswer expected = truth == "yes" ? MmeAnswer::Yes : MmeAnswer::No;
      if (predicted == expected) ++right;
      if (predicted == MmeAnswer::Other) ++s.other;
    }
    s.correct += right;
    s.both_correct += right == 2 ? 1 : 0;
  }
  s.questions = static_cast<long long>(lines.size());
  s.images = s.questions / 2;
  s.acc = static_cast<double>(s.correct) / static_cast<double>(s.questions);
  s.acc_plus = static_cast<double>(s.both_correct) / static_cast<double>(s.images);
  s.score = s.acc * 100 + s.acc_plus * 100;
  return s;
}

/// The scores of a results folder.
struct MmeReport {
  std::vector<MmeSubtaskScore> subtasks;  ///< the subtasks present, in the tool's order
  std::optional<double> perception;       ///< sum of the perception subtasks present
  std::optional<double> cognition;        ///< sum of the cognition subtasks present
  std::optional<double> hallucination;    ///< sum of existence, count, position, color present
  std::vector<std::string> ignored;       ///< files in the folder not named after a subtask
};

/// Scores `<results_dir>/<subtask>.txt` for every subtask whose file exists (what
/// `agla_mme --evaluate` prints). Throws `FormatError` when no subtask file is there or a file is
/// malformed (naming file and line).
inline MmeReport evaluate_mme_results(const std::string& results_dir) {
  namespace fs = std::filesystem;
  const std::string who = "agla::eval::evaluate_mme_results";
  std::error_code ec;
  check<FormatError>(fs::is_directory(results_dir, ec), who, ": '", results_dir, "' is not a directory");
  MmeReport report;
  std::map<std::string, const MmeSubtaskScore*> by_name;
  for (const std::string& name : mme_subtasks()) {
    const fs::path path = fs::path(results_dir) / (name + ".txt");
    if (!fs::is_regular_file(path, ec)) continue;
    report.subtasks.push_back(score_mme_subtask(name, read_mme_results(path.string())));
  }
  for (const MmeSubtaskScore& s : report.subtasks) by_name.emplace(s.name, &s);
  std::vector<std::string> ignored;
  for (const fs::directory_entry& entry : fs::directory_iterator(results_dir)) {
    const std::string file = entry.path().filename().string();
    if (!(entry.path().extension() == ".txt" && is_mme_subtask(entry.path().stem().string())))
      report.ignored.push_back(file);
  }
  std::sort(report.ignored.begin(), report.ignored.end());
  check<FormatError>(!report.subtasks.empty(), who, ": no results files in '", results_dir,
                     "'; expected <subtask>.txt for some of: existence, count, position, color, posters, celebrity, "
                     "scene, landmark, artwork, OCR, commonsense_reasoning, numerical_calculation, text_translation, "
                     "code_reasoning");
  const auto total = [&](const std::vector<std::string>& names) -> std::optional<double> {
    std::optional<double> sum;
    for (const std::string& name : names)
      if (const auto it = by_name.find(name); it != by_name.end()) sum = sum.value_or(0.0) + it->second->score;
    return sum;
  };
  report.perception = total(mme_perception_subtasks());
  report.cognition = total(mme_cognition_subtasks());
  report.hallucination = total(mme_hallucination_subtasks());
  return report;
}

/// The report as one JSON object: `subtasks` (name -> acc, acc_plus as fractions; score as the
/// tool prints it; other, images, questions as counts), and `perception`, `cognition`,
/// `hallucination` (sums of the scores present; null when none of their subtasks is present).
inline nlohmann::json to_json(const MmeReport& report) {
  nlohmann::json subtasks = nlohmann::json::object();
  for (const MmeSubtaskScore& s : report.subtasks)
    subtasks[s.name] = {{"acc", s.acc},     {"acc_plus", s.acc_plus}, {"score", s.score},
                        {"other", s.other}, {"images", s.images},     {"questions", s.questions}};
  const auto number = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  return nlohmann::json{{"subtasks", subtasks},
                        {"perception", number(report.perception)},
                        {"cognition", number(report.cognition)},
                        {"hallucination", number(report.hallucination)}};
}

/// The report as text: first exactly what `calculation.py` prints for the subtasks present (so
/// the two can be compared line by line), then a table of acc, acc+, score and `other` per
/// subtask and the hallucination subset with its total.
inline std::string format_mme_report(const MmeReport& report) {
  std::ostringstream out;
  std::map<std::string, const MmeSubtaskScore*> by_name;
  for (const MmeSubtaskScore& s : report.subtasks) by_name.emplace(s.name, &s);
  const std::array<std::pair<const char*, const std::vector<std::string>*>, 2> groups{
      {{"Perception", &mme_perception_subtasks()}, {"Cognition", &mme_cognition_subtasks()}}};
  for (const auto& [title, names] : groups) {
    double sum = 0;
    std::vector<const MmeSubtaskScore*> present;
    for (const std::string& name : *names)
      if (const auto it = by_name.find(name); it != by_name.end()) {
        present.push_back(it->second);
        sum += it->second->score;
      }
    if (present.empty()) continue;
    out << "=========== " << title << " ===========\n"
        << "total score: " << python_float_repr(sum) << " \n\n";
    for (const MmeSubtaskScore* s : present)
      out << "\t " << s->name << "  score: " << python_float_repr(s->score) << '\n';
    out << "\n\n";
  }
  char row[160];
  std::snprintf(row, sizeof row, "%-22s %8s %8s %9s %6s %7s\n", "subtask", "acc", "acc+", "score", "other", "images");
  out << row;
  for (const MmeSubtaskScore& s : report.subtasks) {
    std::snprintf(row, sizeof row, "%-22s %8.4f %8.4f %9.2f %6lld %7lld\n", s.name.c_str(), s.acc, s.acc_plus, s.score,
                  s.other, s.images);
    out << row;
  }
  if (report.hallucination) {
    out << "\nHallucination subset:";
    for (const std::string& name : mme_hallucination_subtasks())
      if (const auto it = by_name.find(name); it != by_name.end())
        out << ' ' << name << ' ' << python_float_repr(it->second->score) << ',';
    out << " total " << python_float_repr(*report.hallucination) << '\n';
  }
  if (report.perception) out << "Perception total: " << python_float_repr(*report.perception) << '\n';
  if (report.cognition) out << "Cognition total: " << python_float_repr(*report.cognition) << '\n';
  if (!report.ignored.empty()) {
    out << "Ignored (not a subtask file):";
    for (const std::string& file : report.ignored) out << ' ' << file;
    out << '\n';
  }
  return out.str();
}

}  // namespace agla::eval
