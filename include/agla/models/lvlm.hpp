#pragma once
/// \file
/// The LVLM contract: the one interface every LVLM the library ships offers (`blip::BlipCaptioner`,
/// `llava::LlavaLvlm`, `instructblip::InstructBlipLvlm`), so that programs drive any of them the
/// same way (docs/design.md §4). It extends the forward-functor contract of
/// `agla/decode/view.hpp` (the part `agla::decode_step` needs, which a user's own functor may offer
/// alone) with what a whole generation needs:
///
/// | member | what it does |
/// |---|---|
/// | `static X load(dir, io::LoadOptions = {})` | loads a Hugging Face checkpoint directory |
/// | `at::Tensor preprocess(image) const` | RGB uint8 `[H, W, 3]` -> the model's pixels `[3, S, S]` float32 (CPU) |
/// | `bool has_tokenizer() const` | whether text prompts can be encoded (else prompts come as ids) |
/// | `Prompt prompt(instruction) const` | the model's prompt template around `instruction`, tokenised |
/// | `Prompt disturbed_prompt(instruction, disturbance) const` | ICD's text view, the disturbance placed as the model's reference code places it |
/// | `std::string decode(ids) const` | text of generated ids (special tokens skipped) |
/// | `TokenSpec tokens() const` | stop ids, pad id, vocabulary size |
/// | `std::int64_t room(const PromptBatch&) const` | new tokens that fit after the prompt |
/// | `at::Tensor begin(const LvlmInputs&)` | starts a generation; returns the first step's tokens `[B, L]` |
/// | `void reset()` | drops the generation's state (caches, images) |
/// | `at::Tensor operator()(step_tokens, View)` | next-token logits of one view, `[B, V]` float32 |
/// | `at::Tensor operator()(step_tokens, AllViews)` | every view in one batched forward, `[(1 + K) B, V]` |
///
/// `agla::check_lvlm<X>()` checks it at compile time and names the first missing member.
///
/// Optional capability, the image cache (`agla::enable_image_cache` turns it on where a model has it):
///
/// | member | what it does |
/// |---|---|
/// | `void set_image_cache(std::int64_t entries)` | keeps what depends only on an image (and the prompt before the instruction) for up to `entries` images across generations; 0 = off |
/// | `ImageCacheStats image_cache_stats() const` | hits, misses and entries so far |
///
/// With it on, a run that asks several questions about one image computes that image's share once
/// (docs/performance.md): LLaVA the KV cache of the prompt through the image tokens, InstructBLIP
/// and BLIP the vision encoder's output. Results equal the uncached run's up to float rounding.

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "agla/decode/step.hpp"
#include "agla/decode/view.hpp"
#include "agla/error.hpp"
#include "agla/io/module_loader.hpp"
#include "agla/names.hpp"

namespace agla {

/// What an extra view changes relative to the original input (view 0).
enum class ViewKind {
  Image,    ///< another image (AGLA's masked image, VCD's noised image, a random transform)
  Text,     ///< the same image with another prompt (a disturbed instruction)
  NoImage,  ///< the prompt without the image
};

/// The name of `kind` as it appears in results files.
inline const char* view_kind_name(ViewKind kind) {
  static constexpr NamedValue<ViewKind> kNames[] = {
      {ViewKind::Image, "image"}, {ViewKind::Text, "text"}, {ViewKind::NoImage, "no-image"}};
  return name_of(kind, kNames);
}

/// One stream's tokenised prompt.
struct Prompt {
  std::vector<std::int64_t> ids;  ///< The language model's ids, template applied (image token and BOS as the model needs).
  /// The instruction as the vision side reads it (InstructBLIP's Q-Former: `[CLS] ... [SEP]`);
  /// empty for models whose vision side reads no text.
  std::vector<std::int64_t> instruction_ids;
};

/// Prompts of B streams as tensors, left-padded to a common length (0 = padding in the masks).
struct PromptBatch {
  at::Tensor ids;               ///< `[B, L]` int64
  at::Tensor mask;              ///< `[B, L]` int64, or undefined when no row is padded
  at::Tensor instruction_ids;   ///< `[B, Lq]` int64, or undefined
  at::Tensor instruction_mask;  ///< `[B, Lq]` int64, or undefined when no row is padded

