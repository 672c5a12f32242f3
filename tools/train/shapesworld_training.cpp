#include "train/shapesworld_training.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <utility>

#include "agla/error.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/ipm/gradcam.hpp"
#include "agla/shapesworld.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/tensor.hpp"

namespace agla::train {

std::vector<std::string> vocabulary() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",",     ".",    "?",
                                "a",     "an",    "and",   "answer", "image", "in",    "is",   "no",
                                "one",   "please", "question", "the", "there", "this",  "with", "word",
                                "yes"};
  for (const char* s : sw::kShapeNames) v.push_back(s);
  for (const sw::Colour& c : sw::kColours) v.push_back(c.name);
  v.push_back("[DEC]");
  v.push_back("[ENC]");
  return v;
}

void write_vocab(const std::string& path) {
  std::ofstream out(path);
  check<InvalidArgument>(out.good(), "agla::train::write_vocab: cannot open '", path, "' for writing");
  for (const std::string& t : vocabulary()) out << t << "\n";
}

text::WordPieceTokenizer tokenizer() {
  std::string text;
  for (const std::string& t : vocabulary()) text += t + "\n";
  return text::WordPieceTokenizer::from_vocab_text(text, "agla::train::vocabulary");
}

blip::BlipConfig model_config() {
  const text::WordPieceTokenizer tok = tokenizer();
  blip::BlipConfig c;
  c.vision.hidden_size = 128;
  c.vision.intermediate_size = 512;
  c.vision.num_hidden_layers = 4;
  c.vision.num_attention_heads = 4;
  c.vision.image_size = 64;
  c.vision.patch_size = 8;
  c.text.vocab_size = static_cast<int64_t>(tok.size());
  c.text.hidden_size = 128;
  c.text.encoder_hidden_size = 128;
  c.text.intermediate_size = 512;
  c.text.num_hidden_layers = 3;
  c.text.num_attention_heads = 4;
  c.text.max_position_embeddings = 48;
  c.text.bos_token_id = tok.dec_id();
  c.text.eos_token_id = tok.sep_id();
  c.text.pad_token_id = tok.pad_id();
  c.text.sep_token_id = tok.sep_id();
  c.image_text_hidden_size = 64;
  c.projection_dim = 64;
  c.validate("agla::train::model_config");
  return c;
}

nlohmann::json config_json(const blip::BlipConfig& c, const std::string& architecture) {
  nlohmann::json j;
  j["architectures"] = {architecture};
  j["model_type"] = "blip";
  j["image_text_hidden_size"] = c.image_text_hidden_size;
  j["projection_dim"] = c.projection_dim;
  j["torch_dtype"] = "float32";
  j["text_config"] = {{"model_type", "blip_text_model"},
                      {"vocab_size", c.text.vocab_size},
                      {"hidden_size", c.text.hidden_size},
                      {"encoder_hidden_size", c.text.encoder_hidden_size},
                      {"intermediate_size", c.text.intermediate_size},
                      {"num_hidden_layers", c.text.num_hidden_layers},
                      {"num_attention_heads", c.text.num_attention_heads},
                      {"max_position_embeddings", c.text.max_position_embeddings},
                      {"layer_norm_eps", c.text.layer_norm_eps},
                      {"hidden_act", c.text.hidden_act},
                      {"bos_token_id", c.text.bos_token_id},
                      {"eos_token_id", c.text.eos_token_id},
                      {"pad_token_id", c.text.pad_token_id},
                      {"sep_token_id", c.text.sep_token_id},
                      {"is_decoder", true}};
  j["vision_config"] = {{"model_type", "blip_vision_model"},
                        {"hidden_size", c.vision.hidden_size},
                        {"intermediate_size", c.vision.intermediate_size},
                        {"num_hidden_layers", c.vision.num_hidden_layers},
                        {"num_attention_heads", c.vision.num_attention_heads},
                        {"num_channels", c.vision.num_channels},
                        {"image_size", c.vision.image_size},
                        {"patch_size", c.vision.patch_size},
                        {"layer_norm_eps", c.vision.layer_norm_eps},
                        {"hidden_act", c.vision.hidden_act}};
  return j;
}

io::StateDict state_dict(const torch::nn::Module& module, const std::string& prefix) {
  io::StateDict out;
  for (const auto& p : module.named_parameters(true)) out[prefix + p.key()] = p.value().detach().to(at::kFloat).clone();
  for (const auto& b : module.named_buffers(true)) out[prefix + b.key()] = b.value().detach().clone();
  return out;
}

void write_model_dir(const std::string& dir, const torch::nn::Module& module, const blip::BlipConfig& c,
                     const std::string& architecture) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << config_json(c, architecture).dump(2) << "\n";
  io::write_safetensors(dir + "/model.safetensors", state_dict(module), {{"format", "pt"}});
  write_vocab(dir + "/vocab.txt");
}

