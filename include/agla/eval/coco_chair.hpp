#pragma once
/// \file
/// CHAIR on COCO captions, computed as the reference `chair.py` does (Rohrbach et al. 2018, in
/// the CHAIR-metric-standalone form that OPERA and the AGLA/VCD-era repositories run):
/// 1. a caption is lower-cased and tokenized (`word_tokenize`);
/// 2. each token is lemmatized with WordNet (`WordNetMorphy`) -- as a noun, except as decided by
///    `CocoChair::lemma_at` (the reference tags parts of speech with NLTK's perceptron tagger);
/// 3. adjacent lemma pairs found in the reference's fixed two-word table become one word, left to
///    right ("motor bike", "teddy bear", "hot dog"; "bow tie" -> "tie", "toilet seat" -> "toilet",
///    "baby"/"adult" + animal -> the animal, "passenger jet"/"passenger train" -> jet/train,
///    "train track" and "home plate" stay themselves and so mention nothing);
/// 4. when both "toilet" and "seat" occur, every "seat" is dropped;
/// 5. each remaining word that is an entry of the synonym list mentions that line's object (its
///    first entry); every mention counts, repeats included.
/// Ground-truth objects of an image are its instance categories (through the synonym list) and
/// the objects that its reference captions mention by the same rules. CHAIR_i, CHAIR_s and recall
/// are those of `ChairCounts`/`chair_metrics` (chair.hpp).
///
/// The synonym list is the user's `synonyms.txt` (LisaAnne/Hallucination, data/synonyms.txt; the
/// standalone `chair.py` embeds the same text): each line `object, synonym, ...` is split at ", "
/// after stripping the line, so an entry written after a double space keeps a leading space and
/// never matches (" motor bike", " cheesecake" in the published list), as in the reference.

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/chair.hpp"
#include "agla/eval/jsonl.hpp"
#include "agla/eval/words.hpp"

namespace agla::eval {

/// The CHAIR synonym list: which words mention which COCO object.
class ChairSynonyms {
 public:
  /// Parses the text of a synonyms file (`source` names it in errors). Throws `FormatError` when
  /// it has no entries.
  static ChairSynonyms parse(std::string_view text, const std::string& source) {
    ChairSynonyms s;
    for (const std::string& raw : detail::python_readlines(std::string(text))) {
      const std::string line = detail::strip(raw);
      if (line.empty()) continue;
      std::vector<std::string> entries;
      for (std::size_t start = 0;;) {
        const std::size_t end = line.find(", ", start);
        entries.push_back(line.substr(start, end == std::string::npos ? std::string::npos : end - start));
        if (end == std::string::npos) break;
        start = end + 2;
      }
      for (const std::string& entry : entries) {
        s.entries_.insert(entry);
        s.object_[entry] = entries.front();  // a word on two lines keeps the later one, as the reference's dict
        std::istringstream parts(entry);
        std::string part;
        while (parts >> part) s.parts_.insert(part);
      }
      s.objects_.insert(entries.front());
    }
    check<FormatError>(!s.entries_.empty(), "agla::eval::ChairSynonyms: ", source, ": no synonym lines");
    return s;
  }

  /// Reads a synonyms file (e.g. synonyms.txt). Throws `FormatError` when it cannot be read or is
  /// empty.
  static ChairSynonyms read(const std::string& path) {
    return parse(detail::read_file_bytes(path, "agla::eval::ChairSynonyms::read"), path);
  }

  /// True when `word` (one or two words) is an entry of the list.
  bool contains(const std::string& word) const { return entries_.count(word) > 0; }

  /// The object `word` mentions (the first entry of its line); `word` must be an entry.
  const std::string& object_of(const std::string& word) const { return object_.at(word); }

  /// The objects (first entries of the lines).
  const std::set<std::string>& objects() const { return objects_; }

  /// Every space-separated word of every entry ("teddy", "bear", "dog", ...).
  const std::set<std::string>& parts() const { return parts_; }