  /// Number of streams B.
  std::int64_t batch() const { return ids.defined() ? ids.size(0) : 0; }
};

namespace detail {

/// `rows` left-padded with `pad` to `[B, L]`, and the mask (undefined when no row needed padding).
inline std::pair<at::Tensor, at::Tensor> left_pad(const std::vector<const std::vector<std::int64_t>*>& rows,
                                                  std::int64_t pad) {
  std::size_t longest = 0;
  for (const auto* row : rows) longest = std::max(longest, row->size());
  const auto b = static_cast<std::int64_t>(rows.size()), l = static_cast<std::int64_t>(longest);
  at::Tensor ids = at::full({b, l}, pad, at::kLong);
  at::Tensor mask = at::zeros({b, l}, at::kLong);
  bool padded = false;
  for (std::int64_t r = 0; r < b; ++r) {
    const auto& row = *rows[static_cast<std::size_t>(r)];
    const auto n = static_cast<std::int64_t>(row.size());
    padded = padded || n < l;
    if (n == 0) continue;
    ids[r].narrow(0, l - n, n).copy_(at::tensor(at::ArrayRef<std::int64_t>(row), at::kLong));
    mask[r].narrow(0, l - n, n).fill_(1);
  }
  return {ids, padded ? mask : at::Tensor()};
}

}  // namespace detail

/// Stacks `prompts` into a `PromptBatch`, left-padding with `pad_id`. Throws `agla::InvalidArgument`
/// for no prompts, an empty prompt, or instruction ids given for some streams only.
inline PromptBatch batch_prompts(const std::vector<Prompt>& prompts, std::int64_t pad_id) {
  check<InvalidArgument>(!prompts.empty(), "agla::batch_prompts: no prompts given");
  std::vector<const std::vector<std::int64_t>*> ids, instructions;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    check<InvalidArgument>(!prompts[i].ids.empty(), "agla::batch_prompts: prompt ", i, " has no token ids");
    check<InvalidArgument>(prompts[i].instruction_ids.empty() == prompts[0].instruction_ids.empty(),
                           "agla::batch_prompts: prompt ", i, " ",
                           prompts[i].instruction_ids.empty() ? "lacks" : "has",
                           " instruction ids, unlike prompt 0; give them for every stream or none");
    ids.push_back(&prompts[i].ids);
    instructions.push_back(&prompts[i].instruction_ids);
  }
  PromptBatch batch;
  std::tie(batch.ids, batch.mask) = detail::left_pad(ids, pad_id);
  if (!prompts[0].instruction_ids.empty())
    std::tie(batch.instruction_ids, batch.instruction_mask) = detail::left_pad(instructions, pad_id);
  return batch;
}

/// One extra view of a generation (view k, k >= 1).
struct ExtraView {
  ViewKind kind = ViewKind::Image;  ///< What the view changes.
  at::Tensor pixels;                ///< `Image`: `[B, 3, S, S]` preprocessed pixels of the view's image.
  PromptBatch prompt;               ///< `Text`: the view's prompts (B streams).
  /// `Image`: the pixels do not depend on the prompt and recur across generations (VCD's noise
  /// drawn once per image, not AGLA's prompt-dependent mask), so a model's image cache may keep
  /// what it computes from them. The original view (view 0) always may.
  bool reusable = false;
};

/// Everything one generation conditions on: B streams' prompts, their images (the original view)
/// and K extra views.
struct LvlmInputs {
  PromptBatch prompt;                ///< The original prompts.
  at::Tensor pixels;                 ///< `[B, 3, S, S]` preprocessed original images.
  std::vector<ExtraView> views;      ///< Views 1..K, in order.
  std::int64_t max_new_tokens = 64;  ///< Sizes the caches up front (they grow when exceeded).

  /// Inputs of B unpadded prompts `prompt_ids` `[B, L]` on `pixels` `[B, 3, S, S]`, with one image
  /// view per entry of `view_pixels` (e.g. AGLA's augmented image).
  static LvlmInputs images(const at::Tensor& prompt_ids, const at::Tensor& pixels,
                           const std::vector<at::Tensor>& view_pixels = {}, std::int64_t max_new_tokens = 64) {
    LvlmInputs inputs;
    inputs.prompt.ids = prompt_ids;
    inputs.pixels = pixels;
    for (const at::Tensor& view : view_pixels) inputs.views.push_back(ExtraView{ViewKind::Image, view, {}});
    inputs.max_new_tokens = max_new_tokens;
    return inputs;
  }
};