namespace {

/// Copies every entry of `source` whose name (after stripping `from`) exists in `target` under `to`.
/// Returns the number of tensors copied.
int copy_prefixed(torch::nn::Module& target, const std::string& to, const io::StateDict& source,
                  const std::string& from) {
  torch::NoGradGuard no_grad;
  auto params = target.named_parameters(true);
  int copied = 0;
  for (const auto& [name, tensor] : source) {
    if (name.rfind(from, 0) != 0) continue;
    const std::string key = to + name.substr(from.size());
    if (at::Tensor* p = params.find(key)) {
      check<FormatError>(p->sizes() == tensor.sizes(), "agla::train::copy_prefixed: '", key, "' has shape ",
                         p->sizes(), " but the source has ", tensor.sizes());
      p->copy_(tensor);
      ++copied;
    }
  }
  return copied;
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

}  // namespace

sw::WorldOptions world() { return sw::WorldOptions{}; }

at::Tensor pixels(const std::vector<sw::Scene>& scenes) {
  const at::Tensor mean = at::tensor(std::vector<float>(io::kClipMean.begin(), io::kClipMean.end())).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor(std::vector<float>(io::kClipStd.begin(), io::kClipStd.end())).view({1, 3, 1, 1});
  return (sw::image_batch(scenes) - mean) / std;
}

namespace {

/// Scene seeds of one stream are `scene_seed(stream, index)`; streams of the stages and of the
/// evaluation are derived from the run seed with distinct salts so they never overlap.
std::uint64_t stream(std::uint64_t seed, std::uint64_t salt) { return sw::splitmix64(seed ^ sw::splitmix64(salt)); }

/// The `batch` scenes of training step `step` of `stream_seed`.
std::vector<sw::Scene> scenes_for_step(std::uint64_t stream_seed, int64_t step, int64_t batch,
                                       sw::Distribution distribution) {
  std::vector<sw::Scene> out;
  out.reserve(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) {
    out.push_back(sw::generate_scene(sw::scene_seed(stream_seed, static_cast<std::uint64_t>(step * batch + i)),
                                     world(), distribution));
  }
  return out;
}

/// A text's claims: each names a class and optionally a colour (-1: any colour).
struct Claim {
  int shape = 0;
  int colour = -1;
};

/// True when every claim is met by an object of `scene`.
bool satisfies(const sw::Scene& scene, const std::vector<Claim>& claims) {
  return std::all_of(claims.begin(), claims.end(), [&](const Claim& c) {
    return std::any_of(scene.objects.begin(), scene.objects.end(),
                       [&](const sw::SceneObject& o) { return o.shape == c.shape && (c.colour < 0 || o.colour == c.colour); });
  });
}

/// The ITM text styles.
enum class TextStyle { Question, QuestionPope, Phrases };

/// English for `claims` in `style`: "Is there a red star in the image?" (one claim; POPE's suffix with
/// `QuestionPope`) or "a red star and a ring" (a caption-like list).
std::string render_text(const std::vector<Claim>& claims, TextStyle style) {
  auto phrase = [](const Claim& c) {
    const std::string name = sw::shape_name(c.shape);
    const std::string head = c.colour >= 0 ? std::string(sw::kColours[static_cast<size_t>(c.colour)].name) : name;
    return std::string(sw::article(head)) + " " + (c.colour >= 0 ? head + " " + name : name);
  };
  if (style != TextStyle::Phrases) {
    std::string q = "Is there " + phrase(claims.at(0)) + " in the image?";
    return style == TextStyle::QuestionPope ? q + kPopeSuffix : q;
  }
  std::string out;
  for (size_t i = 0; i < claims.size(); ++i) {
    if (i > 0) out += i + 1 == claims.size() ? " and " : ", ";
    out += phrase(claims[i]);
  }
  return out;
}

/// One ITM training text: its claims, its style and the mined-negative counterpart.
struct ItmText {
  std::vector<Claim> claims;
  TextStyle style = TextStyle::Question;
  std::string text;
};

/// A positive text for `scene` (a question about a present object, or a left-to-right subset of its
/// objects as phrases; colours named half of the time) and a minimally edited negative (one claim's
/// class swapped for an absent class, or its colour for another colour of that class that is absent).
std::pair<ItmText, ItmText> itm_texts(const sw::Scene& scene, sw::Rng& rng) {
  ItmText pos;
  const int kind = static_cast<int>(rng.below(3));
  pos.style = kind == 0 ? TextStyle::Question : kind == 1 ? TextStyle::QuestionPope : TextStyle::Phrases;
  const bool colours = rng.chance(0.5);
  std::vector<size_t> chosen;
  if (pos.style != TextStyle::Phrases) {
    chosen.push_back(static_cast<size_t>(rng.below(scene.objects.size())));
  } else {
    for (size_t i = 0; i < scene.objects.size(); ++i)
      if (rng.chance(0.6)) chosen.push_back(i);
    if (chosen.empty()) chosen.push_back(static_cast<size_t>(rng.below(scene.objects.size())));
  }
  for (size_t i : chosen) pos.claims.push_back({scene.objects[i].shape, colours ? scene.objects[i].colour : -1});
  pos.text = render_text(pos.claims, pos.style);

  ItmText neg = pos;
  const size_t k = static_cast<size_t>(rng.below(neg.claims.size()));
  std::vector<int> absent;
  for (int c = 0; c < sw::kNumShapes; ++c)
    if (!scene.has(c)) absent.push_back(c);
  const bool swap_colour = neg.claims[k].colour >= 0 && (absent.empty() || rng.chance(0.3));
  if (swap_colour) {
    std::vector<int> others;
    for (int col = 0; col < sw::kNumColours; ++col) {
      Claim c{neg.claims[k].shape, col};
      if (!satisfies(scene, {c})) others.push_back(col);
    }
    neg.claims[k].colour = others[static_cast<size_t>(rng.below(others.size()))];
  } else {
    neg.claims[k].shape = absent[static_cast<size_t>(rng.below(absent.size()))];
  }
  neg.text = render_text(neg.claims, neg.style);
  return {pos, neg};
}

/// Token ids of `texts` after BLIP's caption pre-processing (what `BlipItm::encode_text` feeds),
/// right-padded: ITC ids (`[CLS]` first), ITM ids (`[ENC]` first) and the attention mask, `[P, L]` int64.
blip::TextBatch encode_itm(const text::WordPieceTokenizer& tok, const std::vector<std::string>& texts) {
  std::vector<std::vector<int64_t>> ids;
  size_t longest = 0;
  for (const std::string& t : texts) {
    ids.push_back(tok.encode(text::pre_caption(t), blip::kItmMaxTokens));
    longest = std::max(longest, ids.back().size());
  }
  const int64_t p = static_cast<int64_t>(texts.size()), l = static_cast<int64_t>(longest);
  at::Tensor input = at::full({p, l}, tok.pad_id(), at::kLong);
  at::Tensor mask = at::zeros({p, l}, at::kLong);
  auto ia = input.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < p; ++i)
    for (size_t j = 0; j < ids[static_cast<size_t>(i)].size(); ++j) {
      ia[i][static_cast<int64_t>(j)] = ids[static_cast<size_t>(i)][j];
      ma[i][static_cast<int64_t>(j)] = 1;
    }
  at::Tensor itm = input.clone();
  itm.select(1, 0).fill_(tok.enc_id());
  return {input, itm, mask};
}

/// Decoder sequences `[DEC] prompt... target... [SEP]` (right-padded with `[PAD]`) and their labels
/// (the next token where it is part of the target, else -100), both `[B, L]` int64. The prompt is
/// tokenised as `BlipCaptioner::prompt_ids` does (no pre-processing).
std::pair<at::Tensor, at::Tensor> encode_lm(const text::WordPieceTokenizer& tok,
                                            const std::vector<std::pair<std::string, std::string>>& items) {
  std::vector<std::vector<int64_t>> seqs;
  std::vector<size_t> prompt_len;
  size_t longest = 0;
  for (const auto& [prompt, target] : items) {
    std::vector<int64_t> s = {tok.dec_id()};
    for (int64_t id : tok.tokens_to_ids(tok.tokenize(prompt))) s.push_back(id);
    prompt_len.push_back(s.size());
    for (int64_t id : tok.tokens_to_ids(tok.tokenize(target))) s.push_back(id);
    s.push_back(tok.sep_id());
    longest = std::max(longest, s.size());
    seqs.push_back(std::move(s));
  }
  const int64_t b = static_cast<int64_t>(items.size()), l = static_cast<int64_t>(longest);
  at::Tensor ids = at::full({b, l}, tok.pad_id(), at::kLong);
  at::Tensor labels = at::full({b, l}, -100, at::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto la = labels.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& s = seqs[static_cast<size_t>(i)];
    for (size_t j = 0; j < s.size(); ++j) ia[i][static_cast<int64_t>(j)] = s[j];
    // Position j predicts token j + 1; targets start at the first token after the prompt.
    for (size_t j = prompt_len[static_cast<size_t>(i)] - 1; j + 1 < s.size(); ++j) la[i][static_cast<int64_t>(j)] = s[j + 1];
  }
  return {ids, labels};
}

// ---------------------------------------------------------------------------------------------
// Models with their training heads
// ---------------------------------------------------------------------------------------------

/// Learning rate at `step` (0-based): linear warm-up to `lr`, then cosine decay to `0.1 * lr`.
double learning_rate(const StageOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double t = static_cast<double>(step - o.warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  return o.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, t))));
}

