#pragma once
/// \file
/// The models the programs load, by the family a directory's `config.json` names: the LVLMs the
/// library ships (`AnyLvlm`, driven through the LVLM contract of `agla/models/lvlm.hpp` by
/// `std::visit`) and the BLIP ITM model IPM needs. A family is one row of `model_families()` plus,
/// for an LVLM, one alternative of `AnyLvlm`.

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "agla/decode/options.hpp"
#include "agla/models/blip/captioner.hpp"
#include "agla/models/blip/itm.hpp"
#include "agla/models/instructblip/lvlm.hpp"
#include "agla/models/llava/lvlm.hpp"
#include "agla/models/lvlm.hpp"

namespace agla::tools {

/// Any LVLM the programs drive.
using AnyLvlm = std::variant<blip::BlipCaptioner, llava::LlavaLvlm, instructblip::InstructBlipLvlm>;

/// How LVLM prompts and images are shaped where a family offers a choice.
struct LvlmSettings {
  /// LLaVA: the bare llava-hf template (`USER: <image>\n... ASSISTANT:`) instead of `llava_v1` with
  /// its system prompt (the AGLA reference's `--conv-mode llava_v1`).
  bool llava_hf_template = false;
  /// LLaVA: pad to square (original LLaVA) instead of the CLIP centre crop (llava-hf, reference).
  bool pad_to_square = false;
};

/// One model family: how its config.json names it and, for an LVLM, how it loads.
struct ModelFamily {
  const char* name;          ///< as programs print it ("blip-caption", "blip-itm", "llava")
  const char* architecture;  ///< an entry of config.json's `architectures`
  const char* model_type;    ///< config.json's `model_type`, or null when it does not decide
  /// Loads an LVLM of this family; null for a model that is not an LVLM (the ITM model).
  AnyLvlm (*load)(const std::string& dir, const LvlmSettings& settings);
  std::size_t alternative;  ///< the `AnyLvlm` index the loader fills (unused without `load`)
};

/// Every family the programs know, in detection order.
const std::vector<ModelFamily>& model_families();

/// The family of the model in `dir`: the first row whose architecture `config.json` lists, else the
/// first whose `model_type` it has. Throws `agla::FormatError` for a missing config or an unknown
/// family (listing the known ones).
const ModelFamily& detect_model_family(const std::string& dir);

/// Loads the LVLM in `dir`; throws `agla::FormatError` naming `option` when `dir` holds a model
/// that is not an LVLM.
AnyLvlm load_lvlm(const std::string& dir, const LvlmSettings& settings, const std::string& option = "--lvlm");

/// Loads the BLIP ITM model in `dir`; throws `agla::FormatError` naming `option` when `dir` holds
/// another family.
blip::BlipItm load_itm(const std::string& dir, const std::string& option = "--itm");

/// The family name of a loaded LVLM.
const char* lvlm_family_name(const AnyLvlm& lvlm);

/// RGB uint8 `[H, W, 3]` (CPU) -> the LVLM's pixels `[1, 3, S, S]` float32 (CPU).
at::Tensor lvlm_pixels(const AnyLvlm& lvlm, const at::Tensor& image);

/// The image of the current item and its LVLM pixels, read again only when the path changes: the
/// questions of one image come one after another, and the same tensor lets the view builder reuse
/// IPM's encoding of it.
struct CurrentImage {
  std::string path;
  at::Tensor image;     ///< `[H, W, 3]` uint8
  at::Tensor original;  ///< `[1, 3, S, S]`: `lvlm_pixels` of it

  /// Reads `path` unless it is the current image; a missing file is refused naming `what`.
  void load(const std::string& program, const std::string& what, const std::string& image_path, const AnyLvlm& lvlm);
};

/// Whether text prompts can be tokenised (else prompts come as ids).
bool lvlm_has_tokenizer(const AnyLvlm& lvlm);

/// The LVLM's prompt (its template) around `instruction`.
Prompt lvlm_prompt(const AnyLvlm& lvlm, const std::string& instruction);

/// Text of generated ids (without a tokenizer: the ids in brackets).
std::string lvlm_decode(const AnyLvlm& lvlm, const std::vector<std::int64_t>& ids);

/// Stop ids, pad id, vocabulary size.
TokenSpec lvlm_tokens(const AnyLvlm& lvlm);

/// Words of `text` the LVLM's tokenizer can only read as `[UNK]` (WordPiece families; empty for the
/// others). Throws `agla::InvalidArgument` naming `program` and `what` when every word of `text` is
/// unknown: the model's output would not depend on the text.
std::vector<std::string> check_lvlm_text(const std::string& program, const std::string& what, const AnyLvlm& lvlm,
                                         const std::string& text);

/// Words of `text` (after LAVIS `pre_caption`, as the ITM reads it) that the ITM's tokenizer can only
/// read as `[UNK]`. Throws `agla::InvalidArgument` naming `program` and `what` when every word is
/// unknown: IPM's relevance map, ITC and mask would not depend on the text.
std::vector<std::string> check_itm_text(const std::string& program, const std::string& what, const blip::BlipItm& itm,
                                        const std::string& text);

/// The prompt of a checkpoint without a tokenizer: the language model's `ids` as given and, for
/// InstructBLIP, the Q-Former's `qformer_ids` (`[CLS] ... [SEP]`). Throws `agla::InvalidArgument`
/// naming `program` when the family needs Q-Former ids and none were given (or gets ids it cannot read).
Prompt lvlm_prompt_from_ids(const std::string& program, const AnyLvlm& lvlm, const std::vector<std::int64_t>& ids,
                            const std::vector<std::int64_t>& qformer_ids);

/// ICD's text view of `instruction`: the disturbance where the family's reference code puts it
/// (`disturbed_prompt` of each LVLM).
Prompt lvlm_disturbed_prompt(const AnyLvlm& lvlm, const std::string& instruction, const std::string& disturbance);

/// Turns PAI's attention boost on (`pai`) or off (`nullopt`) on the LLaMA-based families (LLaVA,
/// InstructBLIP); returns false for a family without it (BLIP: PAI is its logit part alone there).
bool lvlm_set_pai_attention(AnyLvlm& lvlm, const std::optional<llama::PaiAttention>& pai);

/// VACoDe's choice: runs the first step of `prompt` on `original` pixels with every candidate of
/// `candidates` as an extra view (one batched forward) and returns the L2 distances of each
/// candidate's softmax from the original's (`views::softmax_distances`, `[K]`).
std::vector<double> lvlm_view_distances(AnyLvlm& lvlm, const Prompt& prompt, const at::Tensor& original,
                                        const std::vector<ExtraView>& candidates, const std::string& program);

/// One generation of one stream: the ids generated (up to and including the stop id) from
/// `prompt` on `original` pixels `[1, 3, S, S]` and, when `options` runs extra views, `views` (one
/// per view `options` fuses). At most `max_new_tokens`, fewer when the prompt leaves less room.
/// Throws `agla::InvalidArgument` naming `program` for ids outside the vocabulary, a prompt that
/// leaves no room, or views missing.
std::vector<std::int64_t> lvlm_generate(AnyLvlm& lvlm, const Prompt& prompt, const at::Tensor& original,
                                        const std::vector<ExtraView>& views, const DecodeOptions& options,
                                        std::int64_t max_new_tokens, const at::Generator& generator,
                                        const std::string& program);

}  // namespace agla::tools