 private:
  std::set<std::string> entries_, objects_, parts_;
  std::map<std::string, std::string> object_;
};

/// One object mention in a caption: the word (after lemmatization and two-word merging) and the
/// object it names.
struct ChairMention {
  std::string word;
  std::string object;
};

/// What CHAIR reads from one caption.
struct ChairCaptionWords {
  std::vector<ChairMention> mentions;  ///< in caption order
  std::size_t length = 0;              ///< words after two-word merging (the reference's "Len")
};

/// The reference's fixed two-word table: lemma pair -> the word it counts as.
inline const std::map<std::string, std::string>& chair_two_words() {
  static const std::map<std::string, std::string> table = [] {
    std::map<std::string, std::string> t;
    for (const char* w :
         {"motor bike",     "motor cycle",    "air plane",     "traffic light", "street light", "traffic signal",
          "stop light",     "fire hydrant",   "stop sign",     "parking meter", "suit case",    "sports ball",
          "baseball bat",   "baseball glove", "tennis racket", "wine glass",    "hot dog",      "cell phone",
          "mobile phone",   "teddy bear",     "hair drier",    "potted plant",  "bow tie",      "laptop computer",
          "stove top oven", "home plate",     "train track"})
      t[w] = w;
    for (const char* animal :
         {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub"}) {
      t[std::string("baby ") + animal] = animal;
      t[std::string("adult ") + animal] = animal;
    }
    for (const char* vehicle : {"jet", "train"}) t[std::string("passenger ") + vehicle] = vehicle;
    t["bow tie"] = "tie";
    t["toilet seat"] = "toilet";
    t["wine glas"] = "wine glass";
    return t;
  }();
  return table;
}

/// CHAIR's caption reader over a synonym list and WordNet.
class CocoChair {
 public:
  /// A reader for `synonyms` lemmatizing with `wordnet`.
  CocoChair(ChairSynonyms synonyms, WordNetMorphy wordnet)
      : synonyms_(std::move(synonyms)), wordnet_(std::move(wordnet)) {
    relevant_ = synonyms_.parts();
    for (const auto& [pair, word] : chair_two_words()) {
      std::istringstream parts(pair + " " + word);
      std::string part;
      while (parts >> part) relevant_.insert(part);
    }
  }

  /// The synonym list.
  const ChairSynonyms& synonyms() const { return synonyms_; }

  /// The lemma of `tokens[i]`. The reference lemmatizes each token with the part of speech NLTK's
  /// perceptron tagger gives it (a verb tag turns "tied" into "tie", "seated" into "seat",
  /// "skiing" into "ski"; anything not a verb, adjective or adverb is read as a noun). Without
  /// that model, the rule here is: the noun lemma, unless it is no word of the synonym list or
  /// the two-word table while the token looks like a verb form (ends in "ed" or "ing", or is an
  /// irregular form of WordNet's verb exception list such as "sank"), does not follow "a", "an" or
  /// "the", and its verb lemma is such a word -- then the verb lemma.
  std::string lemma_at(const std::vector<std::string>& tokens, std::size_t i) const {
    const std::string& token = tokens.at(i);
    std::string noun = wordnet_.lemmatize(token, WordNetPos::Noun);
    if (relevant_.count(noun)) return noun;
    const auto ends = [&](std::string_view s) {
      return token.size() > s.size() && token.compare(token.size() - s.size(), s.size(), s) == 0;
    };
    const bool verb_form = ends("ed") || ends("ing") || wordnet_.is_exception(token, WordNetPos::Verb);
    const bool after_article = i > 0 && (tokens[i - 1] == "a" || tokens[i - 1] == "an" || tokens[i - 1] == "the");
    if (verb_form && !after_article) {
      std::string verb = wordnet_.lemmatize(token, WordNetPos::Verb);
      if (relevant_.count(verb)) return verb;
    }
    return noun;
  }

  /// The object mentions of `caption` (steps 1-5 of the file comment).
  ChairCaptionWords caption_words(std::string_view caption) const {
    const std::vector<std::string> tokens = word_tokenize(ascii_lower(caption));
    std::vector<std::string> lemmas;
    lemmas.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) lemmas.push_back(lemma_at(tokens, i));
    std::vector<std::string> words;
    for (std::size_t i = 0; i < lemmas.size();) {
      if (i + 1 < lemmas.size()) {
        const auto it = chair_two_words().find(lemmas[i] + " " + lemmas[i + 1]);
        if (it != chair_two_words().end()) {
          words.push_back(it->second);
          i += 2;
          continue;
        }
      }
      words.push_back(lemmas[i++]);
    }
    ChairCaptionWords out;
    out.length = words.size();
    const bool toilet = std::find(words.begin(), words.end(), "toilet") != words.end();
    const bool seat = std::find(words.begin(), words.end(), "seat") != words.end();
    for (const std::string& w : words) {
      if (toilet && seat && w == "seat") continue;
      if (synonyms_.contains(w)) out.mentions.push_back({w, synonyms_.object_of(w)});
    }
    return out;
  }

 private:
  ChairSynonyms synonyms_;
  WordNetMorphy wordnet_;
  std::set<std::string> relevant_;
};

namespace detail {

/// SAX handler that keeps, from a COCO annotation file, the `annotations` entries of wanted
/// images (image_id with category_id, or image_id with caption) and the `categories` (id, name),
/// without building the file's JSON tree: memory stays proportional to what is kept, not to the
/// file (instances_val2014.json is ~160 MB, mostly segmentation polygons).
class CocoSax {
 public:
  CocoSax(const std::set<long long>& images, std::string path) : images_(images), path_(std::move(path)) {}

