#pragma once
/// \file
/// POPE scoring (Li et al., "Evaluating Object Hallucination in Large Vision-Language Models",
/// EMNLP 2023): answer parsing and the metrics of POPE's `evaluate.py`.
///
/// Two answer parsers are in use and give different numbers on the same answers:
/// - `AnswerParser::Pope` -- POPE's `evaluate.py` (also LLaVA's `eval_pope.py`): keep the text
///   before the first '.', delete ',', split on single spaces; the answer is "no" when one of the
///   words is exactly `No`, `no` or `not` (case-sensitive, so "NO" or "Not" read as "yes"), else
///   "yes" -- an empty or evasive answer counts as "yes".
/// - `AnswerParser::Substring` -- the AGLA/VCD scripts (`eval/eval_pope.py` in Lackel/AGLA and
///   `experiments/eval/eval_pope.py` in DAMO-NLP-SG/VCD): lower-case and strip the answer; for a
///   "yes" question it is yes iff it contains the substring "yes"; for a "no" question it is no
///   iff it contains the substring "no" (so "not", "nothing", "know", "cannot" also count as no).
///   The reading depends on the label: "I don't know" is a false negative on a "yes" question and
///   a true negative on a "no" question.

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/jsonl.hpp"

namespace agla::eval {

/// A yes/no answer or label.
enum class Answer { No, Yes };

/// Which answer parser scores free-text answers (see the file comment).
enum class AnswerParser { Pope, Substring };

/// Parses "pope" or "substring"; throws `InvalidArgument` otherwise.
inline AnswerParser parse_answer_parser(const std::string& name) {
  if (name == "pope") return AnswerParser::Pope;
  if (name == "substring") return AnswerParser::Substring;
  throw InvalidArgument(
      agla::detail::concat("agla::eval::parse_answer_parser: expected 'pope' or 'substring'; got '", name, "'"));
}

/// The name of `parser` ("pope" or "substring").
inline const char* parser_name(AnswerParser parser) { return parser == AnswerParser::Pope ? "pope" : "substring"; }

/// POPE's reading of an answer (`evaluate.py`): first sentence, commas removed, split on ' ';
/// "no" iff a word is exactly `No`, `no` or `not`.
inline Answer pope_answer(std::string_view text) {
  std::string first(text.substr(0, std::min(text.find('.'), text.size())));
  first.erase(std::remove(first.begin(), first.end(), ','), first.end());
  std::size_t start = 0;
  while (start <= first.size()) {
    const std::size_t end = std::min(first.find(' ', start), first.size());
    const std::string_view word(first.data() + start, end - start);
    if (word == "No" || word == "no" || word == "not") return Answer::No;
    start = end + 1;
  }
  return Answer::Yes;
}

/// The AGLA/VCD scripts' reading of an answer to a question labelled `label` (substring "yes" for
/// "yes" questions, substring "no" for "no" questions, after lower-casing).
inline Answer substring_answer(std::string_view text, Answer label) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (label == Answer::Yes) return lower.find("yes") != std::string::npos ? Answer::Yes : Answer::No;
  return lower.find("no") != std::string::npos ? Answer::No : Answer::Yes;
}

/// The predicted answer of `text` for a question labelled `label` under `parser`.
inline Answer parse_answer(std::string_view text, Answer label, AnswerParser parser) {
  return parser == AnswerParser::Pope ? pope_answer(text) : substring_answer(text, label);
}

/// The confusion counts ("yes" is the positive class).
struct PopeCounts {
  long long tp = 0, fp = 0, tn = 0, fn = 0;

  /// Counts one prediction against its label.
  void add(Answer predicted, Answer label) {
    if (predicted == Answer::Yes)
      (label == Answer::Yes ? tp : fp) += 1;
    else
      (label == Answer::Yes ? fn : tn) += 1;
  }
  /// Number of questions counted.
  long long total() const { return tp + fp + tn + fn; }
};

/// POPE's metrics. A ratio whose denominator is 0 is reported as 0 (the Python scripts divide
/// by zero there).
struct PopeMetrics {
  double accuracy = 0;             ///< (TP + TN) / N
  double precision = 0;            ///< TP / (TP + FP)
  double recall = 0;               ///< TP / (TP + FN)
  double f1 = 0;                   ///< 2 P R / (P + R)
  double yes_ratio = 0;            ///< (TP + FP) / N
  double false_positive_rate = 0;  ///< FP / (FP + TN): how often an absent object is "seen"
  PopeCounts counts;
};