/// Saves model, optimiser and step atomically (write then rename) to `dir/checkpoint.*`. The random
/// state needs no file: scenes, texts and mined negatives of step s are drawn from generators seeded
/// with `(seed, s)`, so the step number is the whole random state.
void save_checkpoint(const std::string& dir, torch::nn::Module& model, torch::optim::Optimizer& opt,
                     int64_t step) {
  std::filesystem::create_directories(dir);
  torch::serialize::OutputArchive m;
  model.save(m);
  m.save_to(dir + "/checkpoint.model.tmp");
  torch::serialize::OutputArchive o;
  opt.save(o);
  o.save_to(dir + "/checkpoint.optim.tmp");
  std::ofstream(dir + "/checkpoint.step.tmp") << step << "\n";
  std::filesystem::rename(dir + "/checkpoint.model.tmp", dir + "/checkpoint.model");
  std::filesystem::rename(dir + "/checkpoint.optim.tmp", dir + "/checkpoint.optim");
  std::filesystem::rename(dir + "/checkpoint.step.tmp", dir + "/checkpoint.step");
}

/// Loads `dir/checkpoint.*` when present; returns the step to continue from (0 when none).
int64_t load_checkpoint(const std::string& dir, torch::nn::Module& model, torch::optim::Optimizer& opt) {
  if (dir.empty() || !std::filesystem::exists(dir + "/checkpoint.step")) return 0;
  int64_t step = 0;
  std::ifstream(dir + "/checkpoint.step") >> step;
  torch::serialize::InputArchive m;
  m.load_from(dir + "/checkpoint.model");
  model.load(m);
  torch::serialize::InputArchive o;
  o.load_from(dir + "/checkpoint.optim");
  opt.load(o);
  return step;
}

/// Parameters of `module` whose name starts with `prefix` (or, with `invert`, does not).
std::vector<at::Tensor> params_with_prefix(const torch::nn::Module& module, const std::string& prefix,
                                           bool invert) {
  std::vector<at::Tensor> out;
  for (const auto& p : module.named_parameters(true))
    if ((p.key().rfind(prefix, 0) == 0) != invert) out.push_back(p.value());
  return out;
}

/// One loss line: per-step losses averaged since the last line.
struct LossLog {
  std::map<std::string, double> sums;
  int64_t count = 0;
  void add(const std::map<std::string, double>& losses) {
    for (const auto& [k, v] : losses) sums[k] += v;
    ++count;
  }
  std::string flush() {
    std::string out;
    for (const auto& [k, v] : sums) {
      char buf[64];
      std::snprintf(buf, sizeof buf, " %s %.4f", k.c_str(), v / static_cast<double>(std::max<int64_t>(1, count)));
      out += buf;
    }
    sums.clear();
    count = 0;
    return out;
  }
};