  std::vector<std::pair<long long, long long>> instances;   ///< (image_id, category_id)
  std::vector<std::pair<long long, std::string>> captions;  ///< (image_id, caption)
  std::map<long long, std::string> categories;              ///< id -> name
  std::size_t annotations = 0;                              ///< entries of "annotations" read

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(std::int64_t v) { return integer(static_cast<long long>(v)); }
  bool number_unsigned(std::uint64_t v) {
    return integer(v > static_cast<std::uint64_t>(std::numeric_limits<long long>::max())
                       ? std::numeric_limits<long long>::max()
                       : static_cast<long long>(v));
  }
  bool number_float(double, const std::string&) { return true; }
  bool string(std::string& s) {
    if (in_element() && (field_ == "caption" || field_ == "name")) text_ = s;
    return true;
  }
  template <typename Binary>
  bool binary(Binary&) {
    return true;
  }
  bool start_object(std::size_t) {
    if (stack_.size() == 2 && stack_.back() == '[' && (section_ == "annotations" || section_ == "categories")) {
      element_ = true;
      image_.reset();
      category_.reset();
      id_.reset();
      text_.reset();
      field_.clear();
    }
    stack_.push_back('{');
    return true;
  }
  bool key(std::string& k) {
    if (stack_.size() == 1) section_ = k;
    if (in_element()) field_ = k;
    return true;
  }
  bool end_object() {
    stack_.pop_back();
    if (stack_.size() == 2 && element_) {
      element_ = false;
      commit();
    }
    return true;
  }
  bool start_array(std::size_t) {
    stack_.push_back('[');
    return true;
  }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  template <typename Exception>
  bool parse_error(std::size_t position, const std::string&, const Exception& e) {
    throw FormatError(agla::detail::concat("agla::eval::read_coco_ground_truth: ", path_, ": not valid JSON at byte ",
                                           position, " (", e.what(), ")"));
  }

 private:
  bool in_element() const { return element_ && stack_.size() == 3; }