/// The metrics of `counts`.
inline PopeMetrics pope_metrics(const PopeCounts& counts) {
  PopeMetrics m;
  m.counts = counts;
  const long long n = counts.total();
  m.accuracy = ratio_or_zero(counts.tp + counts.tn, n);
  m.precision = ratio_or_zero(counts.tp, counts.tp + counts.fp);
  m.recall = ratio_or_zero(counts.tp, counts.tp + counts.fn);
  m.f1 = m.precision + m.recall > 0 ? 2 * m.precision * m.recall / (m.precision + m.recall) : 0.0;
  m.yes_ratio = ratio_or_zero(counts.tp + counts.fp, n);
  m.false_positive_rate = ratio_or_zero(counts.fp, counts.fp + counts.tn);
  return m;
}

/// The metrics of answer texts against labels (same length) under `parser`.
inline PopeMetrics score_answers(const std::vector<std::string>& texts, const std::vector<Answer>& labels,
                                 AnswerParser parser) {
  check<InvalidArgument>(texts.size() == labels.size(), "agla::eval::score_answers: ", texts.size(), " answers for ",
                         labels.size(), " labels");
  PopeCounts counts;
  for (std::size_t i = 0; i < texts.size(); ++i) counts.add(parse_answer(texts[i], labels[i], parser), labels[i]);
  return pope_metrics(counts);
}

/// A ground-truth question line (POPE format: question_id, image, text, label).
struct PopeQuestion {
  std::string id;              ///< question_id as a matching key (see `id_field`)
  nlohmann::json question_id;  ///< question_id as written
  std::string image;
  std::string text;
  Answer label = Answer::No;
  std::optional<bool> partner_present;  ///< ShapesWorld contrast split only
  std::size_t line = 0;
};

