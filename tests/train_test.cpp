// ShapesWorld training (tools/train): determinism, checkpoint resume, and the shipped model dirs.

#include <filesystem>
#include <string>
#include <vector>

#include "agla/shapesworld.hpp"
#include "train/shapesworld_training.hpp"

namespace {

namespace tr = agla::train;
namespace sw = agla::shapesworld;

tr::StageOptions tiny(const std::string& stage) {
  tr::StageOptions o;
  o.stage = stage;
  o.steps = 4;
  o.batch = 4;
  o.seed = 7;
  o.lr = 1e-3;
  o.warmup = 2;
  o.quiet = true;
  return o;
}

bool same_weights(const torch::nn::Module& a, const torch::nn::Module& b) {
  const agla::io::StateDict da = tr::state_dict(a), db = tr::state_dict(b);
  if (da.size() != db.size()) return false;
  for (const auto& [k, v] : da)
    if (!db.count(k) || !at::equal(v, db.at(k))) return false;
  return true;
}

std::string temp_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("agla_train_test_" + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

std::string models_dir() { return std::string(AGLA_SOURCE_DIR) + "/tools/data/models"; }

}  // namespace

TEST(TrainVocabularyTest, CoversEveryTrainingText) {
  const agla::text::WordPieceTokenizer tok = tr::tokenizer();
  EXPECT_EQ(tok.id_to_token(tok.size() - 2), "[DEC]");
  EXPECT_EQ(tok.id_to_token(tok.size() - 1), "[ENC]");
  const std::vector<std::string> texts = {sw::question(sw::Triangle) + tr::kPopeSuffix,
                                          "a red circle, an yellow star and a white heart", "yes", "no"};
  for (const std::string& t : texts)
    for (int64_t id : tok.encode(t)) EXPECT_NE(id, tok.unk_id()) << t;
  const agla::blip::BlipConfig c = tr::model_config();
  EXPECT_EQ(c.text.vocab_size, static_cast<int64_t>(tok.size()));
  EXPECT_EQ(c.text.bos_token_id, tok.dec_id());
}

TEST(TrainDeterminismTest, SameSeedGivesSameLossesAndWeights) {
  tr::StageOptions o = tiny("encoder");
  std::vector<double> la, lb;
  tr::EncoderNet a = tr::train_encoder(o, &la);
  tr::EncoderNet b = tr::train_encoder(o, &lb);
  ASSERT_EQ(la.size(), 4u);
  EXPECT_EQ(la, lb);
  EXPECT_TRUE(same_weights(*a, *b));
  o.seed = 8;
  std::vector<double> lc;
  tr::train_encoder(o, &lc);
  EXPECT_NE(la, lc);

  tr::StageOptions l = tiny("lvlm");
  l.steps = 2;
  std::vector<double> ma, mb;
  agla::blip::BlipCaptionModel ca = tr::train_lvlm(l, &ma);
  agla::blip::BlipCaptionModel cb = tr::train_lvlm(l, &mb);
  EXPECT_EQ(ma, mb);
  EXPECT_TRUE(same_weights(*ca, *cb));

  tr::StageOptions i = tiny("itm");
  i.steps = 2;
  std::vector<double> ia, ib;
  tr::ItmNet na = tr::train_itm(i, &ia);
  tr::ItmNet nb = tr::train_itm(i, &ib);
  EXPECT_EQ(ia, ib);
  EXPECT_TRUE(same_weights(*na, *nb));
}

TEST(TrainCheckpointTest, ResumeMatchesUninterruptedRun) {
  tr::StageOptions o = tiny("lvlm");
  std::vector<double> full;
  agla::blip::BlipCaptionModel uninterrupted = tr::train_lvlm(o, &full);

  o.work = temp_dir("resume");
  o.checkpoint_every = 100;  // only the checkpoint written when the run stops
  o.stop_at = 2;
  std::vector<double> first, second;
  tr::train_lvlm(o, &first);
  ASSERT_TRUE(std::filesystem::exists(o.work + "/checkpoint.step"));
  o.stop_at = -1;
  agla::blip::BlipCaptionModel resumed = tr::train_lvlm(o, &second);
  ASSERT_EQ(first.size(), 2u);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(std::vector<double>({first[0], first[1], second[0], second[1]}), full);
  EXPECT_TRUE(same_weights(*uninterrupted, *resumed));
  std::filesystem::remove_all(o.work);
}

TEST(ShippedModelsTest, LoadAndAnswerEasyQuestions) {
  for (const char* name : {"shapesworld-lvlm", "shapesworld-lvlm-control"}) {
    const std::string dir = models_dir() + "/" + name;
    EXPECT_LE(std::filesystem::file_size(dir + "/model.safetensors"), 10u * 1000 * 1000);
    agla::blip::BlipCaptioner cap = agla::blip::BlipCaptioner::load(dir);
    // Unbiased scenes with one or two objects: ask about a present class and an absent one of each.
    sw::WorldOptions w = tr::world();
    w.max_objects = 2;
    std::vector<sw::Scene> scenes;
    std::vector<std::string> prompts;
    std::vector<bool> truth;
    for (std::uint64_t s = 0; s < 8; ++s) {
      const sw::Scene scene = sw::generate_scene(sw::scene_seed(99, s), w, sw::Distribution::Unbiased);
      const int present = scene.objects[0].shape;
      // The random split's kind of negative: absent, not popular, not the partner of a present class.
      int absent = 0;
      const auto partner_present = [&](int c) {
        const int partner = sw::partner_of(c, w);
        return partner >= 0 && scene.has(partner);
      };
      while (scene.has(absent) || sw::is_popular(absent, w) || partner_present(absent)) ++absent;
      for (const auto& [shape, yes] : {std::pair<int, bool>{present, true}, {absent, false}}) {
        scenes.push_back(scene);
        prompts.push_back(sw::question(shape) + tr::kPopeSuffix);
        truth.push_back(yes);
      }
    }
    const std::vector<std::string> answers = tr::greedy_answers(cap, scenes, prompts);
    int correct = 0;
    for (size_t i = 0; i < answers.size(); ++i) correct += answers[i] == (truth[i] ? "yes" : "no");
    EXPECT_GE(correct, 12) << name << ": " << correct << " of " << answers.size();
  }
  const std::string itm_dir = models_dir() + "/shapesworld-itm";
  EXPECT_LE(std::filesystem::file_size(itm_dir + "/model.safetensors"), 10u * 1000 * 1000);
  const agla::blip::BlipItm itm = agla::blip::BlipItm::load(itm_dir);
  const sw::Scene scene = sw::generate_scene(sw::scene_seed(5, 0), tr::world(), sw::Distribution::Unbiased);
  std::vector<std::string> prompts;
  for (int c = 0; c < sw::kNumShapes; ++c) prompts.push_back(sw::question(c));
  const agla::blip::TextBatch tb = itm.encode_text(prompts);
  const at::Tensor p =
      at::softmax(itm.itm_logits(itm.encode_image(tr::pixels({scene})), tb.itm_input_ids, tb.attention_mask), 1)
          .select(1, 1);
  double present = 0, absent = 0;
  int np = 0;
  for (int c = 0; c < sw::kNumShapes; ++c) {
    (scene.has(c) ? present : absent) += p[c].item<double>();
    np += scene.has(c);
  }
  EXPECT_GT(present / np, absent / (sw::kNumShapes - np));
}