  bool integer(long long v) {
    if (!in_element()) return true;
    if (field_ == "image_id") image_ = v;
    if (field_ == "category_id") category_ = v;
    if (field_ == "id") id_ = v;
    return true;
  }

  void commit() {
    const std::string who = "agla::eval::read_coco_ground_truth: " + path_;
    if (section_ == "categories") {
      check<FormatError>(id_ && text_, who, ": category ", categories.size() + 1,
                         " needs an integer \"id\" and a string \"name\"");
      categories[*id_] = *text_;
      return;
    }
    ++annotations;
    check<FormatError>(image_.has_value(), who, ": annotation ", annotations, " has no integer \"image_id\"");
    check<FormatError>(text_ || category_, who, ": annotation ", annotations,
                       " has neither \"caption\" nor \"category_id\"");
    if (images_.count(*image_) == 0) return;
    if (text_)
      captions.emplace_back(*image_, *text_);
    else
      instances.emplace_back(*image_, *category_);
  }

  const std::set<long long>& images_;
  std::string path_;
  std::vector<char> stack_;
  std::string section_, field_;
  bool element_ = false;
  std::optional<long long> image_, category_, id_;
  std::optional<std::string> text_;
};

}  // namespace detail

/// The ground-truth objects of `images`: the categories of their instance annotations (COCO
/// `instances_*.json`, mapped through the synonym list) and the objects their reference captions
/// mention (COCO `captions_*.json`, read by `chair`). Several files of each kind may be given
/// (the reference merges train2014 and val2014; val2014 holds every val image). Throws
/// `FormatError` for unreadable or malformed files, a category name missing from the synonym list,
/// or an image without any reference caption (the wrong annotation files; the reference would
/// silently call every mention of it a hallucination).
inline std::map<long long, std::set<std::string>> read_coco_ground_truth(
    const std::vector<std::string>& instances_files, const std::vector<std::string>& captions_files,
    const std::set<long long>& images, const CocoChair& chair) {
  const std::string who = "agla::eval::read_coco_ground_truth";
  check<InvalidArgument>(!instances_files.empty() && !captions_files.empty(), who,
                         ": need at least one instances file and one captions file");
  std::map<long long, std::set<std::string>> objects;
  std::map<long long, std::size_t> caption_count;
  const auto parse = [&](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    check<FormatError>(in.good(), who, ": cannot open '", path, "'");
    detail::CocoSax sax(images, path);
    const bool ok = nlohmann::json::sax_parse(in, &sax);
    check<FormatError>(ok, who, ": ", path, ": not valid JSON");
    return sax;
  };
  for (const std::string& path : instances_files) {
    const detail::CocoSax sax = parse(path);
    check<FormatError>(!sax.categories.empty(), who, ": ", path, ": no \"categories\" (not an instances file?)");
    for (const auto& [image, category] : sax.instances) {
      const auto name = sax.categories.find(category);
      check<FormatError>(name != sax.categories.end(), who, ": ", path, ": category_id ", category, " of image ", image,
                         " is not in \"categories\"");
      check<FormatError>(chair.synonyms().contains(name->second), who, ": ", path, ": category '", name->second,
                         "' is not in the synonym list");
      objects[image].insert(chair.synonyms().object_of(name->second));
    }
  }
  for (const std::string& path : captions_files) {
    const detail::CocoSax sax = parse(path);
    for (const auto& [image, caption] : sax.captions) {
      ++caption_count[image];
      for (const ChairMention& m : chair.caption_words(caption).mentions) objects[image].insert(m.object);
    }
  }
  std::vector<long long> missing;
  for (const long long image : images)
    if (caption_count.count(image) == 0) missing.push_back(image);
  check<FormatError>(missing.empty(), who, ": ", missing.size(), " of ", images.size(),
                     " images have no reference caption in the captions files (first image_id ",
                     missing.empty() ? 0 : missing.front(), "); are they COCO val2014 images?");
  for (const long long image : images) objects[image];
  return objects;
}

/// A generated caption to score.
struct GeneratedCaption {
  long long image_id = 0;
  std::string caption;
  std::size_t line = 0;
};

/// Reads a captions jsonl file: one object per line with an image id (`image_id_key`: an integer,
/// or a string of digits or a COCO file name such as "COCO_val2014_000000002239.jpg", which the
/// reference reduces to its number) and a caption (`caption_key`). Throws `FormatError` naming file
/// and line on bad lines.
inline std::vector<GeneratedCaption> read_generated_captions(const std::string& path,
                                                             const std::string& image_id_key = "image_id",
                                                             const std::string& caption_key = "caption") {
  const std::string who = "agla::eval::read_generated_captions";
  std::vector<GeneratedCaption> out;
  for (const JsonLine& line : read_jsonl(path, who)) {
    GeneratedCaption c;
    c.line = line.line;
    const auto it = line.value.find(image_id_key);
    check<FormatError>(it != line.value.end(), who, ": ", path, ":", line.line, ": missing field \"", image_id_key,
                       "\"");
    bool ok = false;
    if (it->is_number_integer()) {
      c.image_id = it->get<long long>();
      ok = true;
    } else if (it->is_string()) {
      std::string digits = it->get<std::string>();
      for (const std::string drop : {"COCO_val2014_", ".jpg"})
        for (std::size_t at; (at = digits.find(drop)) != std::string::npos;) digits.erase(at, drop.size());
      ok = !digits.empty() && digits.size() <= 18 &&
           std::all_of(digits.begin(), digits.end(), [](unsigned char ch) { return std::isdigit(ch) != 0; });
      if (ok) c.image_id = std::stoll(digits);
    }
    check<FormatError>(
        ok, who, ": ", path, ":", line.line, ": field \"", image_id_key,
        "\" must be a COCO image id (an integer, or a string such as \"COCO_val2014_000000002239.jpg\"); got ",
        it->dump());
    c.caption = string_field(line, caption_key, path, who);
    out.push_back(std::move(c));
  }
  check<FormatError>(!out.empty(), who, ": ", path, ": no captions");
  return out;
}

/// CHAIR of one caption.
struct CocoChairCaption {
  long long image_id = 0;
  std::string caption;
  std::vector<ChairMention> mentions;      ///< every mention, in order
  std::vector<ChairMention> hallucinated;  ///< mentions of objects not in the image
  std::set<std::string> ground_truth;      ///< the image's objects
  std::set<std::string> recalled;          ///< ground-truth objects the caption mentions
  std::size_t length = 0;                  ///< words after two-word merging
};

/// CHAIR over a set of captions.
struct CocoChairReport {
  ChairMetrics metrics;
  long long words = 0;        ///< sum of caption lengths
  double average_length = 0;  ///< words / captions (the reference prints it as "Len")
  std::vector<CocoChairCaption> captions;
};

/// Scores `captions` against `ground_truth` (image id -> objects; an image missing there has no
/// objects, as in the reference).
inline CocoChairReport evaluate_coco_chair(const std::vector<GeneratedCaption>& captions,
                                           const std::map<long long, std::set<std::string>>& ground_truth,
                                           const CocoChair& chair) {
  CocoChairReport report;
  ChairCounts counts;
  for (const GeneratedCaption& g : captions) {
    CocoChairCaption c;
    c.image_id = g.image_id;
    c.caption = g.caption;
    const ChairCaptionWords words = chair.caption_words(g.caption);
    c.mentions = words.mentions;
    c.length = words.length;
    if (const auto it = ground_truth.find(g.image_id); it != ground_truth.end()) c.ground_truth = it->second;
    std::vector<std::string> objects;
    for (const ChairMention& m : c.mentions) {
      objects.push_back(m.object);
      if (c.ground_truth.count(m.object))
        c.recalled.insert(m.object);
      else
        c.hallucinated.push_back(m);
    }
    counts.add(objects, c.ground_truth);
    report.words += static_cast<long long>(c.length);
    report.captions.push_back(std::move(c));
  }
  report.metrics = chair_metrics(counts);
  report.average_length =
      captions.empty() ? 0.0 : static_cast<double>(report.words) / static_cast<double>(captions.size());
  return report;
}

/// The inputs of a COCO CHAIR evaluation.
struct CocoChairFiles {
  std::string captions;                         ///< generated captions (jsonl)
  std::vector<std::string> instances;           ///< e.g. annotations/instances_val2014.json
  std::vector<std::string> reference_captions;  ///< e.g. annotations/captions_val2014.json
  std::string synonyms;                         ///< synonyms.txt
  std::string wordnet;                          ///< WordNet 3.0 dict folder, e.g. /usr/share/wordnet
  std::string image_id_key = "image_id";
  std::string caption_key = "caption";
};

/// Reads every input and scores the captions (what a CHAIR `--evaluate` prints).
inline CocoChairReport evaluate_coco_chair_files(const CocoChairFiles& files) {
  const CocoChair chair(ChairSynonyms::read(files.synonyms), WordNetMorphy::load(files.wordnet));
  const std::vector<GeneratedCaption> captions =
      read_generated_captions(files.captions, files.image_id_key, files.caption_key);
  std::set<long long> images;
  for (const GeneratedCaption& c : captions) images.insert(c.image_id);
  return evaluate_coco_chair(captions, read_coco_ground_truth(files.instances, files.reference_captions, images, chair),
                             chair);
}

/// The report as JSON: the metrics and counts of `to_json(ChairMetrics)`, `words`,
/// `average_length`, and with `per_caption` a `sentences` list (image_id, caption, mentions as
/// [word, object] pairs, hallucinated pairs, ground_truth, recalled, length).
inline nlohmann::json to_json(const CocoChairReport& report, bool per_caption = true) {
  nlohmann::json j = to_json(report.metrics);
  j["words"] = report.words;
  j["average_length"] = report.average_length;
  if (!per_caption) return j;
  nlohmann::json sentences = nlohmann::json::array();
  const auto pairs = [](const std::vector<ChairMention>& ms) {
    nlohmann::json a = nlohmann::json::array();
    for (const ChairMention& m : ms) a.push_back({m.word, m.object});
    return a;
  };
  for (const CocoChairCaption& c : report.captions)
    sentences.push_back({{"image_id", c.image_id},
                         {"caption", c.caption},
                         {"mentions", pairs(c.mentions)},
                         {"hallucinated", pairs(c.hallucinated)},
                         {"ground_truth", c.ground_truth},
                         {"recalled", c.recalled},
                         {"length", c.length}});
  j["sentences"] = sentences;
  return j;
}

/// The report as text: the reference's printout (CHAIRs, CHAIRi, Recall, Len; percentages with
/// one decimal) and the counts behind it.
inline std::string format_coco_chair(const CocoChairReport& report) {
  std::ostringstream out;
  char line[96];
  const std::pair<const char*, double> rows[] = {{"CHAIRs", report.metrics.chair_s * 100},
                                                 {"CHAIRi", report.metrics.chair_i * 100},
                                                 {"Recall", report.metrics.recall * 100},
                                                 {"Len", report.average_length}};
  for (const auto& [name, value] : rows) {
    std::snprintf(line, sizeof line, "%-10s: %.1f\n", name, value);
    out << line;
  }
  const ChairCounts& c = report.metrics.counts;
  out << c.captions << " captions, " << c.hallucinated_captions << " with a hallucination; " << c.mentions
      << " object mentions, " << c.hallucinated_mentions << " hallucinated; " << c.recalled_objects << " of "
      << c.ground_truth_objects << " ground-truth objects mentioned\n";
  return out.str();
}

}  // namespace agla::eval