namespace detail {

/// The real ids of each row of `ids` `[B, L]` under its 0/1 `mask` (undefined = all ones), as CPU
/// int64 vectors; throws `agla::ShapeError` for a mask of another shape and `agla::InvalidArgument`
/// (naming `who` and `name`) for an empty row or ids outside `[0, vocab)`.
inline std::vector<at::Tensor> unpadded_rows(const at::Tensor& ids_in, const at::Tensor& mask_in, int64_t vocab,
                                             const std::string& who, const std::string& name) {
  const at::Tensor ids = ids_in.to(at::kCPU);
  const auto b = ids.size(0), l = ids.size(1);
  const at::Tensor mask = mask_in.defined() ? mask_in.to(at::kCPU) : at::ones({b, l}, at::kLong);
  check<ShapeError>(mask.dim() == 2 && mask.size(0) == b && mask.size(1) == l, who, ": ", name, " mask must be [", b,
                    ", ", l, "]; got ", mask.sizes());
  std::vector<at::Tensor> rows;
  for (int64_t r = 0; r < b; ++r) {
    const at::Tensor row = ids[r].masked_select(mask[r] != 0);
    check<InvalidArgument>(row.numel() > 0, who, ": ", name, " row ", r, " has no tokens");
    const auto lo = row.min().item<int64_t>(), hi = row.max().item<int64_t>();
    check<InvalidArgument>(lo >= 0 && hi < vocab, who, ": ", name, " ids must be in [0, ", vocab, "); row ", r,
                           " has values in [", lo, ", ", hi, "]");
    rows.push_back(row);
  }
  return rows;
}

/// Checks what every LVLM's `begin` needs of `inputs` (prompt ids int64 `[B, L]` with B, L > 0;
/// `max_new_tokens` >= 0) and returns B; throws `agla::ShapeError` / `agla::InvalidArgument` naming `who`.
inline int64_t check_inputs(const LvlmInputs& inputs, const std::string& who) {
  const at::Tensor& ids = inputs.prompt.ids;
  check<ShapeError>(ids.defined() && ids.dim() == 2 && ids.scalar_type() == at::kLong && ids.size(0) > 0 &&
                        ids.size(1) > 0,
                    who, ": prompt ids must be int64 [B, L] with B, L > 0; got ",
                    ids.defined() ? ids.sizes() : at::IntArrayRef{});
  check<InvalidArgument>(inputs.max_new_tokens >= 0, who, ": max_new_tokens must be >= 0; got ",
                         inputs.max_new_tokens);
  return ids.size(0);
}

/// The per-view rows a LLaMA-based LVLM's `begin` builds, original first: checks the original
/// pixels with `vision.check_pixels` before `original()` builds its rows, then each extra view's
/// pixels (Image) or prompt batch (Text) before `extra(view, original rows, "view k")` builds its
/// rows. `batch` is what `check_inputs` returned; errors name `who`.
template <class Rows, class Vision, class Original, class Extra>
std::vector<Rows> checked_view_rows(const LvlmInputs& inputs, int64_t batch, const Vision& vision,
                                    const std::string& who, Original original, Extra extra) {
  vision.check_pixels(inputs.pixels, batch, who, "pixels");
  std::vector<Rows> views{original()};
  for (size_t k = 0; k < inputs.views.size(); ++k) {
    const ExtraView& view = inputs.views[k];
    const std::string name = "view " + std::to_string(k + 1);
    if (view.kind == ViewKind::Image) vision.check_pixels(view.pixels, batch, who, name + " pixels");
    if (view.kind == ViewKind::Text)
      check<ShapeError>(view.prompt.batch() == batch, who, ": ", name, " (text) needs prompts for ", batch,
                        " streams; got ", view.prompt.batch());
    Rows rows = extra(view, views.front(), name);
    views.push_back(std::move(rows));
  }
  return views;
}

}  // namespace detail

/// What generation needs to know about a model's vocabulary.
struct TokenSpec {
  std::vector<std::int64_t> stop_ids;  ///< Ids at which a stream ends.
  std::int64_t pad_id = 0;             ///< Id fed to finished streams and used for left padding.
  std::int64_t vocab_size = 0;         ///< Every id is below it.
};

/// Counters of an LVLM's image cache.
struct ImageCacheStats {
  std::int64_t hits = 0;     ///< rows (image and prompt prefix) served from the cache
  std::int64_t misses = 0;   ///< rows computed and stored
  std::int64_t entries = 0;  ///< entries held now
};