/// The generic loop: `step_fn(step)` returns the named losses (the first is backpropagated as the
/// total). Resumes from `o.work`, checkpoints every `o.checkpoint_every` steps and at the end.
/// Returns the per-step total losses of the steps run in this call.
std::vector<double> run_loop(const StageOptions& o, torch::nn::Module& model, torch::optim::Optimizer& opt,
                             const std::vector<double>& group_lr_scale,
                             const std::function<std::map<std::string, at::Tensor>(int64_t)>& step_fn) {
  int64_t step = o.work.empty() ? 0 : load_checkpoint(o.work, model, opt);
  std::ostream& out = o.log != nullptr ? *o.log : std::cout;
  if (step > 0 && !o.quiet) out << "[" << o.stage << "] resumed at step " << step << std::endl;
  std::vector<double> totals;
  LossLog log;
  const auto start = std::chrono::steady_clock::now();
  const int64_t first = step;
  model.train();
  const int64_t last = o.stop_at >= 0 ? std::min(o.steps, o.stop_at) : o.steps;
  for (; step < last; ++step) {
    const double lr = learning_rate(o, step);
    for (size_t g = 0; g < opt.param_groups().size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(opt.param_groups()[g].options()).lr(lr * group_lr_scale[g]);
    const std::map<std::string, at::Tensor> losses = step_fn(step);
    const at::Tensor total = losses.at("loss");
    opt.zero_grad();
    total.backward();
    torch::nn::utils::clip_grad_norm_(model.parameters(), 1.0);
    opt.step();
    std::map<std::string, double> values;
    for (const auto& [k, v] : losses) values[k] = v.item<double>();
    totals.push_back(values["loss"]);
    log.add(values);
    if (!o.quiet && ((step + 1) % o.log_every == 0 || step + 1 == o.steps)) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      char line[256];
      std::snprintf(line, sizeof line, "[%s] step %lld/%lld lr %.2e", o.stage.c_str(), static_cast<long long>(step + 1),
                    static_cast<long long>(o.steps), lr);
      char rate[64];
      std::snprintf(rate, sizeof rate, " (%.3f s/step)", secs / static_cast<double>(step + 1 - first));
      out << line << log.flush() << rate << std::endl;
    }
    if (!o.work.empty() && ((step + 1) % o.checkpoint_every == 0 || step + 1 == last))
      save_checkpoint(o.work, model, opt, step + 1);
  }
  model.eval();
  return totals;
}

// ---------------------------------------------------------------------------------------------
// Stage (a): dense vision pre-training
// ---------------------------------------------------------------------------------------------

/// Patch pixels a class must cover for the per-patch target to be 1 (4 of the 64 pixels).
constexpr int kPatchMinPixels = 4;

/// Per-patch presence targets `[B, g*g, C]` float of `scenes` on a `grid x grid` grid.
at::Tensor patch_targets(const std::vector<sw::Scene>& scenes, int grid) {
  std::vector<float> out;
  out.reserve(scenes.size() * static_cast<size_t>(grid * grid * sw::kNumShapes));
  for (const sw::Scene& s : scenes)
    for (int count : sw::patch_class_pixels(s, grid)) out.push_back(count >= kPatchMinPixels ? 1.0f : 0.0f);
  return at::tensor(out).view({static_cast<int64_t>(scenes.size()), grid * grid, sw::kNumShapes});
}

/// Multi-hot presence `[B, C]` float of `scenes`.
at::Tensor presence_targets(const std::vector<sw::Scene>& scenes) {
  std::vector<at::Tensor> rows;
  for (const sw::Scene& s : scenes) rows.push_back(sw::presence_tensor(s));
  return at::stack(rows);
}

/// The class covering most of each patch (at least `kPatchMinPixels` pixels), or `kNumShapes` for
/// background: `[B, g*g]` int64.
at::Tensor dominant_targets(const std::vector<sw::Scene>& scenes, int grid) {
  std::vector<int64_t> out;
  for (const sw::Scene& s : scenes) {
    const std::vector<int> counts = sw::patch_class_pixels(s, grid);
    for (int p = 0; p < grid * grid; ++p) {
      int best = sw::kNumShapes, most = kPatchMinPixels - 1;
      for (int c = 0; c < sw::kNumShapes; ++c) {
        const int n = counts[static_cast<size_t>(p * sw::kNumShapes + c)];
        if (n > most) {
          most = n;
          best = c;
        }
      }
      out.push_back(best);
    }
  }
  return at::tensor(out, at::kLong).view({static_cast<int64_t>(scenes.size()), grid * grid});
}

/// Encoder losses of one batch: BCE of the CLS presence head and of the per-patch presence head, and
/// (with `patch_class_loss`) a 9-way cross-entropy of each patch's dominant class (rare positives give
/// the per-patch BCE weak gradients; the softmax makes every object patch a class decision).
std::map<std::string, at::Tensor> encoder_losses(EncoderNet& net, const std::vector<sw::Scene>& scenes,
                                                 bool patch_class_loss = true) {
  const int grid = static_cast<int>(net->vision_model->config().image_size / net->vision_model->config().patch_size);
  const at::Tensor h = net->vision_model->forward(pixels(scenes));
  const at::Tensor cls = net->presence_head->forward(h.select(1, 0));
  const at::Tensor patch = net->patch_head->forward(h.narrow(1, 1, h.size(1) - 1));
  const at::Tensor l_cls = torch::binary_cross_entropy_with_logits(cls, presence_targets(scenes));
  const at::Tensor l_patch = torch::binary_cross_entropy_with_logits(patch, patch_targets(scenes, grid));
  if (!patch_class_loss) return {{"loss", l_cls + l_patch}, {"cls", l_cls.detach()}, {"patch", l_patch.detach()}};
  const at::Tensor dominant = net->dominant_head->forward(h.narrow(1, 1, h.size(1) - 1));
  const at::Tensor l_dom = torch::nn::functional::cross_entropy(dominant.reshape({-1, sw::kNumShapes + 1}),
                                                                dominant_targets(scenes, grid).reshape({-1}));
  return {{"loss", l_cls + l_patch + l_dom},
          {"cls", l_cls.detach()},
          {"patch", l_patch.detach()},
          {"dominant", l_dom.detach()}};
}

}  // namespace

