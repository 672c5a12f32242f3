#pragma once
/// \file
/// CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018) for captions of
/// a closed object vocabulary such as ShapesWorld's:
///   CHAIR_i = hallucinated object mentions / all object mentions,
///   CHAIR_s = captions with at least one hallucinated mention / all captions,
/// counting every mention (a repeated word counts each time) as the reference `chair.py` does
/// (`coco_word_count += len(node_words)`); recall = ground-truth objects mentioned / ground-truth
/// objects. Mentions are found by lower-casing the caption, splitting it at every character that
/// is not a letter or digit, and looking each word up in the vocabulary (singular and plural).
/// CHAIR on COCO captions, with the reference's tokenizer, lemmatizer and synonym list, is in
/// coco_chair.hpp and shares `ChairCounts` and `chair_metrics`.

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/jsonl.hpp"

namespace agla::eval {

/// Maps caption words to object classes.
class ChairVocabulary {
 public:
  /// Adds `word` (lower-case) as a mention of `object`.
  void add(const std::string& word, const std::string& object) { words_[word] = object; }

  /// A vocabulary of class names with their English plurals ("cross" -> "cross", "crosses").
  static ChairVocabulary from_names(const std::vector<std::string>& names) {
    ChairVocabulary v;
    for (const std::string& name : names) {
      v.add(name, name);
      v.add(plural_of(name), name);
    }
    return v;
  }

  /// The object `word` mentions, if any.
  std::optional<std::string> lookup(const std::string& word) const {
    const auto it = words_.find(word);
    if (it == words_.end()) return std::nullopt;
    return it->second;
  }

  /// True when `object` is one of the vocabulary's objects.
  bool knows_object(const std::string& object) const {
    return std::any_of(words_.begin(), words_.end(), [&](const auto& w) { return w.second == object; });
  }

  /// English plural: -es after s, x, z, ch, sh; -ies after consonant + y; else -s.
  static std::string plural_of(const std::string& noun) {
    const auto ends = [&](const std::string& s) {
      return noun.size() >= s.size() && noun.compare(noun.size() - s.size(), s.size(), s) == 0;
    };
    if (ends("s") || ends("x") || ends("z") || ends("ch") || ends("sh")) return noun + "es";
    if (noun.size() >= 2 && noun.back() == 'y' && std::string("aeiou").find(noun[noun.size() - 2]) == std::string::npos)
      return noun.substr(0, noun.size() - 1) + "ies";
    return noun + "s";
  }

 private:
  std::map<std::string, std::string> words_;
};

/// The objects a caption mentions, one entry per mention, in order.
inline std::vector<std::string> object_mentions(const std::string& caption, const ChairVocabulary& vocabulary) {
  std::vector<std::string> mentions;
  std::string word;
  const auto flush = [&] {
    if (word.empty()) return;
    if (auto object = vocabulary.lookup(word)) mentions.push_back(*object);
    word.clear();
  };
  for (const char ch : caption) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c))
      word += static_cast<char>(std::tolower(c));
    else
      flush();
  }
  flush();
  return mentions;
}

/// Counts behind CHAIR.
struct ChairCounts {
  long long captions = 0, hallucinated_captions = 0;
  long long mentions = 0, hallucinated_mentions = 0;
  long long ground_truth_objects = 0, recalled_objects = 0;

  /// Counts one caption's mentions against the image's ground-truth objects.
  void add(const std::vector<std::string>& mentions_in_caption, const std::set<std::string>& ground_truth) {
    ++captions;
    bool hallucinated = false;
    std::set<std::string> recalled;
    for (const std::string& m : mentions_in_caption) {
      ++mentions;
      if (ground_truth.count(m) == 0) {
        ++hallucinated_mentions;
        hallucinated = true;
      } else {
        recalled.insert(m);
      }
    }
    hallucinated_captions += hallucinated ? 1 : 0;
    ground_truth_objects += static_cast<long long>(ground_truth.size());
    recalled_objects += static_cast<long long>(recalled.size());
  }
};

/// CHAIR metrics; a ratio with denominator 0 is 0.
struct ChairMetrics {
  double chair_i = 0;  ///< hallucinated mentions / mentions
  double chair_s = 0;  ///< captions with a hallucination / captions
  double recall = 0;   ///< ground-truth objects mentioned / ground-truth objects
  ChairCounts counts;
};

/// The metrics of `counts`.
inline ChairMetrics chair_metrics(const ChairCounts& counts) {
  ChairMetrics m;
  m.counts = counts;
  m.chair_i = ratio_or_zero(counts.hallucinated_mentions, counts.mentions);
  m.chair_s = ratio_or_zero(counts.hallucinated_captions, counts.captions);
  m.recall = ratio_or_zero(counts.recalled_objects, counts.ground_truth_objects);
  return m;
}