/// Reads a POPE question/ground-truth jsonl file. `label` must be "yes" or "no" (case and
/// surrounding spaces ignored, as the AGLA/VCD scripts do); `image` and `text` are optional.
/// Throws `FormatError` naming file and line on bad lines, unknown labels or repeated ids.
inline std::vector<PopeQuestion> read_pope_questions(const std::string& path) {
  const std::string who = "agla::eval::read_pope_questions";
  std::vector<PopeQuestion> questions =
      read_keyed_lines<PopeQuestion>(path, who, [&](const JsonLine& line, PopeQuestion& q) {
        q.question_id = line.value.at("question_id");
        std::string label = string_field(line, "label", path, who);
        label.erase(0, label.find_first_not_of(" \t\r\n"));
        label.erase(label.find_last_not_of(" \t\r\n") + 1);
        std::transform(label.begin(), label.end(), label.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        check<FormatError>(label == "yes" || label == "no", who, ": ", path, ":", line.line, ": unknown label \"",
                           line.value.at("label").get<std::string>(), "\"; expected \"yes\" or \"no\"");
        q.label = label == "yes" ? Answer::Yes : Answer::No;
        if (line.value.contains("image")) q.image = string_field(line, "image", path, who);
        if (line.value.contains("text")) q.text = string_field(line, "text", path, who);
        if (const auto it = line.value.find("partner_present"); it != line.value.end()) {
          check<FormatError>(it->is_boolean(), who, ": ", path, ":", line.line,
                             ": field \"partner_present\" must be true or false");
          q.partner_present = it->get<bool>();
        }
      });
  check<FormatError>(!questions.empty(), who, ": ", path, ": no questions");
  return questions;
}

/// A model answer line (question_id and text; the reference writes prompt, model_id, image too).
struct ModelAnswer {
  std::string id;
  std::string text;
  std::size_t line = 0;
};

/// Reads an answers jsonl file (fields question_id and text; POPE's own answer files, which name
/// the text `answer`, are read too). Throws `FormatError` naming file and line on bad lines or
/// repeated ids.
inline std::vector<ModelAnswer> read_model_answers(const std::string& path) {
  const std::string who = "agla::eval::read_model_answers";
  return read_keyed_lines<ModelAnswer>(path, who, [&](const JsonLine& line, ModelAnswer& a) {
    const bool pope_style = !line.value.contains("text") && line.value.contains("answer");
    a.text = string_field(line, pope_style ? "answer" : "text", path, who);
  });
}

/// The result of scoring an answers file against a question file.
struct PopeReport {
  AnswerParser parser = AnswerParser::Pope;
  PopeMetrics overall;
  std::optional<PopeMetrics> partner_present;  ///< contrast split: questions whose partner is in the image
  std::optional<PopeMetrics> partner_absent;   ///< contrast split: the same questions without the partner
};

/// Scores `answers` against `questions`, matched by question_id (any order). Every question
/// needs exactly one answer and every answer a question; otherwise throws `FormatError` with the
/// count and the first few offending ids.
inline PopeReport evaluate_pope(const std::vector<PopeQuestion>& questions, const std::vector<ModelAnswer>& answers,
                                AnswerParser parser) {
  const std::string who = "agla::eval::evaluate_pope";
  std::map<std::string, const ModelAnswer*> by_id;
  for (const ModelAnswer& a : answers) by_id.emplace(a.id, &a);
  const auto list = [](const std::vector<std::string>& ids) {
    std::ostringstream out;
    for (std::size_t i = 0; i < ids.size() && i < 5; ++i) out << (i ? ", " : "") << ids[i];
    if (ids.size() > 5) out << ", ...";
    return out.str();
  };
  std::vector<std::string> missing;
  std::map<std::string, bool> asked;
  for (const PopeQuestion& q : questions) {
    asked.emplace(q.id, true);
    if (by_id.find(q.id) == by_id.end()) missing.push_back(q.id);
  }
  check<FormatError>(missing.empty(), who, ": ", missing.size(), " of ", questions.size(),
                     " questions have no answer (question_id ", list(missing), ")");
  std::vector<std::string> extra;
  for (const ModelAnswer& a : answers)
    if (asked.find(a.id) == asked.end()) extra.push_back(a.id);
  check<FormatError>(extra.empty(), who, ": ", extra.size(), " answers have no question (question_id ", list(extra),
                     ")");

  PopeCounts all, present, absent;
  bool contrast = false;
  for (const PopeQuestion& q : questions) {
    const Answer predicted = parse_answer(by_id.at(q.id)->text, q.label, parser);
    all.add(predicted, q.label);
    if (q.partner_present) {
      contrast = true;
      (*q.partner_present ? present : absent).add(predicted, q.label);
    }
  }
  PopeReport report;
  report.parser = parser;
  report.overall = pope_metrics(all);
  if (contrast) {
    report.partner_present = pope_metrics(present);
    report.partner_absent = pope_metrics(absent);
  }
  return report;
}

/// Reads both files and scores them (`agla_pope --evaluate`).
inline PopeReport evaluate_pope_files(const std::string& questions_path, const std::string& answers_path,
                                      AnswerParser parser) {
  return evaluate_pope(read_pope_questions(questions_path), read_model_answers(answers_path), parser);
}

/// The metrics as JSON: accuracy, precision, recall, f1, yes_ratio, false_positive_rate and the
/// counts tp, fp, tn, fn.
inline nlohmann::json to_json(const PopeMetrics& m) {
  return nlohmann::json{{"accuracy", m.accuracy},
                        {"precision", m.precision},
                        {"recall", m.recall},
                        {"f1", m.f1},
                        {"yes_ratio", m.yes_ratio},
                        {"false_positive_rate", m.false_positive_rate},
                        {"tp", m.counts.tp},
                        {"fp", m.counts.fp},
                        {"tn", m.counts.tn},
                        {"fn", m.counts.fn},
                        {"questions", m.counts.total()}};
}

/// The report as one JSON object: the overall metrics at top level, plus `parser` and, for the
/// contrast split, `partner_present`, `partner_absent` and `false_positive_rate_difference`.
inline nlohmann::json to_json(const PopeReport& report) {
  nlohmann::json j = to_json(report.overall);
  j["parser"] = parser_name(report.parser);
  if (report.partner_present && report.partner_absent) {
    j["partner_present"] = to_json(*report.partner_present);
    j["partner_absent"] = to_json(*report.partner_absent);
    j["false_positive_rate_difference"] =
        report.partner_present->false_positive_rate - report.partner_absent->false_positive_rate;
  }
  return j;
}

/// The report as text, one metric per line, in the order POPE prints them.
inline std::string format_report(const PopeReport& report) {
  std::ostringstream out;
  const auto block = [&](const char* title, const PopeMetrics& m) {
    out << title << " (" << m.counts.total() << " questions, parser " << parser_name(report.parser) << ")\n"
        << "TP\tFP\tTN\tFN\n"
        << m.counts.tp << '\t' << m.counts.fp << '\t' << m.counts.tn << '\t' << m.counts.fn << '\n'
        << "Accuracy: " << m.accuracy << '\n'
        << "Precision: " << m.precision << '\n'
        << "Recall: " << m.recall << '\n'
        << "F1 score: " << m.f1 << '\n'
        << "Yes ratio: " << m.yes_ratio << '\n'
        << "False positive rate: " << m.false_positive_rate << '\n';
  };
  block("All questions", report.overall);
  if (report.partner_present && report.partner_absent) {
    block("Partner present", *report.partner_present);
    block("Partner absent", *report.partner_absent);
    out << "False positive rate difference (present - absent): "
        << report.partner_present->false_positive_rate - report.partner_absent->false_positive_rate << '\n';
  }
  return out.str();
}

}  // namespace agla::eval