EncoderReport evaluate_encoder(EncoderNet& net, std::uint64_t seed, int n) {
  torch::NoGradGuard no_grad;
  net->eval();
  const int grid = static_cast<int>(net->vision_model->config().image_size / net->vision_model->config().patch_size);
  EncoderReport r;
  double correct = 0, correct_max = 0, exact = 0, patch_correct = 0, patch_total = 0;
  const int chunk = 50;
  for (int start = 0; start < n; start += chunk) {
    const int b = std::min(chunk, n - start);
    std::vector<sw::Scene> scenes;
    for (int i = 0; i < b; ++i)
      scenes.push_back(sw::generate_scene(sw::scene_seed(stream(seed, 0xE7A1), static_cast<std::uint64_t>(start + i)),
                                          world(), sw::Distribution::Unbiased));
    const at::Tensor h = net->vision_model->forward(pixels(scenes));
    const at::Tensor pred = net->presence_head->forward(h.select(1, 0)) > 0;
    const at::Tensor patch = net->patch_head->forward(h.narrow(1, 1, h.size(1) - 1)) > 0;
    const at::Tensor target = presence_targets(scenes) > 0.5;
    const at::Tensor ptarget = patch_targets(scenes, grid) > 0.5;
    correct += (pred == target).sum().item<double>();
    correct_max += (std::get<0>(patch.max(1)) == target).sum().item<double>();
    exact += (pred == target).all(1).sum().item<double>();
    patch_correct += (patch == ptarget).sum().item<double>();
    patch_total += static_cast<double>(ptarget.numel());
  }
  r.multilabel = correct / (n * sw::kNumShapes);
  r.multilabel_patchmax = correct_max / (n * sw::kNumShapes);
  r.exact = exact / n;
  r.patch = patch_correct / patch_total;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Stage (b): ITM + ITC with mined hard negatives
// ---------------------------------------------------------------------------------------------

namespace {

/// L2-normalise the last dimension (`torch.nn.functional.normalize`).
at::Tensor l2n(const at::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }

/// ITM + ITC losses of one batch. Each scene gives a positive text and a minimally edited negative.
/// ITC: image CLS vs text CLS projections, soft targets over every text a scene satisfies (texts are
/// short, so many scenes match one text). ITM (BLIP): the positive pairs, for each image a negative
/// text and for each text a negative image sampled by ITC similarity among the non-matching ones,
/// and the edited negatives.
std::map<std::string, at::Tensor> itm_losses(ItmNet& net, const text::WordPieceTokenizer& tok,
                                             const std::vector<sw::Scene>& scenes, std::uint64_t text_seed,
                                             at::Generator& gen) {
  const int64_t b = static_cast<int64_t>(scenes.size());
  std::vector<ItmText> pos, neg;
  for (int64_t i = 0; i < b; ++i) {
    sw::Rng rng(sw::scene_seed(text_seed, static_cast<std::uint64_t>(i)));
    auto [p, n] = itm_texts(scenes[static_cast<size_t>(i)], rng);
    pos.push_back(p);
    neg.push_back(n);
  }
  std::vector<float> match(static_cast<size_t>(b * b));
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < b; ++j)
      match[static_cast<size_t>(i * b + j)] = satisfies(scenes[static_cast<size_t>(i)], pos[static_cast<size_t>(j)].claims) ? 1.f : 0.f;
  const at::Tensor m = at::tensor(match).view({b, b});  // [image, text]

  std::vector<std::string> texts;
  for (const auto& p : pos) texts.push_back(p.text);
  for (const auto& n : neg) texts.push_back(n.text);
  const blip::TextBatch tb = encode_itm(tok, texts);

  auto& model = net->model;
  const at::Tensor image = model->vision_model->forward(pixels(scenes));
  blip::TextRun text_only;
  text_only.attention_mask = tb.attention_mask.narrow(0, 0, b);
  const at::Tensor text = model->text_encoder->forward(tb.input_ids.narrow(0, 0, b), text_only);
  const at::Tensor img_feat = l2n(model->vision_proj->forward(image.select(1, 0)));
  const at::Tensor txt_feat = l2n(model->text_proj->forward(text.select(1, 0)));
  const at::Tensor temp = net->temp.clamp(0.001, 0.5);
  const at::Tensor sim_i2t = at::matmul(img_feat, txt_feat.t()) / temp;
  const at::Tensor tgt_i2t = m / m.sum(1, true);
  const at::Tensor tgt_t2i = m.t() / m.t().sum(1, true);
  const at::Tensor l_itc = (-(at::log_softmax(sim_i2t, 1) * tgt_i2t).sum(1).mean() -
                            (at::log_softmax(sim_i2t.t(), 1) * tgt_t2i).sum(1).mean()) / 2;

  // Mined negatives: sample by softmax similarity among non-matching pairs; fall back to the edited
  // negative text where a row has none.
  at::Tensor neg_text_idx, neg_image_idx;
  {
    torch::NoGradGuard no_grad;
    const at::Tensor w_i2t = (at::softmax(sim_i2t, 1) + 1e-6) * (1 - m);
    const at::Tensor w_t2i = (at::softmax(sim_i2t.t(), 1) + 1e-6) * (1 - m.t());
    const at::Tensor has_i2t = w_i2t.sum(1) > 0, has_t2i = w_t2i.sum(1) > 0;
    neg_text_idx = at::where(has_i2t, at::multinomial(w_i2t + (~has_i2t).unsqueeze(1).to(at::kFloat), 1, false, gen).squeeze(1),
                             at::arange(b, at::kLong) + b);  // index into texts: b.. = edited negatives
    neg_image_idx = at::where(has_t2i, at::multinomial(w_t2i + (~has_t2i).unsqueeze(1).to(at::kFloat), 1, false, gen).squeeze(1),
                              at::arange(b, at::kLong));
  }
  const at::Tensor ar = at::arange(b, at::kLong);
  // Rows: positives, (image i, mined text), (mined image, text j), (image i, edited negative i).
  const at::Tensor img_rows = at::cat({ar, ar, neg_image_idx, ar});
  const at::Tensor txt_rows = at::cat({ar, neg_text_idx, ar, ar + b});
  std::vector<float> labels_v(static_cast<size_t>(4 * b), 0.f);
  // A text mined for image i may still match it only via the fallback (edited negatives never match).
  for (int64_t i = 0; i < b; ++i) labels_v[static_cast<size_t>(i)] = 1.f;
  const at::Tensor labels = at::tensor(labels_v).to(at::kLong);
  blip::TextRun run;
  run.attention_mask = tb.attention_mask.index_select(0, txt_rows);
  run.encoder_hidden_states = image.index_select(0, img_rows);
  const at::Tensor h = model->text_encoder->forward(tb.itm_input_ids.index_select(0, txt_rows), run);
  const at::Tensor logits = model->itm_head->forward(h.select(1, 0));
  const at::Tensor l_itm = torch::nn::functional::cross_entropy(logits, labels);
  const at::Tensor acc = (logits.argmax(1) == labels).to(at::kFloat).mean();
  return {{"loss", l_itm + l_itc}, {"itm", l_itm.detach()}, {"itc", l_itc.detach()}, {"itm_acc", acc.detach()}};
}

/// Area under the ROC curve of `scores` for `labels` (ties count half).
double auc(const std::vector<double>& scores, const std::vector<int>& labels) {
  double pos = 0, neg = 0, wins = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!labels[i]) continue;
    ++pos;
    for (size_t j = 0; j < scores.size(); ++j) {
      if (labels[j]) continue;
      wins += scores[i] > scores[j] ? 1.0 : scores[i] == scores[j] ? 0.5 : 0.0;
    }
  }
  for (int l : labels) neg += l ? 0 : 1;
  return pos > 0 && neg > 0 ? wins / (pos * neg) : 0.0;
}

}  // namespace

