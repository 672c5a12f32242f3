#pragma once
/// \file
/// Plumbing of benchmark runs over question files: splitting a run into chunks (one per machine or
/// job-array task) the way LLaVA's `model_vqa_loader.py` does, a progress bar with an ETA, and the
/// answers jsonl lines the reference scripts write.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agla/error.hpp"

namespace agla::eval {

/// Half-open index range `[begin, end)` of a chunk.
struct ChunkRange {
  std::size_t begin = 0, end = 0;
  /// Number of items in the chunk.
  std::size_t size() const { return end - begin; }
};

/// Chunk `chunk_idx` of `num_chunks` over `n` items, as LLaVA's `split_list`/`get_chunk`:
/// chunks of `ceil(n / num_chunks)` consecutive items, the last one shorter. Where LLaVA raises an
/// IndexError (a chunk index past the last non-empty chunk) the range is empty, so every task of a
/// job array can run and the concatenated answer files cover each item exactly once.
inline ChunkRange chunk_range(std::size_t n, int num_chunks, int chunk_idx) {
  check<InvalidArgument>(num_chunks >= 1 && chunk_idx >= 0 && chunk_idx < num_chunks,
                         "agla::eval::chunk_range: need 0 <= chunk_idx < num_chunks; got chunk_idx ", chunk_idx,
                         ", num_chunks ", num_chunks);
  const std::size_t size = (n + static_cast<std::size_t>(num_chunks) - 1) / static_cast<std::size_t>(num_chunks);
  const std::size_t begin = std::min(n, size * static_cast<std::size_t>(chunk_idx));
  return {begin, std::min(n, begin + size)};
}

/// The items of chunk `chunk_idx` of `num_chunks` when items sharing a key (their image) must stay
/// together: the keys' groups in order of first appearance are split as `chunk_range` splits
/// items, and each group's items follow one another (in file order within the group). Returns
/// indices into `keys`; concatenating the chunks covers every item once.
inline std::vector<std::size_t> grouped_chunk(const std::vector<std::string>& keys, int num_chunks, int chunk_idx) {
  std::vector<std::vector<std::size_t>> groups;
  std::unordered_map<std::string, std::size_t> group_of;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto [it, added] = group_of.emplace(keys[i], groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  const ChunkRange range = chunk_range(groups.size(), num_chunks, chunk_idx);
  std::vector<std::size_t> items;
  for (std::size_t g = range.begin; g < range.end; ++g) items.insert(items.end(), groups[g].begin(), groups[g].end());
  return items;
}

/// "1:02:03" or "02:03" for a duration in seconds; "--:--" when unknown (negative or not finite).
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "--:--";
  const long long s = static_cast<long long>(seconds + 0.5);
  char buffer[48];
  if (s >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buffer, sizeof buffer, "%02lld:%02lld", s / 60, s % 60);
  return buffer;
}

/// One progress line: `label [#####.....] done/total pct elapsed<ETA, rate/s`. The ETA assumes
/// the remaining items take the mean time of the finished ones.
inline std::string progress_line(const std::string& label, std::size_t done, std::size_t total, double elapsed,
                                 int width = 30) {
  const double fraction = total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  const int filled = static_cast<int>(fraction * width);
  const double eta =
      done == 0 ? -1.0 : elapsed / static_cast<double>(done) * static_cast<double>(total - std::min(done, total));
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  char tail[128];
  std::snprintf(tail, sizeof tail, "] %zu/%zu %3.0f%% %s<%s, %.2f/s", done, total, 100.0 * fraction,
                format_duration(elapsed).c_str(), format_duration(eta).c_str(), rate);
  return (label.empty() ? std::string() : label + " ") + "[" + std::string(static_cast<std::size_t>(filled), '#') +
         std::string(static_cast<std::size_t>(width - filled), '.') + tail;
}

/// A progress bar redrawn in place (carriage return) on `out`, at most every `min_interval`
/// seconds and always at the end.
class ProgressBar {
 public:
  /// A bar over `total` items, written to `out` (e.g. std::cerr).
  ProgressBar(std::size_t total, std::ostream& out, std::string label = {}, double min_interval = 0.2)
      : total_(total),
        out_(out),
        label_(std::move(label)),
        min_interval_(min_interval),
        start_(std::chrono::steady_clock::now()) {}

  /// Marks `n` more items done and redraws when due.
  void advance(std::size_t n = 1) {
    done_ += n;
    const double now = elapsed();
    if (done_ >= total_ || now - last_draw_ >= min_interval_) draw(now);
  }

  /// Draws the final state and ends the line.
  void finish() {
    if (finished_) return;
    draw(elapsed());
    out_ << '\n' << std::flush;
    finished_ = true;
  }

  /// Items done so far.
  std::size_t done() const { return done_; }

  /// Seconds since construction.
  double elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  void draw(double now) {
    out_ << '\r' << progress_line(label_, done_, total_, now) << std::flush;
    last_draw_ = now;
  }

  std::size_t total_;
  std::size_t done_ = 0;
  std::ostream& out_;
  std::string label_;
  double min_interval_;
  double last_draw_ = -1e9;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

/// One answers-file line, with the fields the reference scripts write
/// (`object_hallucination_vqa_llava.py`: question_id, prompt, text, model_id, image, metadata).
struct AnswerRecord {
  nlohmann::json question_id;  ///< as in the question file (int or string)
  std::string prompt;          ///< the question text as asked
  std::string text;            ///< the model's answer
  std::string model_id;
  std::string image;
  nlohmann::json metadata = nlohmann::json::object();  ///< e.g. method, seed, ITC value, kept fraction
};

/// The JSON object of an answers line.
inline nlohmann::json answer_json(const AnswerRecord& record) {
  return nlohmann::json{{"question_id", record.question_id}, {"prompt", record.prompt}, {"text", record.text},
                        {"model_id", record.model_id},       {"image", record.image},   {"metadata", record.metadata}};
}

/// Appends answers to a jsonl file, one flushed line per answer (a killed run keeps what it wrote).
class AnswerWriter {
 public:
  /// Opens `path` for writing (truncating) or, with `append`, for appending.
  explicit AnswerWriter(const std::string& path, bool append = false)
      : path_(path), out_(path, append ? std::ios::app | std::ios::binary : std::ios::trunc | std::ios::binary) {
    check<FormatError>(out_.good(), "agla::eval::AnswerWriter: cannot open '", path, "' for writing");
  }

  /// Writes one line and flushes it.
  void write(const AnswerRecord& record) {
    out_ << answer_json(record).dump() << '\n' << std::flush;
    check<FormatError>(out_.good(), "agla::eval::AnswerWriter: write failed for '", path_, "'");
  }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace agla::eval
