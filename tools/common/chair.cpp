// agla_chair: captions a list of COCO images with one decoding method, writes the captions (jsonl)
// and scores them with CHAIR as the reference chair.py does; scores captions made elsewhere
// (--evaluate).

#include "agla/eval/coco_chair.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/eval/jsonl.hpp"
#include "agla/eval/runner.hpp"
#include "agla/eval/words.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/protocols.hpp"
#include "common/threads.hpp"

namespace agla::tools {

namespace {

const std::string kProgram = "agla_chair";

struct Options {
  bool evaluate = false;
  std::string images, image_list, captions = "captions.jsonl";
  std::optional<std::string> itm_caption_prompt;
  RunOptions run;
  std::vector<std::string> instances, coco_captions;
  std::string synonyms, wordnet = "/usr/share/wordnet", image_id_key = "image_id", caption_key = "caption";
  std::set<std::string> given;  // the options named on the command line (they override a protocol)
};

/// The options of a run; nullopt for --help.
std::optional<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  o.run.settings.instruction = "Please describe this image in detail.";
  o.run.settings.max_new_tokens = 64;
  o.run.settings.parser = "chair";
  OptionParser parser(kProgram);
  parser.text("--evaluate", o.captions).text("--images", o.images).text("--image-list", o.image_list);
  parser.text("--captions", o.captions).text("--synonyms", o.synonyms);
  parser.text("--caption-prompt", o.run.settings.instruction).text("--itm-caption-prompt", o.itm_caption_prompt);
  parser.flag("--drop-incomplete-sentence", o.run.settings.drop_incomplete_sentence);
  parser.value("--instances", [&](const std::string& v) { o.instances.push_back(v); });
  parser.value("--coco-captions", [&](const std::string& v) { o.coco_captions.push_back(v); });
  parser.text("--wordnet", o.wordnet).text("--image-id-key", o.image_id_key).text("--caption-key", o.caption_key);
  parser.group([&](const std::string& arg, ArgCursor& cursor) { return parse_run_option(arg, cursor, o.run); });
  if (!parser.parse(args)) return std::nullopt;
  o.given = parser.given();
  o.evaluate = parser.named("--evaluate");
  check<InvalidArgument>(o.evaluate != parser.named("--images"),
                         "agla_chair: give exactly one of --images DIR (run) or --evaluate CAPTIONS.jsonl (see --help)");
  const bool any_annotation = !o.instances.empty() || !o.coco_captions.empty() || !o.synonyms.empty();
  const bool all_annotations = !o.instances.empty() && !o.coco_captions.empty() && !o.synonyms.empty();
  check<InvalidArgument>(all_annotations || (!o.evaluate && !any_annotation),
                         "agla_chair: scoring needs --instances, --coco-captions and --synonyms (",
                         o.evaluate ? "--evaluate" : "give all three or none", ")");
  for (const std::string& path : o.instances) require_file(kProgram, "--instances", path);
  for (const std::string& path : o.coco_captions) require_file(kProgram, "--coco-captions", path);
  if (!o.synonyms.empty()) require_file(kProgram, "--synonyms", o.synonyms);
  check_run_options(kProgram, o.run);
  return o;
}

/// The COCO image id in a file name: the digits of its stem after the last '_'
/// ("COCO_val2014_000000002239.jpg" -> 2239, "000000002239.jpg" -> 2239); nullopt when there are none.
std::optional<long long> coco_image_id(const std::string& file) {
  std::string stem = std::filesystem::path(file).stem().string();
  if (const std::size_t underscore = stem.rfind('_'); underscore != std::string::npos)
    stem = stem.substr(underscore + 1);
  if (stem.empty() || stem.size() > 18 ||
      !std::all_of(stem.begin(), stem.end(), [](unsigned char c) { return std::isdigit(c) != 0; }))
    return std::nullopt;
  return std::stoll(stem);
}

/// One image to caption.
struct ImageItem {
  std::string file;
  long long image_id = 0;
};

/// The images of a run: the list file's, else the folder's image files by name. Throws
/// `FormatError` naming file and line for a list line without an image or with a name that holds
/// no COCO image id, and for a repeated image.
std::vector<ImageItem> read_images(const Options& o) {
  namespace fs = std::filesystem;
  std::vector<ImageItem> items;
  std::set<long long> seen;
  const auto add = [&](const std::string& file, const std::string& where) {
    const std::optional<long long> id = coco_image_id(file);
    check<FormatError>(id.has_value(), kProgram, ": ", where, ": '", file,
                       "' holds no COCO image id (expected e.g. COCO_val2014_000000002239.jpg)");
    check<FormatError>(seen.insert(*id).second, kProgram, ": ", where, ": image id ", *id, " repeats");
    items.push_back({file, *id});
  };
  if (!o.image_list.empty()) {
    require_file(kProgram, "--image-list", o.image_list);
    const std::vector<std::string> lines =
        eval::detail::python_readlines(eval::detail::read_file_bytes(o.image_list, kProgram));
    check<FormatError>(lines.size() <= 10000000, kProgram, ": ", o.image_list, ": more than 10,000,000 lines");
    for (std::size_t number = 1; number <= lines.size(); ++number) {
      const std::string line = eval::detail::strip(lines[number - 1]);
      if (line.empty()) continue;
      const std::string where = o.image_list + ":" + std::to_string(number);
      std::string file = line;
      if (line.front() == '{') {
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        check<FormatError>(!j.is_discarded() && j.is_object(), kProgram, ": ", where, ": not a JSON object");
        const auto it = j.find("image");
        check<FormatError>(it != j.end() && it->is_string(), kProgram, ": ", where,
                           ": missing string field \"image\"");
        file = it->get<std::string>();
      }
      add(file, where);
    }
    check<FormatError>(!items.empty(), kProgram, ": ", o.image_list, ": no images listed");
  } else {
    std::error_code ec;
    check<FormatError>(fs::is_directory(o.images, ec), kProgram, ": --images: '", o.images, "' is not a directory");
    std::vector<std::string> files;
    for (const fs::directory_entry& entry : fs::directory_iterator(o.images)) {
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
      if (entry.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp"))
        files.push_back(entry.path().filename().string());
    }
    std::sort(files.begin(), files.end());
    for (const std::string& file : files) add(file, o.images);
    check<FormatError>(!items.empty(), kProgram, ": --images: no .jpg/.jpeg/.png/.bmp files in '", o.images, "'");
  }
  return items;
}

eval::CocoChairFiles annotation_files(const Options& o, const std::string& captions, const std::string& id_key,
                                      const std::string& caption_key) {
  eval::CocoChairFiles files;
  files.captions = captions;
  files.instances = o.instances;
  files.reference_captions = o.coco_captions;
  files.synonyms = o.synonyms;
  files.wordnet = o.wordnet;
  files.image_id_key = id_key;
  files.caption_key = caption_key;
  return files;
}

int run_captions(Options o, std::ostream& out, std::ostream& err) {
  namespace fs = std::filesystem;
  std::vector<ImageItem> all = read_images(o);
  if (o.run.limit && static_cast<std::size_t>(*o.run.limit) < all.size())
    all.resize(static_cast<std::size_t>(*o.run.limit));
  const eval::ChunkRange chunk = eval::chunk_range(all.size(), o.run.num_chunks, o.run.chunk_idx);

  RunOptions& r = o.run;
  const PreparedRun prepared = prepare_run(kProgram, r, o.given, Benchmark::Chair);
  const nlohmann::json& record = prepared.record;
  const std::string& model_id = prepared.model_id;
  const std::string itm_text = o.itm_caption_prompt ? *o.itm_caption_prompt
                               : r.settings.instruction.empty() ? std::string(kCaptionItmText)
                                                                : r.settings.instruction;
  ItemGenerator generator(prepared.generator, err);

  std::ofstream captions(o.captions, std::ios::binary | std::ios::trunc);
  check<FormatError>(captions.good(), kProgram, ": cannot open '", o.captions, "' for writing (--captions)");
  std::optional<eval::ProgressBar> bar;
  if (!r.quiet) bar.emplace(chunk.size(), err, "agla_chair " + std::string(method_name(r.method)));
  std::size_t capped = 0;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = chunk.begin; i < chunk.end; ++i) {
    const ImageItem& item = all[i];
    Generation c =
        generator.generate(Item{(fs::path(o.images) / item.file).string(), r.settings.instruction, {}, itm_text, i, {}});
    std::string caption = c.text;
    if (c.hit_cap) {
      ++capped;
      if (r.settings.drop_incomplete_sentence) {
        caption = drop_incomplete_sentence(caption);
        c.metadata["generated_text"] = c.text;
      }
    }
    const nlohmann::json line{{"image_id", item.image_id}, {"image", item.file},       {"caption", caption},
                              {"method", method_name(r.method)}, {"model_id", model_id}, {"protocol", record},
                              {"metadata", c.metadata}};
    captions << line.dump() << '\n' << std::flush;
    check<FormatError>(captions.good(), kProgram, ": write failed for '", o.captions, "'");
    if (bar) bar->advance();
  }
  if (bar) bar->finish();
  generator.warn_unknown_words(err, chunk.size());
  captions.close();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json run = generator.run_record(prepared, r, seconds);
  run["images"] = chunk.size();
  run["captions_at_token_cap"] = capped;
  run["captions"] = o.captions;
  if (capped > 0 && !r.settings.drop_incomplete_sentence)
    err << "agla_chair: warning: " << capped << " of " << chunk.size() << " captions stopped at the token cap ("
        << r.settings.max_new_tokens << "); their last sentence may be cut\n";
  std::string not_scored;
  if (r.num_chunks > 1)
    not_scored = "one chunk of " + std::to_string(r.num_chunks) + "; concatenate the chunks and run --evaluate";
  else if (o.instances.empty())
    not_scored = "no --instances, --coco-captions, --synonyms given";
  else if (!generator.has_tokenizer())
    not_scored = "captions are token ids (the LVLM has no tokenizer)";
  if (!not_scored.empty()) {
    if (r.json)
      out << nlohmann::json{{"run", run}, {"not_scored", not_scored}}.dump() << "\n";
    else
      out << "agla_chair: wrote " << chunk.size() << " captions to " << o.captions << "; not scored: " << not_scored
          << "\n";
    return 0;
  }
  const eval::CocoChairReport report =
      eval::evaluate_coco_chair_files(annotation_files(o, o.captions, "image_id", "caption"));
  if (r.json) {
    nlohmann::json j = eval::to_json(report);
    j["run"] = run;
    out << j.dump() << "\n";
  } else {
    out << eval::format_coco_chair(report)
        << run_summary_line(prepared, chunk.size(), "images", seconds)
        << "Captions: " << o.captions << "\n";
  }
  return 0;
}

/// Runs the mode the options chose.
int run(const Options& o, std::ostream& out, std::ostream& err) {
  if (!o.evaluate) return run_captions(o, out, err);
  use_threads(o.run.threads, 0);
  require_file(kProgram, "--evaluate", o.captions);
  print_report(out, o.run.json,
               eval::evaluate_coco_chair_files(annotation_files(o, o.captions, o.image_id_key, o.caption_key)),
               eval::format_coco_chair);
  return 0;
}

}  // namespace

int run_chair(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_program(kProgram, args, out, err, parse_options, run);
}

}  // namespace agla::tools