ItmReport evaluate_itm(const blip::BlipItm& itm, std::uint64_t seed, int scenes_n) {
  ItmReport r;
  std::vector<double> scores, scores_p;
  std::vector<int> labels, labels_p;
  double itc_m = 0, itc_u = 0;
  int n_m = 0, n_u = 0;
  const int64_t layers = itm.num_text_layers();
  r.gradcam_ratio.assign(static_cast<size_t>(layers), 0.0);
  int cams = 0;
  const sw::WorldOptions w = world();
  for (int s = 0; s < scenes_n; ++s) {
    const sw::Scene scene = sw::generate_scene(sw::scene_seed(stream(seed, 0x17A0), static_cast<std::uint64_t>(s)), w,
                                               sw::Distribution::Unbiased);
    const at::Tensor embeds = itm.encode_image(pixels({scene}));
    std::vector<std::string> prompts;
    std::vector<int> shapes;
    for (int c = 0; c < sw::kNumShapes; ++c) {
      prompts.push_back(sw::question(c));
      shapes.push_back(c);
    }
    const blip::TextBatch tb = itm.encode_text(prompts);
    const at::Tensor p = at::softmax(itm.itm_logits(embeds, tb.itm_input_ids, tb.attention_mask), 1).select(1, 1);
    const at::Tensor itc = itm.itc_similarity(embeds, tb.input_ids, tb.attention_mask).squeeze(0);
    for (int c = 0; c < sw::kNumShapes; ++c) {
      const bool present = scene.has(c);
      scores.push_back(p[c].item<double>());
      labels.push_back(present ? 1 : 0);
      const int partner = sw::partner_of(c, w);
      if (present || (partner >= 0 && scene.has(partner))) {
        scores_p.push_back(p[c].item<double>());
        labels_p.push_back(present ? 1 : 0);
      }
      (present ? itc_m : itc_u) += itc[c].item<double>();
      ++(present ? n_m : n_u);
    }
    // GradCAM for every present object (the first of its class) at every layer.
    const int side = static_cast<int>(itm.patch_grid());
    const int px = scene.width / side;
    for (size_t k = 0; k < scene.objects.size(); ++k) {
      const sw::SceneObject& o = scene.objects[k];
      const blip::TextBatch one = itm.encode_text({sw::question(o.shape)});
      const double area_share = static_cast<double>((o.box.x1 - o.box.x0) * (o.box.y1 - o.box.y0)) /
                                static_cast<double>(scene.width * scene.height);
      for (int64_t layer = 0; layer < layers; ++layer) {
        const blip::ItmScore score = itm.score_itm(embeds, one.itm_input_ids, one.attention_mask, layer);
        const at::Tensor grad = torch::autograd::grad({score.logits.select(1, 1).sum()}, {score.attention})[0];
        const at::Tensor map = ipm::gradcam(score.attention.detach(), grad, one.attention_mask).average[0];
        // Spread each patch's relevance evenly over its pixels, then sum the pixels inside the box.
        const at::Tensor pixel_map = map.repeat_interleave(px, 0).repeat_interleave(px, 1);
        const double total = pixel_map.sum().item<double>();
        const double inside = pixel_map.narrow(0, o.box.y0, o.box.y1 - o.box.y0)
                                  .narrow(1, o.box.x0, o.box.x1 - o.box.x0)
                                  .sum()
                                  .item<double>();
        r.gradcam_ratio[static_cast<size_t>(layer)] += total > 0 ? (inside / total) / area_share : 0.0;
      }
      ++cams;
    }
  }
  for (double& g : r.gradcam_ratio) g /= std::max(1, cams);
  r.auc = auc(scores, labels);
  r.auc_partner = auc(scores_p, labels_p);
  r.itc_matched = itc_m / std::max(1, n_m);
  r.itc_unmatched = itc_u / std::max(1, n_u);
  r.prompts = static_cast<int>(scores.size());
  return r;
}

// ---------------------------------------------------------------------------------------------
// Stage (c): captioning / VQA language model
// ---------------------------------------------------------------------------------------------