namespace detail {

/// A least-recently-used store of what a model computed from one image (preprocessed pixels
/// `[3, S, S]`) under one id prefix (`[P]` int64, empty when only the image matters): entries match
/// exactly (`at::equal`), so a hit is the value a recomputation would give.
template <typename Value>
class ImageCache {
 public:
  /// Room for `entries` (0 = off; the store is emptied).
  void resize(std::int64_t entries, const std::string& who) {
    check<InvalidArgument>(entries >= 0 && entries <= kMaxEntries, who, ": the image cache holds 0 to ", kMaxEntries,
                           " entries; got ", entries);
    capacity_ = entries;
    while (static_cast<std::int64_t>(entries_.size()) > capacity_) entries_.pop_back();
  }
  /// Whether the cache is on.
  bool enabled() const { return capacity_ > 0; }
  /// The value stored for `pixels` and `ids`, or null (counted as a hit or a miss).
  const Value* find(const at::Tensor& pixels, const at::Tensor& ids) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (same(it->ids, ids) && same(it->pixels, pixels)) {
        entries_.splice(entries_.begin(), entries_, it);
        ++stats_.hits;
        return &entries_.front().value;
      }
    }
    ++stats_.misses;
    return nullptr;
  }
  /// Stores `value` for `pixels` and `ids`, evicting the least recently used entry when full.
  const Value& insert(const at::Tensor& pixels, const at::Tensor& ids, Value value) {
    entries_.push_front(Entry{pixels.detach().clone(), ids.defined() ? ids.to(at::kCPU).clone() : at::Tensor(),
                              std::move(value)});
    while (static_cast<std::int64_t>(entries_.size()) > capacity_) entries_.pop_back();
    return entries_.front().value;
  }
  /// Drops every entry (the capacity stays).
  void clear() { entries_.clear(); }
  /// Hits, misses, entries.
  ImageCacheStats stats() const {
    ImageCacheStats s = stats_;
    s.entries = static_cast<std::int64_t>(entries_.size());
    return s;
  }

  /// Most entries a cache may be given (each can hold a prompt prefix's whole KV cache).
  static constexpr std::int64_t kMaxEntries = 1 << 16;

 private:
  struct Entry {
    at::Tensor pixels, ids;
    Value value;
  };
  static bool same(const at::Tensor& a, const at::Tensor& b) {
    if (a.defined() != b.defined()) return false;
    if (!a.defined()) return true;
    return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && at::equal(a, b.to(a.device()));
  }

  std::int64_t capacity_ = 0;
  std::list<Entry> entries_;
  ImageCacheStats stats_;
};

/// What `encode` (`[N, 3, S, S]` -> `[N, ...]`) gives for every row of `blocks` (each `[B_k, 3, S, S]`),
/// stacked in order: rows of blocks marked `reusable` come from `cache` (encoded alone and stored on
/// a miss), the others are encoded in one batch.
template <typename Encode>
at::Tensor encode_image_rows(ImageCache<at::Tensor>& cache, const std::vector<at::Tensor>& blocks,
                             const std::vector<bool>& reusable, Encode&& encode) {
  std::vector<at::Tensor> rows, fresh_pixels;
  std::vector<size_t> fresh_rows;
  for (size_t k = 0; k < blocks.size(); ++k) {
    for (std::int64_t r = 0; r < blocks[k].size(0); ++r) {
      const at::Tensor pixels = blocks[k][r];
      if (reusable[k]) {
        const at::Tensor* hit = cache.find(pixels, at::Tensor());
        rows.push_back(hit != nullptr ? *hit : cache.insert(pixels, at::Tensor(), encode(pixels.unsqueeze(0))[0]));
      } else {
        fresh_rows.push_back(rows.size());
        fresh_pixels.push_back(pixels);
        rows.emplace_back();
      }
    }
  }
  if (!fresh_pixels.empty()) {
    const at::Tensor fresh = encode(at::stack(fresh_pixels));
    for (size_t i = 0; i < fresh_rows.size(); ++i) rows[fresh_rows[i]] = fresh[static_cast<std::int64_t>(i)];
  }
  return at::stack(rows);
}

template <typename T, typename = void>
struct has_load : std::false_type {};
template <typename T>
struct has_load<T, std::void_t<decltype(T::load(std::declval<const std::string&>(),
                                                std::declval<const io::LoadOptions&>()))>> : std::true_type {};