/// CHAIR of `captions[i]` against `ground_truth[i]` (the objects in image i).
inline ChairMetrics evaluate_chair(const std::vector<std::string>& captions,
                                   const std::vector<std::set<std::string>>& ground_truth,
                                   const ChairVocabulary& vocabulary) {
  check<InvalidArgument>(captions.size() == ground_truth.size(), "agla::eval::evaluate_chair: ", captions.size(),
                         " captions for ", ground_truth.size(), " ground-truth object sets");
  ChairCounts counts;
  for (std::size_t i = 0; i < captions.size(); ++i)
    counts.add(object_mentions(captions[i], vocabulary), ground_truth[i]);
  return chair_metrics(counts);
}

/// Scores a captions answers file (question_id, text) against a caption ground-truth file
/// (question_id, objects: list of object names), matched by question_id. Ground-truth objects
/// must be in the vocabulary. Throws `FormatError` on malformed or mismatched files.
inline ChairMetrics evaluate_chair_files(const std::string& ground_truth_path, const std::string& answers_path,
                                         const ChairVocabulary& vocabulary) {
  const std::string who = "agla::eval::evaluate_chair_files";
  std::map<std::string, std::set<std::string>> truth;
  std::vector<std::string> order;
  for (const JsonLine& line : read_jsonl(ground_truth_path, who)) {
    const std::string id = id_field(line, ground_truth_path, who);
    const auto it = line.value.find("objects");
    check<FormatError>(it != line.value.end() && it->is_array(), who, ": ", ground_truth_path, ":", line.line,
                       ": field \"objects\" must be a list of object names");
    std::set<std::string> objects;
    for (const nlohmann::json& o : *it) {
      check<FormatError>(o.is_string() && vocabulary.knows_object(o.get<std::string>()), who, ": ", ground_truth_path,
                         ":", line.line, ": unknown object ", o.dump());
      objects.insert(o.get<std::string>());
    }
    check<FormatError>(truth.emplace(id, objects).second, who, ": ", ground_truth_path, ":", line.line,
                       ": question_id ", id, " repeats");
    order.push_back(id);
  }
  check<FormatError>(!truth.empty(), who, ": ", ground_truth_path, ": no captions");
  std::map<std::string, std::string> texts;
  for (const JsonLine& line : read_jsonl(answers_path, who)) {
    const std::string id = id_field(line, answers_path, who);
    check<FormatError>(truth.count(id) == 1, who, ": ", answers_path, ":", line.line, ": question_id ", id,
                       " is not in ", ground_truth_path);
    check<FormatError>(texts.emplace(id, string_field(line, "text", answers_path, who)).second, who, ": ", answers_path,
                       ":", line.line, ": question_id ", id, " repeats");
  }
  std::vector<std::string> captions;
  std::vector<std::set<std::string>> objects;
  std::vector<std::string> missing;
  for (const std::string& id : order) {
    const auto it = texts.find(id);
    if (it == texts.end()) {
      missing.push_back(id);
      continue;
    }
    captions.push_back(it->second);
    objects.push_back(truth.at(id));
  }
  check<FormatError>(missing.empty(), who, ": ", missing.size(), " of ", order.size(),
                     " captions have no answer (first question_id ", missing.empty() ? "" : missing.front(), ")");
  return evaluate_chair(captions, objects, vocabulary);
}

/// The metrics as one JSON object (chair_i, chair_s, recall and the counts).
inline nlohmann::json to_json(const ChairMetrics& m) {
  return nlohmann::json{{"chair_i", m.chair_i},
                        {"chair_s", m.chair_s},
                        {"recall", m.recall},
                        {"captions", m.counts.captions},
                        {"hallucinated_captions", m.counts.hallucinated_captions},
                        {"mentions", m.counts.mentions},
                        {"hallucinated_mentions", m.counts.hallucinated_mentions},
                        {"ground_truth_objects", m.counts.ground_truth_objects},
                        {"recalled_objects", m.counts.recalled_objects}};
}

/// The metrics as text.
inline std::string format_chair(const ChairMetrics& m) {
  std::ostringstream out;
  out << "Captions: " << m.counts.captions << ", object mentions: " << m.counts.mentions << '\n'
      << "CHAIR_s: " << m.chair_s << " (" << m.counts.hallucinated_captions << " captions with a hallucination)\n"
      << "CHAIR_i: " << m.chair_i << " (" << m.counts.hallucinated_mentions << " hallucinated mentions)\n"
      << "Recall: " << m.recall << " (" << m.counts.recalled_objects << " of " << m.counts.ground_truth_objects
      << " objects)\n";
  return out.str();
}

}  // namespace agla::eval