namespace {

/// LM losses of one batch: per scene its caption (no prompt) and two yes/no questions (POPE's suffix
/// half of the time) answered "yes"/"no". The caption and answer losses are averaged separately and
/// summed, so the one-token answers weigh as much as the captions.
std::map<std::string, at::Tensor> lvlm_losses(blip::BlipCaptionModel& model, const text::WordPieceTokenizer& tok,
                                              const std::vector<sw::Scene>& scenes, std::uint64_t text_seed) {
  const int64_t b = static_cast<int64_t>(scenes.size());
  std::vector<std::pair<std::string, std::string>> caps, qas;
  for (int64_t i = 0; i < b; ++i) {
    sw::Rng rng(sw::scene_seed(text_seed, static_cast<std::uint64_t>(i)));
    caps.emplace_back("", sw::caption(scenes[static_cast<size_t>(i)]));
    for (int k = 0; k < 2; ++k) {
      const sw::YesNoQuestion q = sw::sample_question(scenes[static_cast<size_t>(i)], rng);
      qas.emplace_back(rng.chance(0.5) ? q.text + kPopeSuffix : q.text, q.answer ? "yes" : "no");
    }
  }
  const at::Tensor image = model->vision_model->forward(pixels(scenes));
  auto lm = [&](const std::vector<std::pair<std::string, std::string>>& items, const at::Tensor& img) {
    const auto [ids, labels] = encode_lm(tok, items);
    const at::Tensor logits = model->text_decoder->forward(ids, img);
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(2)}), labels.reshape({-1}),
                                                torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  };
  const at::Tensor l_cap = lm(caps, image);
  const at::Tensor l_qa = lm(qas, image.repeat_interleave(2, 0));
  return {{"loss", l_cap + l_qa}, {"caption", l_cap.detach()}, {"answer", l_qa.detach()}};
}

/// `[1, T]` int64 prompt ids of `text` for the captioner.
at::Tensor prompt_tensor(const blip::BlipCaptioner& cap, const std::string& text) {
  const std::vector<int64_t> ids = cap.prompt(text).ids;
  return at::tensor(at::ArrayRef<int64_t>(ids), at::kLong).view({1, -1});
}

}  // namespace

std::string greedy_caption(blip::BlipCaptioner& cap, const sw::Scene& scene, int max_tokens) {
  const int64_t stop = cap.tokens().stop_ids.front();
  at::Tensor step = cap.begin(LvlmInputs::images(prompt_tensor(cap, ""), pixels({scene})));
  std::vector<int64_t> ids;
  for (int t = 0; t < max_tokens; ++t) {
    const int64_t next = cap(step, View::Original).argmax(1).item<int64_t>();
    if (next == stop) break;
    ids.push_back(next);
    step = at::full({1, 1}, next, at::kLong);
  }
  return cap.decode(ids);
}

std::vector<std::string> greedy_answers(blip::BlipCaptioner& cap, const std::vector<sw::Scene>& scenes,
                                        const std::vector<std::string>& prompts) {
  std::vector<std::string> out;
  for (size_t i = 0; i < scenes.size(); ++i) {
    const at::Tensor prompt = cap.begin(LvlmInputs::images(prompt_tensor(cap, prompts[i]), pixels({scenes[i]})));
    const at::Tensor logits = cap(prompt, View::Original);
    out.push_back(cap.tokenizer().id_to_token(logits.argmax(1).item<int64_t>()));
  }
  return out;
}

LvlmReport evaluate_lvlm(blip::BlipCaptioner& cap, std::uint64_t seed, int questions) {
  sw::EvalOptions eo;
  eo.world = world();
  eo.seed = seed;
  eo.questions_per_split = questions;
  eo.captions = std::max(2, questions / 5);
  const sw::EvalSet set = sw::build_eval_set(eo);
  std::map<std::string, const sw::Layout*> layouts;
  for (const auto& im : set.images) layouts[im.file] = &im.layout;
  LvlmReport r;
  auto run = [&](const std::vector<sw::EvalQuestion>& qs, double& acc, double* yes_ratio) {
    std::vector<sw::Scene> scenes;
    std::vector<std::string> prompts;
    for (const auto& q : qs) {
      scenes.push_back(sw::render(*layouts.at(q.image)));
      prompts.push_back(sw::question(q.shape) + kPopeSuffix);
    }
    const std::vector<std::string> answers = greedy_answers(cap, scenes, prompts);
    int correct = 0, yes = 0;
    for (size_t i = 0; i < qs.size(); ++i) {
      correct += (answers[i] == "yes") == qs[i].label && (answers[i] == "yes" || answers[i] == "no");
      yes += answers[i] == "yes";
    }
    acc = static_cast<double>(correct) / static_cast<double>(qs.size());
    if (yes_ratio) *yes_ratio = static_cast<double>(yes) / static_cast<double>(qs.size());
    return answers;
  };
  run(set.random, r.random_accuracy, &r.random_yes_ratio);
  r.random_n = static_cast<int>(set.random.size());
  run(set.adversarial, r.adversarial_accuracy, nullptr);
  double dummy = 0;
  const std::vector<std::string> ca = run(set.contrast, dummy, nullptr);
  int fp_p = 0, n_p = 0, fp_a = 0, n_a = 0;
  for (size_t i = 0; i < set.contrast.size(); ++i) {
    const bool yes = ca[i] == "yes";
    if (set.contrast[i].partner_present) {
      fp_p += yes;
      ++n_p;
    } else {
      fp_a += yes;
      ++n_a;
    }
  }
  r.contrast_fp_partner = static_cast<double>(fp_p) / std::max(1, n_p);
  r.contrast_fp_alone = static_cast<double>(fp_a) / std::max(1, n_a);
  r.contrast_n = static_cast<int>(set.contrast.size());
  int mentions = 0, hallucinated = 0, bad_captions = 0, present_total = 0, recalled = 0;
  for (const sw::EvalCaption& c : set.captions) {
    const std::string text = greedy_caption(cap, sw::render(*layouts.at(c.image)));
    if (r.caption_example.empty()) r.caption_example = "'" + text + "' (truth: '" + c.caption + "')";
    std::vector<bool> said(sw::kNumShapes, false), truth(sw::kNumShapes, false);
    for (const std::string& word : cap.tokenizer().tokenize(text))
      for (int k = 0; k < sw::kNumShapes; ++k)
        if (word == sw::kShapeNames[static_cast<size_t>(k)]) said[static_cast<size_t>(k)] = true;
    for (int k : c.objects) truth[static_cast<size_t>(k)] = true;
    bool bad = false;
    for (int k = 0; k < sw::kNumShapes; ++k) {
      const size_t u = static_cast<size_t>(k);
      mentions += said[u];
      hallucinated += said[u] && !truth[u];
      bad = bad || (said[u] && !truth[u]);
      present_total += truth[u];
      recalled += said[u] && truth[u];
    }
    bad_captions += bad;
  }
  r.captions_n = static_cast<int>(set.captions.size());
  r.caption_chair_i = static_cast<double>(hallucinated) / std::max(1, mentions);
  r.caption_chair_s = static_cast<double>(bad_captions) / std::max(1, r.captions_n);
  r.caption_recall = static_cast<double>(recalled) / std::max(1, present_total);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Stage drivers
// ---------------------------------------------------------------------------------------------

namespace {

/// Builds an AdamW over two groups (vision tower at `vision_scale` of the rate, the rest at 1).
std::unique_ptr<torch::optim::AdamW> make_optimizer(torch::nn::Module& net, const std::string& vision_prefix,
                                                    double lr) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto opts = [&] { return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr).weight_decay(0.05)); };
  groups.emplace_back(params_with_prefix(net, vision_prefix, false), opts());
  groups.emplace_back(params_with_prefix(net, vision_prefix, true), opts());
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(lr).weight_decay(0.05));
}