template <typename T, typename = void>
struct has_preprocess : std::false_type {};
template <typename T>
struct has_preprocess<T, std::void_t<decltype(std::declval<const T&>().preprocess(std::declval<const at::Tensor&>()))>>
    : std::true_type {};
template <typename T, typename = void>
struct has_prompt : std::false_type {};
template <typename T>
struct has_prompt<T, std::void_t<decltype(std::declval<const T&>().prompt(std::declval<const std::string&>())),
                                 decltype(std::declval<const T&>().has_tokenizer())>> : std::true_type {};
template <typename T, typename = void>
struct has_disturbed_prompt : std::false_type {};
template <typename T>
struct has_disturbed_prompt<T, std::void_t<decltype(std::declval<const T&>().disturbed_prompt(
                                   std::declval<const std::string&>(), std::declval<const std::string&>()))>>
    : std::true_type {};
template <typename T, typename = void>
struct has_decode : std::false_type {};
template <typename T>
struct has_decode<T, std::void_t<decltype(std::declval<const T&>().decode(
                         std::declval<const std::vector<std::int64_t>&>()))>> : std::true_type {};
template <typename T, typename = void>
struct has_tokens : std::false_type {};
template <typename T>
struct has_tokens<T, std::void_t<decltype(std::declval<const T&>().tokens()),
                                 decltype(std::declval<const T&>().room(std::declval<const PromptBatch&>()))>>
    : std::true_type {};
template <typename T, typename = void>
struct has_begin : std::false_type {};
template <typename T>
struct has_begin<T, std::void_t<decltype(std::declval<T&>().begin(std::declval<const LvlmInputs&>())),
                                decltype(std::declval<T&>().reset())>> : std::true_type {};

template <typename T, typename = void>
struct has_image_cache : std::false_type {};
template <typename T>
struct has_image_cache<T, std::void_t<decltype(std::declval<T&>().set_image_cache(std::int64_t{})),
                                      decltype(std::declval<const T&>().image_cache_stats())>> : std::true_type {};

}  // namespace detail

/// Whether `T` has the optional image cache (`set_image_cache`, `image_cache_stats`).
template <typename T>
inline constexpr bool has_image_cache_v = detail::has_image_cache<T>::value;

/// Turns `model`'s image cache on with room for `entries` images (0 = off) when it has one;
/// returns whether it has. Throws `agla::InvalidArgument` for a negative or huge `entries`.
template <typename T>
bool enable_image_cache(T& model, std::int64_t entries) {
  if constexpr (has_image_cache_v<T>) {
    model.set_image_cache(entries);
    return true;
  } else {
    check<InvalidArgument>(entries >= 0, "agla::enable_image_cache: entries must be >= 0; got ", entries);
    return false;
  }
}

/// Compile-time check that `T` meets the LVLM contract; the failing assertion names the member.
template <typename T>
constexpr bool check_lvlm() {
  static_assert(detail::has_load<T>::value,
                "agla LVLM contract: missing `static T load(const std::string& dir, const io::LoadOptions&)`");
  static_assert(detail::has_preprocess<T>::value,
                "agla LVLM contract: missing `at::Tensor preprocess(const at::Tensor& image) const`");
  static_assert(detail::has_prompt<T>::value,
                "agla LVLM contract: missing `Prompt prompt(const std::string&) const` or "
                "`bool has_tokenizer() const`");
  static_assert(detail::has_disturbed_prompt<T>::value,
                "agla LVLM contract: missing `Prompt disturbed_prompt(const std::string& instruction, "
                "const std::string& disturbance) const`");
  static_assert(detail::has_decode<T>::value,
                "agla LVLM contract: missing `std::string decode(const std::vector<std::int64_t>&) const`");
  static_assert(detail::has_tokens<T>::value,
                "agla LVLM contract: missing `TokenSpec tokens() const` or "
                "`std::int64_t room(const PromptBatch&) const`");
  static_assert(detail::has_begin<T>::value,
                "agla LVLM contract: missing `at::Tensor begin(const LvlmInputs&)` or `void reset()`");
  static_assert(is_plain_forward_v<T>,
                "agla LVLM contract: missing `at::Tensor operator()(const at::Tensor&, agla::View)`");
  static_assert(is_batched_forward_v<T>,
                "agla LVLM contract: missing `at::Tensor operator()(const at::Tensor&, agla::AllViews)`");
  return true;
}

}  // namespace agla