/// Stops gradients into the parameters of `module` whose name starts with `prefix`.
void freeze_prefix(torch::nn::Module& module, const std::string& prefix) {
  for (at::Tensor& p : params_with_prefix(module, prefix, false)) p.set_requires_grad(false);
}

/// Seeds libtorch's default generator before drawing a model's initial weights, so they follow the
/// run seed.
void seed_init(std::uint64_t seed, std::uint64_t salt) {
  torch::manual_seed(static_cast<uint64_t>(stream(seed, salt) >> 1));
}

/// Builds `Net` for `config` with initial weights drawn as PyTorch's modules draw them, from the run
/// seed (`agla::models::init_parameters` over the trainable model; ITC's temperature is a constant).
template <typename Net>
Net build_seeded(std::uint64_t seed, std::uint64_t salt, torch::nn::Module& (*trainable)(Net&)) {
  seed_init(seed, salt);
  Net net(model_config());
  models::init_parameters(trainable(net));
  return net;
}

}  // namespace

EncoderNet train_encoder(const StageOptions& o, std::vector<double>* losses) {
  EncoderNet net = build_seeded<EncoderNet>(o.seed, 0xA, [](EncoderNet& n) -> torch::nn::Module& { return *n; });
  auto opt = make_optimizer(*net, "vision_model.embeddings.patch_embedding", o.lr);
  const std::uint64_t data = stream(o.seed, 0xA1);
  const std::vector<double> l = run_loop(o, *net, *opt, {1.0, 1.0}, [&](int64_t step) {
    return encoder_losses(net, scenes_for_step(data, step, o.batch, sw::Distribution::Unbiased), o.patch_class_loss);
  });
  if (losses) *losses = l;
  return net;
}

namespace {

/// Loads the vision tower saved by stage (a) (`vision_model.*` keys) into `target` under `to`.
void init_vision(torch::nn::Module& target, const std::string& to, const std::string& path) {
  if (path.empty()) return;
  const io::StateDict dict = io::read_safetensors(path);
  const int n = copy_prefixed(target, to, dict, "vision_model.");
  check<FormatError>(n > 0, "agla::train::init_vision: no vision_model.* tensors in '", path, "'");
}

}  // namespace

ItmNet train_itm(const StageOptions& o, std::vector<double>* losses) {
  ItmNet net = build_seeded<ItmNet>(o.seed, 0xB, [](ItmNet& n) -> torch::nn::Module& { return *n->model; });
  init_vision(*net, "model.vision_model.", o.init);
  if (o.freeze_vision) freeze_prefix(*net, "model.vision_model.");
  auto opt = make_optimizer(*net, "model.vision_model.", o.lr);
  const text::WordPieceTokenizer tok = tokenizer();
  const std::uint64_t data = stream(o.seed, 0xB1), texts = stream(o.seed, 0xB2);
  const std::vector<double> l = run_loop(o, *net, *opt, {0.5, 1.0}, [&](int64_t step) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(sw::scene_seed(stream(o.seed, 0xB3), static_cast<std::uint64_t>(step)));
    return itm_losses(net, tok, scenes_for_step(data, step, o.batch, o.distribution),
                      sw::scene_seed(texts, static_cast<std::uint64_t>(step)), gen);
  });
  if (losses) *losses = l;
  return net;
}

blip::BlipCaptionModel train_lvlm(const StageOptions& o, std::vector<double>* losses) {
  blip::BlipCaptionModel model = build_seeded<blip::BlipCaptionModel>(
      o.seed, 0xC, [](blip::BlipCaptionModel& m) -> torch::nn::Module& { return *m; });
  init_vision(*model, "vision_model.", o.init);
  if (o.freeze_vision) freeze_prefix(*model, "vision_model.");
  auto opt = make_optimizer(*model, "vision_model.", o.lr);
  const text::WordPieceTokenizer tok = tokenizer();
  const std::uint64_t data = stream(o.seed, 0xC1), texts = stream(o.seed, 0xC2);
  const std::vector<double> l = run_loop(o, *model, *opt, {0.5, 1.0}, [&](int64_t step) {
    return lvlm_losses(model, tok, scenes_for_step(data, step, o.batch, o.distribution),
                       sw::scene_seed(texts, static_cast<std::uint64_t>(step)));
  });
  if (losses) *losses = l;
  return model;
}

}  // namespace agla::train
