// The programs in tools/ (agla_tools, agla_training): option parsing with its bounds and messages,
// the decoding methods, model-family detection, the data directory rules, the thread policy, and
// every program end to end in-process on the random-weight fixtures and the shipped ShapesWorld
// models; the built programs for what only a process shows (relocation, an installed copy, the
// restart with passive OpenMP waiting).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "agla/eval/jsonl.hpp"
#include "agla/io/image.hpp"
#include "agla/io/safetensors.hpp"
#include "agla/shapesworld/eval_set.hpp"
#include "agla/shapesworld/random.hpp"
#include "agla/shapesworld/tensor.hpp"
#include "agla/views/instruction.hpp"
#include "support/expect.hpp"
#include "support/programs.hpp"
#include "support/scratch.hpp"
#include "common/cli.hpp"
#include "common/data.hpp"
#include "common/methods.hpp"
#include "common/models.hpp"
#include "common/programs.hpp"
#include "common/threads.hpp"
#include "train/train_program.hpp"

namespace tl = agla::tools;
namespace fs = std::filesystem;

namespace {

const std::string kData = AGLA_TEST_DATA_DIR;
const std::string kItm = kData + "/blip/itm";
const std::string kCaption = kData + "/blip/caption";
const std::string kLlava = kData + "/llava/tiny_t";
const std::string kInstructBlip = kData + "/instructblip/tiny_t";

using namespace agla::test;

// A fresh folder per test in this process's scratch folder.
const Scratch kScratch("agla_tools_test");
std::string temp_dir(const std::string& name) { return kScratch.fresh(name); }

// Sets (or, with an empty value, unsets) AGLA_DATA_DIR for the scope: the in-process programs run
// inside this test binary, which has no data directory of its own.
class DataDirScope {
 public:
  explicit DataDirScope(const std::string& dir) {
    if (const char* old = std::getenv("AGLA_DATA_DIR")) old_ = old;
    if (dir.empty())
      unsetenv("AGLA_DATA_DIR");
    else
      setenv("AGLA_DATA_DIR", dir.c_str(), 1);
  }
  ~DataDirScope() {
    if (old_.empty())
      unsetenv("AGLA_DATA_DIR");
    else
      setenv("AGLA_DATA_DIR", old_.c_str(), 1);
  }
  DataDirScope(const DataDirScope&) = delete;
  DataDirScope& operator=(const DataDirScope&) = delete;

 private:
  std::string old_;
};

// A small ShapesWorld evaluation set (4 questions per split, 2 captions), written once.
const std::string& eval_set_dir() {
  static const std::string dir = [] {
    const std::string d = temp_dir("eval_set");
    write_shapesworld_eval_set(d, 4, 2);
    return d;
  }();
  return dir;
}

// The build tree's programs (build/tools/), next to this test's folder (build/tests/).
std::string built_program(const std::string& name) {
  return (fs::path(tl::executable_path()).parent_path().parent_path() / "tools" / name).string();
}

// Runs a shell command; returns its exit status and its standard output in `output`.
int shell(const std::string& command, std::string& output) {
  output.clear();
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

}  // namespace

TEST(ToolsCliTest, ParsesBoundedValuesAndNamesTheOption) {
  EXPECT_EQ(tl::parse_id_list("p", "--prompt-ids", "126, 5,7"), (std::vector<int64_t>{126, 5, 7}));
  EXPECT_EQ(tl::parse_id_list("p", "--prompt-ids", "0"), (std::vector<int64_t>{0}));
  for (const std::string bad : {"", "1,,2", "1,", "a", "-3", "1.5", "99999999999999999999", "4294967296"})
    EXPECT_THROW(tl::parse_id_list("p", "--prompt-ids", bad), agla::InvalidArgument) << bad;
  std::string many = "1";
  for (int i = 0; i < 4096; ++i) many += ",1";
  EXPECT_THROW(tl::parse_id_list("p", "--prompt-ids", many), agla::InvalidArgument);
  EXPECT_EQ(tl::parse_number("p", "--alpha", "2.5", 0, 10), 2.5);
  EXPECT_THROW(tl::parse_number("p", "--alpha", "nan", 0, 10), agla::InvalidArgument);
  EXPECT_THROW(tl::parse_number("p", "--beta", "0", 0, 1, true), agla::InvalidArgument);
  EXPECT_EQ(tl::parse_number("p", "--beta", "1", 0, 1, true), 1.0);
  try {
    tl::parse_number("prog", "--alpha", "1e38", 0, 1000);
    ADD_FAILURE() << "1e38 accepted";
  } catch (const agla::InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "prog: --alpha must be in [0, 1000]; got 1e+38");
  }
  EXPECT_THROW(tl::parse_integer("p", "--seed", "12x", 0, 10), agla::InvalidArgument);
  EXPECT_THROW(tl::parse_threads("p", "-1"), agla::InvalidArgument);
  EXPECT_THROW(tl::parse_threads("p", "1025"), agla::InvalidArgument);
  EXPECT_EQ(tl::parse_threads("p", "0"), 0);
}

TEST(ToolsCliTest, OptionParserStoresEachOptionAndRecordsWhatWasNamed) {
  std::string text;
  std::optional<std::string> maybe;
  std::int64_t count = 7;
  std::optional<int> small;
  std::vector<std::int64_t> ids;
  bool flag = false, grouped = false;
  tl::OptionParser parser("prog");
  parser.text("--text", text).text("--maybe", maybe).integer("--count", count, 1, 9).integer("--small", small, 0, 3);
  parser.ids("--ids", ids).flag("--flag", flag);
  parser.group([&](const std::string& option, tl::ArgCursor& cursor) {
    if (option != "--pair") return false;
    grouped = cursor.value(option) == "a" && cursor.value(option) == "b";
    return true;
  });
  EXPECT_TRUE(parser.parse({"--text", "t", "--count", "3", "--small", "2", "--ids", "4,5", "--flag", "--pair", "a",
                            "b"}));
  EXPECT_EQ(text, "t");
  EXPECT_FALSE(maybe.has_value());
  EXPECT_EQ(count, 3);
  EXPECT_EQ(small, 2);
  EXPECT_EQ(ids, (std::vector<std::int64_t>{4, 5}));
  EXPECT_TRUE(flag && grouped);
  EXPECT_TRUE(parser.named("--pair") && !parser.named("--maybe"));
  EXPECT_EQ(parser.given().size(), 6u);

  // With -h (or --help) the other arguments are still parsed; parse returns false, and the caller
  // prints the help.
  tl::OptionParser help("prog");
  help.text("--text", text);
  EXPECT_FALSE(help.parse({"--text", "u", "-h"}));
  EXPECT_EQ(text, "u");
  const auto message = [](std::vector<std::string> args) {
    return agla::test::error_message<agla::InvalidArgument>([&] {
      std::int64_t n = 0;
      tl::OptionParser bounded("prog");
      bounded.integer("--n", n, 1, 9);
      bounded.parse(args);
    });
  };
  EXPECT_EQ(message({"--n"}), "prog: --n needs a value");
  EXPECT_EQ(message({"--n", "10"}), "prog: --n must be in [1, 9]; got 10");
  EXPECT_EQ(message({"--m"}), "prog: unknown option '--m' (see --help)");
  tl::OptionParser twice("prog");
  twice.flag("--flag", flag);
  EXPECT_THROW(twice.text("--flag", text), std::logic_error);
}

TEST(ToolsCliTest, EveryProgramHasItsHelpTextFilledIn) {
  for (const char* program :
       {"agla_caption", "agla_chair", "agla_ipm", "agla_mme", "agla_pope", "agla_shapesworld", "agla_train"}) {
    std::ostringstream out;
    EXPECT_EQ(tl::print_help(program, out), 0);
    const std::string help = out.str();
    EXPECT_EQ(help.rfind(std::string("usage: ") + program, 0), 0u) << help;
    EXPECT_EQ(help.find("{method options}"), std::string::npos) << program;
    EXPECT_EQ(help.find("{data directory}"), std::string::npos) << program;
  }
  std::ostringstream pope;
  tl::print_help("agla_pope", pope);
  EXPECT_NE(pope.str().find("  --method NAME         regular | greedy"), std::string::npos);
  EXPECT_NE(pope.str().find("data directory: "), std::string::npos);
  std::ostringstream none;
  EXPECT_THROW(tl::print_help("agla_nothing", none), std::logic_error);
}

TEST(ToolsCliTest, RequireFileNamesThePathAndWhatIsWrong) {
  const std::string dir = temp_dir("require");
  try {
    tl::require_file("prog", "--image", dir);
    ADD_FAILURE() << "a directory accepted";
  } catch (const agla::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--image '" + dir + "' is a directory"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tl::require_file("prog", "--image", dir + "/missing.png"), agla::InvalidArgument);
  EXPECT_THROW(tl::require_file("prog", "--image", ""), agla::InvalidArgument);
  std::ofstream(dir + "/file.txt") << "x";
  EXPECT_NO_THROW(tl::require_file("prog", "--image", dir + "/file.txt"));
  EXPECT_THROW(tl::make_directory("prog", dir + "/file.txt"), agla::FormatError);
}

TEST(ToolsDataTest, DataDirectoryIsFoundRelativeToTheProgram) {
  const fs::path root = temp_dir("data_dir");
  const std::string build_exe = (root / "build" / "tools" / "agla_caption").string();
  const std::string installed_exe = (root / "prefix" / "bin" / "agla_caption").string();
  EXPECT_EQ(tl::data_dir_candidates(build_exe), (std::vector<std::string>{(root / "build/tools/data").string(),
                                                                          (root / "build/share/agla/data").string()}));
  EXPECT_FALSE(tl::find_data_dir(std::nullopt, build_exe));
  fs::create_directories(root / "build/tools/data");
  EXPECT_EQ(tl::find_data_dir(std::nullopt, build_exe), (root / "build/tools/data").string());
  fs::create_directories(root / "prefix/share/agla/data");
  EXPECT_EQ(tl::find_data_dir(std::nullopt, installed_exe), (root / "prefix/share/agla/data").string());
  // The override wins, and must be a directory.
  EXPECT_EQ(tl::find_data_dir(root.string(), build_exe), root.string());
  EXPECT_THROW(tl::find_data_dir((root / "nothing").string(), build_exe), agla::FormatError);
}

TEST(ToolsDataTest, MissingModelsAreAnErrorThatSaysHowToGetThem) {
  const std::string empty = temp_dir("empty_data");
  {
    const DataDirScope scope(empty);
    const Output o = caption({"--image", kData + "/blip/images/astronaut_32.png"});
    EXPECT_EQ(o.status, 1);
    EXPECT_NE(o.err.find(empty + "/models/shapesworld-itm"), std::string::npos) << o.err;
    EXPECT_NE(o.err.find("agla_train --stage all"), std::string::npos) << o.err;
    EXPECT_TRUE(o.out.empty());
    const Output p = pope({"--questions", eval_set_dir() + "/shapesworld_pope_random.jsonl", "--quiet"});
    EXPECT_EQ(p.status, 1);
    EXPECT_NE(p.err.find("shapesworld-lvlm"), std::string::npos) << p.err;
    EXPECT_NE(p.err.find("agla_train --stage all"), std::string::npos) << p.err;
    // --help still works and says where it looked.
    const Output help = caption({"--help"});
    EXPECT_EQ(help.status, 0);
    EXPECT_NE(help.out.find("data directory: " + empty), std::string::npos) << help.out;
  }
  const DataDirScope scope(empty + "/not-there");
  const Output o = caption({});
  EXPECT_EQ(o.status, 1);
  EXPECT_NE(o.err.find("AGLA_DATA_DIR is set to '" + empty + "/not-there'"), std::string::npos) << o.err;
}

TEST(ToolsThreadsTest, SmallModelsRunOnOneThreadLargeOnThePhysicalCores) {
  EXPECT_GE(tl::physical_cores(), 1);
  const std::uintmax_t shipped = tl::weight_bytes(kShippedItm);
  EXPECT_EQ(shipped, fs::file_size(kShippedItm + "/model.safetensors"));
  EXPECT_EQ(tl::weight_bytes(kData + "/nothing-here"), 0u);
  EXPECT_EQ(tl::default_threads(shipped), 1);
  EXPECT_EQ(tl::default_threads(tl::kSmallModelBytes), tl::physical_cores());
}

TEST(ToolsMethodTest, DefinitionsFollowTheDesign) {
  tl::SamplingSettings s;
  const auto o = [&](tl::Method m) { return tl::method_options(m, s); };
  EXPECT_EQ(o(tl::Method::Regular).method, agla::FusionMethod::Plain);
  EXPECT_FALSE(o(tl::Method::Regular).greedy);
  EXPECT_TRUE(o(tl::Method::Greedy).greedy);
  EXPECT_EQ(o(tl::Method::Greedy).method, agla::FusionMethod::Plain);
  // Sharpened: assembly with the original standing in for the augmented view, from the first token.
  EXPECT_EQ(o(tl::Method::Sharpened).method, agla::FusionMethod::Assembly);
  EXPECT_EQ(o(tl::Method::Sharpened).local_view_tokens, 0);
  EXPECT_EQ(o(tl::Method::Sharpened).alpha, 2.0);
  EXPECT_EQ(o(tl::Method::CutoffOnly).alpha, 0.0);
  EXPECT_EQ(o(tl::Method::CutoffOnly).beta, 0.5);
  EXPECT_EQ(o(tl::Method::Vcd).method, agla::FusionMethod::Contrast);
  EXPECT_EQ(o(tl::Method::Vcd).alpha, 1.0);
  EXPECT_EQ(o(tl::Method::Vcd).beta, 0.1);
  EXPECT_EQ(o(tl::Method::Agla).local_view_tokens, agla::DecodeOptions::kEveryToken);
  EXPECT_EQ(o(tl::Method::AglaRandomMask).local_view_tokens, agla::DecodeOptions::kEveryToken);
  EXPECT_EQ(o(tl::Method::AglaReleased).local_view_tokens, 1);
  EXPECT_EQ(tl::method_view(tl::Method::Vcd), tl::LocalView::Noise);
  EXPECT_EQ(tl::method_view(tl::Method::AglaRandomMask), tl::LocalView::RandomMask);
  EXPECT_EQ(tl::method_view(tl::Method::Sharpened), tl::LocalView::None);
  s.alpha = 2.0;
  s.beta = 0.5;
  EXPECT_EQ(o(tl::Method::Vcd).alpha, 2.0);
  EXPECT_EQ(o(tl::Method::Vcd).beta, 0.5);
  for (tl::Method m : tl::all_methods()) EXPECT_EQ(tl::parse_method(tl::method_name(m)), m);
  EXPECT_THROW(tl::parse_method("beam"), agla::InvalidArgument);

  // Sharpened = softmax((1 + alpha) l) under the beta cutoff; cutoff-only = softmax(l) under it.
  const at::Tensor l = at::tensor({2.0f, 1.5f, 0.0f, -1.0f}).view({1, 4});
  const auto log_probs = [&](tl::Method m) {
    at::Tensor out;
    agla::StepControl control;
    control.log_probs = &out;
    agla::decode_logits(l, l, o(m), tl::seeded_generator(1), control);
    return out;
  };
  const at::Tensor kept = l >= (std::log(0.5) + 2.0);
  const at::Tensor sharp = (3.0 * l).masked_fill(~kept, -INFINITY).log_softmax(-1);
  const at::Tensor cut = l.masked_fill(~kept, -INFINITY).log_softmax(-1);
  EXPECT_TRUE(at::allclose(log_probs(tl::Method::Sharpened).masked_fill(~kept, 0), sharp.masked_fill(~kept, 0)));
  EXPECT_TRUE(at::allclose(log_probs(tl::Method::CutoffOnly).masked_fill(~kept, 0), cut.masked_fill(~kept, 0)));
  EXPECT_TRUE(at::equal(log_probs(tl::Method::Sharpened).isinf(), ~kept));
}

TEST(ToolsMethodTest, EveryMethodIsItsReferencePresetWithItsViews) {
  const tl::SamplingSettings s;
  const auto o = [&](tl::Method m) { return tl::method_options(m, s); };
  using V = tl::LocalView;
  // Two-view methods are the presets of agla/decode/options.hpp (docs/decoding.md).
  const auto same = [](const agla::DecodeOptions& a, const agla::DecodeOptions& b) {
    return a.method == b.method && a.alpha == b.alpha && a.beta == b.beta && a.space == b.space &&
           a.greedy == b.greedy && a.further_views.size() == b.further_views.size() &&
           a.m3id_first_t == b.m3id_first_t && a.m3id_lambda == b.m3id_lambda;
  };
  EXPECT_TRUE(same(o(tl::Method::Vcd), agla::DecodeOptions::vcd()));
  EXPECT_TRUE(same(o(tl::Method::Agla), agla::DecodeOptions::agla()));
  EXPECT_TRUE(same(o(tl::Method::Ritual), agla::DecodeOptions::ritual()));
  EXPECT_TRUE(same(o(tl::Method::Icd), agla::DecodeOptions::icd()));
  EXPECT_TRUE(same(o(tl::Method::Pai), agla::DecodeOptions::pai()));
  EXPECT_TRUE(same(o(tl::Method::Vacode), agla::DecodeOptions::vacode()));
  EXPECT_EQ(o(tl::Method::Ritual).alpha, 3.0);
  EXPECT_EQ(o(tl::Method::Ritual).method, agla::FusionMethod::Assembly);
  EXPECT_EQ(o(tl::Method::Pai).space, agla::FusionSpace::LogProbs);
  EXPECT_TRUE(o(tl::Method::Pai).greedy);
  // M3ID: the paper's log-probabilities and the RITUAL harness's raw logits, both from t = 1.
  EXPECT_EQ(o(tl::Method::M3id).method, agla::FusionMethod::M3id);
  EXPECT_EQ(o(tl::Method::M3id).space, agla::FusionSpace::LogProbs);
  EXPECT_EQ(o(tl::Method::M3idLogits).space, agla::FusionSpace::Logits);
  EXPECT_EQ(o(tl::Method::M3idLogits).m3id_first_t, 1);
  tl::MethodSettings m3id;
  m3id.m3id_first_t = 0;
  m3id.m3id_lambda = 0.05;
  EXPECT_EQ(tl::method_options(tl::Method::M3idLogits, s, m3id).m3id_first_t, 0);
  EXPECT_EQ(tl::method_options(tl::Method::M3idLogits, s, m3id).m3id_lambda, 0.05);
  // AGLA + VCD: AGLA's assembly, then VCD's contrast as a third view.
  const agla::DecodeOptions both = o(tl::Method::AglaVcd);
  EXPECT_EQ(both.extra_views(), 2);
  EXPECT_EQ(both.further_views[0].method, agla::FusionMethod::Contrast);
  EXPECT_EQ(both.further_views[0].alpha, 1.0);
  EXPECT_EQ(both.beta, 0.5);
  EXPECT_EQ(tl::method_views(tl::Method::AglaVcd), (std::vector<V>{V::IpmMask, V::Noise}));
  EXPECT_EQ(tl::method_views(tl::Method::Ritual), (std::vector<V>{V::Transform}));
  EXPECT_EQ(tl::method_views(tl::Method::Icd), (std::vector<V>{V::Disturbed}));
  for (tl::Method m : {tl::Method::M3id, tl::Method::M3idLogits, tl::Method::Pai})
    EXPECT_EQ(tl::method_views(m), (std::vector<V>{V::NoImage})) << tl::method_name(m);
  EXPECT_EQ(tl::method_views(tl::Method::Vacode), (std::vector<V>{V::Selected}));
  EXPECT_TRUE(tl::method_needs_itm(tl::Method::AglaVcd));
  EXPECT_FALSE(tl::method_needs_itm(tl::Method::Ritual));
  // Every method that runs views gets one per fused term.
  for (tl::Method m : tl::all_methods()) {
    const agla::DecodeOptions d = o(m);
    if (d.local_view_tokens > 0)
      EXPECT_EQ(static_cast<std::size_t>(d.extra_views()), tl::method_views(m).size()) << tl::method_name(m);
  }
  // The sampling settings reach every method; PAI stays greedy (its reference commands).
  tl::SamplingSettings hot;
  hot.temperature = 0.5;
  hot.top_k = 7;
  EXPECT_EQ(tl::method_options(tl::Method::Ritual, hot).temperature, 0.5);
  EXPECT_EQ(tl::method_options(tl::Method::Icd, hot).top_k, 7);
  EXPECT_TRUE(tl::method_options(tl::Method::Pai, hot).greedy);
}

TEST(ToolsMethodTest, OptionsAMethodWouldIgnoreAreRefused) {
  tl::MethodSettings m;
  m.disturbance = "You are blind.";
  EXPECT_NO_THROW(tl::check_method_settings("p", tl::Method::Icd, m));
  EXPECT_THROW(tl::check_method_settings("p", tl::Method::Vcd, m), agla::InvalidArgument);
  tl::SamplingSettings s;
  s.alpha = 1.0;
  EXPECT_THROW(tl::check_sampling_settings("p", tl::Method::Regular, s), agla::InvalidArgument);
  EXPECT_THROW(tl::check_sampling_settings("p", tl::Method::M3id, s), agla::InvalidArgument);
  EXPECT_NO_THROW(tl::check_sampling_settings("p", tl::Method::Ritual, s));
  const std::string q = "q.jsonl";
  expect_errors(tl::run_pope,
                {
                    {{"--questions", q, "--method", "vcd", "--disturbance", "x"}, "--disturbance applies to icd only"},
                    {{"--questions", q, "--method", "agla", "--pai-alpha", "0.5"}, "--pai-alpha applies to pai only"},
                    {{"--questions", q, "--method", "pai", "--pai-layers", "5,2"}, "--pai-layers takes START,END"},
                    {{"--questions", q, "--method", "vcd", "--m3id-lambda", "0.1"}, "--m3id-lambda applies to"},
                    {{"--questions", q, "--method", "m3id", "--m3id-first-t", "2"}, "--m3id-first-t must be in [0, 1]"},
                    {{"--questions", q, "--method", "agla", "--noise-step", "10"}, "--noise-step applies to vcd"},
                    {{"--questions", q, "--method", "regular", "--alpha", "2"}, "--alpha weights an extra view"},
                    {{"--questions", q, "--method", "greedy", "--beta", "0.5"}, "--beta sets the plausibility cutoff"},
                    {{"--questions", q, "--method", "ritual+vcd"}, "--method must be one of"},
                });
  expect_errors(tl::run_caption, {{{"--method", "icd", "--pai-alpha", "1"}, "--pai-alpha applies to pai only"},
                                  {{"--qformer-prompt-ids", "101,102"}, "--qformer-prompt-ids goes with --prompt-ids"}});
}

TEST(ToolsMethodTest, RandomMaskKeepsTheRequestedFraction) {
  for (double keep : {0.3, 0.75, 0.9}) {
    const at::Tensor mask = tl::random_mask(8, 64, 64, keep, tl::seeded_generator(7));
    ASSERT_EQ(mask.sizes(), (at::IntArrayRef{64, 64}));
    EXPECT_NEAR(mask.to(at::kDouble).mean().item<double>(), keep, 2.0 / 4096) << keep;
  }
  EXPECT_TRUE(at::equal(tl::random_mask(8, 32, 32, 0.5, tl::seeded_generator(3)),
                        tl::random_mask(8, 32, 32, 0.5, tl::seeded_generator(3))));
  EXPECT_FALSE(at::equal(tl::random_mask(8, 32, 32, 0.5, tl::seeded_generator(3)),
                         tl::random_mask(8, 32, 32, 0.5, tl::seeded_generator(4))));
  EXPECT_NE(tl::question_seed(1, 0), tl::question_seed(1, 1));
  EXPECT_NE(tl::question_seed(1, 0), tl::question_seed(2, 0));
}

TEST(ToolsModelTest, DetectsFamiliesFromConfigByTable) {
  EXPECT_STREQ(tl::detect_model_family(kItm).name, "blip-itm");
  EXPECT_STREQ(tl::detect_model_family(kCaption).name, "blip-caption");
  EXPECT_STREQ(tl::detect_model_family(kLlava).name, "llava");
  EXPECT_THROW(tl::detect_model_family(kData), agla::FormatError);
  const std::string dir = temp_dir("kind");
  std::ofstream(dir + "/config.json") << R"({"model_type": "bert", "architectures": ["BertModel"]})";
  EXPECT_THROW(tl::detect_model_family(dir), agla::FormatError);
  // An architecture decides before model_type; model_type alone decides when no architecture is known.
  std::ofstream(dir + "/config.json") << R"({"model_type": "blip", "architectures": ["BlipForImageTextRetrieval"]})";
  EXPECT_STREQ(tl::detect_model_family(dir).name, "blip-itm");
  std::ofstream(dir + "/config.json") << R"({"model_type": "llava"})";
  EXPECT_STREQ(tl::detect_model_family(dir).name, "llava");
  EXPECT_STREQ(tl::detect_model_family(kInstructBlip).name, "instructblip");
  std::ofstream(dir + "/config.json") << R"({"model_type": "instructblip"})";
  EXPECT_STREQ(tl::detect_model_family(dir).name, "instructblip");
  // Every LVLM row loads into its own AnyLvlm alternative.
  std::vector<std::size_t> alternatives;
  for (const tl::ModelFamily& family : tl::model_families())
    if (family.load != nullptr) alternatives.push_back(family.alternative);
  EXPECT_EQ(alternatives.size(), std::variant_size_v<tl::AnyLvlm>);
  const tl::AnyLvlm blip = tl::load_lvlm(kCaption, {});
  EXPECT_STREQ(tl::lvlm_family_name(blip), "blip-caption");
  const tl::AnyLvlm llava = tl::load_lvlm(kLlava, {});
  EXPECT_STREQ(tl::lvlm_family_name(llava), "llava");
  EXPECT_FALSE(tl::lvlm_has_tokenizer(llava));
  const tl::AnyLvlm instructblip = tl::load_lvlm(kInstructBlip, {});
  EXPECT_STREQ(tl::lvlm_family_name(instructblip), "instructblip");
  EXPECT_FALSE(tl::lvlm_has_tokenizer(instructblip));
  EXPECT_THROW(tl::load_lvlm(kItm, {}), agla::FormatError);
  EXPECT_THROW(tl::load_itm(kCaption), agla::FormatError);
}

TEST(ToolsModelTest, InstructionsGoThroughEachFamilysPromptTemplate) {
  // The POPE instruction is the question plus the suffix, for every family; BLIP's prompt is [DEC]
  // and the instruction's word pieces.
  const tl::AnyLvlm blip = tl::load_lvlm(kCaption, {});
  const auto& captioner = std::get<agla::blip::BlipCaptioner>(blip);
  const std::string instruction = std::string("is there a cat?") + tl::kPopeQuestionSuffix;
  const std::vector<int64_t> ids = tl::lvlm_prompt(blip, instruction).ids;
  EXPECT_EQ(ids.front(), captioner.config().text.bos_token_id);
  EXPECT_EQ(ids, captioner.prompt(instruction).ids);
}

TEST(ToolsSampleTest, SampleImageIsTheDocumentedShapesWorldScene) {
  // tools/data/README.md: scene 10 of seed 2025, unbiased distribution, default world.
  const at::Tensor sample = agla::io::read_image(kShippedSample);
  const auto scene =
      agla::shapesworld::generate_scene(agla::shapesworld::scene_seed(2025, 10), agla::shapesworld::WorldOptions{},
                                        agla::shapesworld::Distribution::Unbiased);
  EXPECT_TRUE(at::equal(sample, agla::shapesworld::image_tensor(scene)));
  EXPECT_EQ(agla::shapesworld::caption(scene), "a red star, a yellow diamond and a purple circle");
}

TEST(ToolsCaptionTest, OptionErrorsExitWithStatusOne) {
  const std::string out_dir = temp_dir("caption_errors");
  const DataDirScope scope(kToolsData);
  expect_errors(tl::run_caption,
                {
                    {{"--frobnicate"}, "unknown option '--frobnicate'"},
                    {{"--alpha"}, "--alpha needs a value"},
                    {{"--alpha", "1e38"}, "agla_caption: --alpha must be in [0, 1000]; got 1e+38"},
                    {{"--alpha", "-1"}, "--alpha must be in [0, 1000]"},
                    {{"--top-p", "2"}, "--top-p must be in (0, 1]"},
                    {{"--beta", "0"}, "--beta must be in (0, 1]"},
                    {{"--temperature", "x"}, "--temperature expects a finite number"},
                    {{"--temperature", "0"}, "--temperature must be in [0.001, 1000]"},
                    {{"--top-k", "-1"}, "--top-k must be in [0, 1048576]"},
                    {{"--max-new-tokens", "0"}, "--max-new-tokens must be in [1, 4096]"},
                    {{"--seed", "-3"}, "--seed must be in [0, "},
                    {{"--threads", "-3"}, "--threads must be in [0, 1024]"},
                    {{"--timing-runs", "0"}, "--timing-runs must be in [1, 100]"},
                    {{"--out", ""}, "--out needs a directory"},
                    {{"--prompt-ids", "1,x"}, "--prompt-ids (token id) expects an integer"},
                    {{"--prompt", "a", "--prompt-ids", "1"}, "give --prompt or --prompt-ids, not both"},
                    {{"--image", "/nonexistent.png"}, "--image '/nonexistent.png' does not exist"},
                    {{"--image", out_dir}, "--image '" + out_dir + "' is a directory"},
                    {{"--itm", kCaption, "--lvlm", kCaption}, "--itm needs a BLIP ITM checkpoint"},
                    {{"--itm", kItm, "--lvlm", kItm}, "--lvlm needs an LVLM checkpoint"},
                    {{"--itm", kItm, "--lvlm", kData}, "no config.json"},
                    {{"--itm", kItm, "--lvlm", kCaption, "--prompt-ids", "126,100000", "--out", out_dir},
                     "prompt token id 100000 is outside the vocabulary"},
                    {{"--itm-prompt", "xylophone zebra", "--out", out_dir}, "every word of --itm-prompt"},
                    {{"--prompt", "xylophone zebra", "--out", out_dir}, "every word of --prompt"},
                });
  const Output help = caption({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--prompt-ids"), std::string::npos);
  EXPECT_NE(help.out.find("data directory: " + kToolsData), std::string::npos) << help.out;
}

TEST(ToolsCaptionTest, JsonReportOnFixtureModels) {
  const std::string out_dir = temp_dir("caption");
  const DataDirScope scope(kToolsData);  // the default image
  const std::vector<std::string> args = {
      "--itm", kItm,        "--lvlm", kCaption, "--json", "--seed",       "3",    "--max-new-tokens",
      "6",     "--threads", "1",      "--out",  out_dir,  "--prompt-ids", "126,5"};
  const Output o = caption(args);
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);  // exactly one JSON object
  EXPECT_EQ(j["prompt_ids"], (std::vector<int64_t>{126, 5}));
  EXPECT_EQ(j["lvlm"]["kind"], "blip-caption");
  EXPECT_EQ(j["threads"], 1);
  for (const char* mode : {"regular", "agla"}) {
    ASSERT_TRUE(j[mode]["ids"].is_array()) << mode;
    EXPECT_GE(j[mode]["ids"].size(), 1u);
    EXPECT_LE(j[mode]["ids"].size(), 6u);
    EXPECT_TRUE(j[mode]["text"].is_string());
    EXPECT_GT(j[mode]["tokens_per_second"].get<double>(), 0.0);
    // Automatic timing: at least three runs per mode (a few milliseconds each here).
    EXPECT_GE(j[mode]["timing_runs"].get<int>(), 3) << mode;
    EXPECT_LE(j[mode]["tokens_per_second_range"][0].get<double>(), j[mode]["tokens_per_second"].get<double>());
    EXPECT_GE(j[mode]["tokens_per_second_range"][1].get<double>(), j[mode]["tokens_per_second"].get<double>());
  }
  EXPECT_GT(j["ipm"]["kept_fraction"].get<double>(), 0.0);
  EXPECT_LE(j["ipm"]["kept_fraction"].get<double>(), 1.0);
  EXPECT_TRUE(j["itm_unknown_words"].empty());
  for (const char* file : {"heatmap.png", "augmented.png", "mask.png"}) {
    const at::Tensor image = agla::io::read_image(out_dir + "/" + file);
    EXPECT_EQ(image.size(0), 32) << file;  // the fixture ITM's input size
  }
  // The same seed gives the same captions; --timing-runs fixes the count.
  std::vector<std::string> again_args = args;
  again_args.insert(again_args.end(), {"--timing-runs", "2"});
  const nlohmann::json k = nlohmann::json::parse(caption(again_args).out);
  EXPECT_EQ(j["regular"]["ids"], k["regular"]["ids"]);
  EXPECT_EQ(j["agla"]["ids"], k["agla"]["ids"]);
  EXPECT_EQ(k["agla"]["timing_runs"], 2);

  // Prompt and caption never exceed the text model's positions (the fixture has 64).
  const Output capped = caption({"--itm", kItm, "--lvlm", kCaption, "--json", "--max-new-tokens", "4000", "--threads",
                                 "1", "--out", out_dir, "--prompt-ids", "126,5,7", "--timing-runs", "1"});
  ASSERT_EQ(capped.status, 0) << capped.err;
  EXPECT_LE(nlohmann::json::parse(capped.out)["regular"]["ids"].size(), 61u);

  // Text mode prints both captions and how their speed was measured.
  const Output text = caption({"--itm", kItm, "--lvlm", kCaption, "--max-new-tokens", "4", "--threads", "1", "--out",
                               out_dir, "--prompt", "a picture of"});
  ASSERT_EQ(text.status, 0) << text.err;
  expect_contains(text.out, {"regular", "AGLA", "tokens/s: median of"});
}

TEST(ToolsCaptionTest, ShippedModelsByDefaultAndUnknownWordsRecorded) {
  const std::string out_dir = temp_dir("caption_shipped");
  const DataDirScope scope(kToolsData);
  const Output o =
      caption({"--json", "--threads", "1", "--out", out_dir, "--timing-runs", "1", "--itm-prompt", "the zebra star"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["image"], kShippedSample);
  EXPECT_EQ(j["lvlm"]["dir"], kToolsData + "/models/shapesworld-lvlm");
  EXPECT_EQ(j["itm_unknown_words"], (std::vector<std::string>{"zebra"}));
  EXPECT_NE(o.err.find("'zebra'"), std::string::npos) << o.err;
}

TEST(ToolsCaptionTest, DrivesLlavaByTokenIds) {
  const std::string out_dir = temp_dir("caption_llava");
  const DataDirScope scope(kToolsData);  // the default image
  const Output o = caption({"--itm", kItm, "--lvlm", kLlava, "--json", "--greedy", "--max-new-tokens", "4", "--threads",
                            "1", "--out", out_dir, "--prompt-ids", "1,7,95,9", "--timing-runs", "1"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["lvlm"]["kind"], "llava");
  EXPECT_EQ(j["regular"]["ids"].size(), 4u);
  EXPECT_EQ(j["agla"]["ids"].size(), 4u);
  // Without ids the fixture (no tokenizer.model) cannot be prompted by text, and says so.
  const Output text = caption({"--itm", kItm, "--lvlm", kLlava, "--out", out_dir, "--threads", "1"});
  EXPECT_EQ(text.status, 1);
  EXPECT_NE(text.err.find("token ids"), std::string::npos) << text.err;
  // A prompt without the image token is refused by the model.
  EXPECT_EQ(caption({"--itm", kItm, "--lvlm", kLlava, "--out", out_dir, "--prompt-ids", "1,7"}).status, 1);
}

TEST(ToolsPopeTest, OptionErrors) {
  const std::string dir = temp_dir("pope_errors");
  const std::string questions = eval_set_dir() + "/shapesworld_pope_adversarial.jsonl";
  const DataDirScope scope(kToolsData);
  expect_errors(
      tl::run_pope,
      {
          {{}, "give exactly one of"},
          {{"--questions", "q.jsonl", "--evaluate", "a", "b"}, "give exactly one of"},
          {{"--questions", "q.jsonl", "--method", "beam"}, "--method must be one of"},
          {{"--questions", "q.jsonl", "--num-chunks", "2", "--chunk-idx", "2"}, "--chunk-idx must be below"},
          {{"--questions", "q.jsonl", "--num-chunks", "0"}, "--num-chunks must be in [1, "},
          {{"--questions", "q.jsonl", "--limit", "0"}, "--limit must be in [1, "},
          {{"--questions", "q.jsonl", "--noise-step", "1000"}, "--noise-step must be in [0, 999]"},
          {{"--questions", "q.jsonl", "--max-new-tokens", "5000"}, "--max-new-tokens must be in [1, 4096]"},
          {{"--questions", "q.jsonl", "--alpha", "1e38"}, "--alpha must be in [0, 1000]"},
          {{"--questions", "q.jsonl", "--temperature", "1e-9"}, "--temperature must be in"},
          {{"--questions", "q.jsonl", "--threads", "-3"}, "--threads must be in [0, 1024]"},
          {{"--questions", "/nonexistent.jsonl"}, "--questions '/nonexistent.jsonl' does not exist"},
          {{"--questions", dir}, "--questions '" + dir + "' is a directory"},
          {{"--questions", "q.jsonl", "--parser", "regex"}, "regex"},
          {{"--questions", "q.jsonl", "--question-template", "no placeholder"}, "must contain {question}"},
          {{"--questions", "q.jsonl", "--question-template", "{question}", "--question-suffix", "x"}, "not both"},
          {{"--evaluate", "only-one"}, "needs GT.jsonl and ANSWERS.jsonl"},
          {{"--evaluate", dir, questions}, "is a directory"},
          {{"--summarize", dir}, "--summarize '" + dir + "' is a directory"},
          // A given --itm is loaded and checked even when the method needs no IPM view.
          {{"--questions", questions, "--method", "regular", "--itm", kCaption, "--answers", dir + "/a.jsonl",
            "--quiet"},
           "--itm needs a BLIP ITM checkpoint"},
          {{"--questions", questions, "--method", "regular", "--itm", dir + "/none", "--answers", dir + "/a.jsonl",
            "--quiet"},
           "no config.json in '" + dir + "/none'"},
      });
  const Output help = pope({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--question-suffix"), std::string::npos);
}

TEST(ToolsPopeTest, RunsEveryMethodAndWritesReferenceAnswerLines) {
  const std::string dir = temp_dir("pope");
  const std::string questions = eval_set_dir() + "/shapesworld_pope_adversarial.jsonl";
  const std::string results = dir + "/results.jsonl";
  for (tl::Method method : tl::all_methods()) {
    const std::string answers = dir + "/" + tl::method_name(method) + ".jsonl";
    const Output o = pope({"--questions", questions, "--method", tl::method_name(method), "--itm", kItm, "--lvlm",
                           kCaption, "--answers", answers, "--max-new-tokens", "3", "--json", "--threads", "1",
                           "--results", results, "--model-id", "fixture"});
    ASSERT_EQ(o.status, 0) << tl::method_name(method) << ": " << o.err;
    EXPECT_NE(o.err.find("] 4/4"), std::string::npos) << o.err;  // the progress bar's last state
    const nlohmann::json summary = nlohmann::json::parse(o.out);
    EXPECT_EQ(summary["metrics"]["questions"], 4);
    EXPECT_EQ(summary["split"], "adversarial");
    const auto lines = read_lines(answers);
    ASSERT_EQ(lines.size(), 4u);
    for (const auto& line : lines) {
      for (const char* key : {"question_id", "prompt", "text", "model_id", "image", "metadata"})
        EXPECT_TRUE(line.contains(key)) << key;
      EXPECT_EQ(line["model_id"], "fixture");
      EXPECT_EQ(line["metadata"]["method"], tl::method_name(method));
      const bool ipm = tl::method_needs_itm(method);
      EXPECT_EQ(line["metadata"].contains("itc"), ipm);
      EXPECT_EQ(line["metadata"].contains("kept_fraction"), ipm);
    }
    // The answers file scores the same in evaluate-only mode.
    const Output scored = pope({"--evaluate", questions, answers, "--json"});
    ASSERT_EQ(scored.status, 0) << scored.err;
    EXPECT_EQ(nlohmann::json::parse(scored.out)["accuracy"], summary["metrics"]["accuracy"]);
  }
  EXPECT_EQ(read_lines(results).size(), tl::all_methods().size());
  const Output table = pope({"--summarize", results});
  ASSERT_EQ(table.status, 0) << table.err;
  expect_contains(table.out, {"### fixture", "POPE adversarial:", "| agla-random-mask |"});
}

TEST(ToolsPopeTest, QuestionSuffixAndTemplateShapeTheInstruction) {
  const std::string dir = temp_dir("pope_suffix");
  const std::string questions = eval_set_dir() + "/shapesworld_pope_random.jsonl";
  const tl::AnyLvlm lvlm = tl::load_lvlm(kCaption, {});
  const std::string question = read_lines(questions)[0]["text"].get<std::string>();
  const auto prompt_of = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "--questions",    questions,          "--method", "greedy",  "--lvlm",  kCaption, "--answers",
        dir + "/a.jsonl", "--max-new-tokens", "1",        "--quiet", "--limit", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Output o = pope(args);
    EXPECT_EQ(o.status, 0) << o.err;
    return read_lines(dir + "/a.jsonl")[0]["metadata"]["prompt_ids"].get<std::vector<int64_t>>();
  };
  EXPECT_EQ(prompt_of({}), tl::lvlm_prompt(lvlm, question + tl::kPopeQuestionSuffix).ids);
  EXPECT_EQ(prompt_of({"--question-suffix", ""}), tl::lvlm_prompt(lvlm, question).ids);
  EXPECT_EQ(prompt_of({"--question-template", "answer: {question}"}), tl::lvlm_prompt(lvlm, "answer: " + question).ids);
}

TEST(ToolsPopeTest, ChunksConcatenateToTheWholeRun) {
  const std::string dir = temp_dir("chunks");
  const std::string questions = eval_set_dir() + "/shapesworld_contrast.jsonl";
  const auto run_chunk = [&](const std::string& answers, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--questions", questions,          "--method", "agla",      "--itm",
                                     kItm,          "--lvlm",           kCaption,   "--answers", answers,
                                     "--quiet",     "--max-new-tokens", "3",        "--seed",    "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Output o = pope(args);
    EXPECT_EQ(o.status, 0) << o.err;
    return o;
  };
  const Output whole = run_chunk(dir + "/whole.jsonl", {});
  EXPECT_NE(whole.out.find("Partner present"), std::string::npos) << whole.out;
  run_chunk(dir + "/c0.jsonl", {"--num-chunks", "3", "--chunk-idx", "0"});
  run_chunk(dir + "/c1.jsonl", {"--num-chunks", "3", "--chunk-idx", "1"});
  const Output last = run_chunk(dir + "/c2.jsonl", {"--num-chunks", "3", "--chunk-idx", "2"});
  EXPECT_NE(last.out.find("--evaluate"), std::string::npos);
  std::vector<nlohmann::json> merged;
  for (const char* c : {"/c0.jsonl", "/c1.jsonl", "/c2.jsonl"})
    for (auto& line : read_lines(dir + c)) merged.push_back(line);
  std::vector<nlohmann::json> full = read_lines(dir + "/whole.jsonl");
  ASSERT_EQ(merged.size(), full.size());
  for (std::size_t i = 0; i < full.size(); ++i) {
    merged[i]["metadata"].erase("ipm_ms");  // wall-clock time, the only field that may differ
    full[i]["metadata"].erase("ipm_ms");
    EXPECT_EQ(merged[i], full[i]) << i;
  }
}

TEST(ToolsPopeTest, QuestionsGroupByImageAndTheImageCacheChangesNoAnswer) {
  const std::string dir = temp_dir("grouped");
  // Two images, their questions interleaved (x y x y): grouped, each image is read, encoded and
  // prefilled once; chunks hold whole images; answers come in file order and equal uncached ones.
  const auto source = read_lines(eval_set_dir() + "/shapesworld_pope_random.jsonl");
  std::size_t other = 1;
  while (other < source.size() && source[other]["image"] == source[0]["image"]) ++other;
  ASSERT_LT(other, source.size());
  std::vector<nlohmann::json> lines = {source[0], source[other], source[0], source[other]};
  for (std::size_t i = 2; i < 4; ++i) lines[i]["question_id"] = 100 + static_cast<int>(i);
  const std::string questions = dir + "/questions.jsonl";
  {
    std::ofstream out(questions);
    for (const auto& line : lines) out << line.dump() << "\n";
  }
  const auto run = [&](const std::string& method, const std::string& answers, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--questions", questions, "--image-folder", eval_set_dir() + "/images",
                                     "--method",    method,    "--itm",          kItm,
                                     "--lvlm",      kCaption,  "--answers",      answers,
                                     "--quiet",     "--max-new-tokens", "3"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Output o = pope(args);
    EXPECT_EQ(o.status, 0) << o.err;
    auto result = read_lines(answers);
    for (auto& line : result) line["metadata"].erase("ipm_ms");  // wall-clock time
    return result;
  };
  for (const std::string method : {"agla", "vcd", "regular"}) {
    const auto cached = run(method, dir + "/cached.jsonl", {});
    const auto uncached = run(method, dir + "/uncached.jsonl", {"--no-image-cache"});
    ASSERT_EQ(cached.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(cached[i]["question_id"], lines[i]["question_id"]) << method << " " << i;  // file order
      EXPECT_EQ(cached[i], uncached[i]) << method << " " << i;
    }
    const auto first = run(method, dir + "/c0.jsonl", {"--num-chunks", "2", "--chunk-idx", "0"});
    const auto second = run(method, dir + "/c1.jsonl", {"--num-chunks", "2", "--chunk-idx", "1"});
    ASSERT_EQ(first.size(), 2u);
    ASSERT_EQ(second.size(), 2u);
    for (const auto& line : first) EXPECT_EQ(line["image"], lines[0]["image"]);
    for (const auto& line : second) EXPECT_EQ(line["image"], lines[1]["image"]);
    EXPECT_EQ(first[0], cached[0]);
    EXPECT_EQ(first[1], cached[2]);
    EXPECT_EQ(second[0], cached[1]);
    EXPECT_EQ(second[1], cached[3]);
  }
}

TEST(ToolsPopeTest, CaptionSplitGivesChair) {
  const std::string dir = temp_dir("chair");
  const Output o =
      pope({"--questions", eval_set_dir() + "/shapesworld_captions.jsonl", "--method", "agla-released", "--itm", kItm,
            "--lvlm", kCaption, "--answers", dir + "/a.jsonl", "--max-new-tokens", "5", "--json", "--quiet"});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["split"], "captions");
  EXPECT_TRUE(j["metrics"].contains("chair_i"));
  EXPECT_TRUE(j["metrics"].contains("chair_s"));
  EXPECT_EQ(j["metrics"]["captions"], 2);
}

TEST(ToolsPopeTest, UnknownIpmWordsAreRecordedAndAllUnknownRefused) {
  const std::string dir = temp_dir("pope_unknown");
  const std::string questions = dir + "/q.jsonl";
  const std::string images = eval_set_dir() + "/images";
  const auto write = [&](const std::string& text) {
    std::ofstream(questions) << R"({"question_id": 1, "image": "sw_000000.png", "text": ")" << text
                             << R"(", "label": "yes"})"
                             << "\n";
  };
  const std::vector<std::string> args = {
      "--questions", questions, "--image-folder", images,           "--method",         "agla", "--itm",   kShippedItm,
      "--lvlm",      kCaption,  "--answers",      dir + "/a.jsonl", "--max-new-tokens", "2",    "--quiet", "--json"};
  write("Is there a zebra in the image?");
  const Output o = pope(args);
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_EQ(read_lines(dir + "/a.jsonl")[0]["metadata"]["itm_unknown_words"], (std::vector<std::string>{"zebra"}));
  EXPECT_EQ(nlohmann::json::parse(o.out)["items_with_itm_unknown_words"], 1);
  EXPECT_NE(o.err.find("warning: 1 of 1 IPM texts"), std::string::npos) << o.err;
  write("zebra xylophone quokka");
  const Output refused = pope(args);
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("question 1"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("outside the ITM model's vocabulary"), std::string::npos) << refused.err;
}

// Every method through agla_pope on the shipped ShapesWorld models: each answer records the
// method's parameters and the views it ran, and the views are the ones the method is defined by.
TEST(ToolsPopeTest, EveryMethodOnTheShippedModelsRecordsItsViews) {
  const std::string dir = temp_dir("pope_methods");
  const std::string questions = eval_set_dir() + "/shapesworld_pope_adversarial.jsonl";
  const auto run_method = [&](const std::string& method, const std::vector<std::string>& extra, std::uint64_t seed) {
    const std::string answers = dir + "/" + method + std::to_string(seed) + ".jsonl";
    std::vector<std::string> args = {"--questions", questions, "--method", method, "--itm", kShippedItm, "--lvlm",
                                     kShippedLvlm, "--answers", answers, "--json", "--quiet", "--threads", "1",
                                     "--seed", std::to_string(seed)};
    args.insert(args.end(), extra.begin(), extra.end());
    const Output o = pope(args);
    EXPECT_EQ(o.status, 0) << method << ": " << o.err;
    const nlohmann::json summary = nlohmann::json::parse(o.out);
    EXPECT_EQ(summary["parameters"]["method"], method);
    return read_lines(answers);
  };
  const std::vector<std::string> pool = {"horizontal flip", "vertical flip", "rotation", "color jitter",
                                         "gaussian blur",   "crop"};
  for (const tl::Method m : tl::all_methods()) {
    const std::string name = tl::method_name(m);
    const auto lines = run_method(name, {}, 1);
    ASSERT_EQ(lines.size(), 4u) << name;
    for (const auto& line : lines) {
      const nlohmann::json& meta = line["metadata"];
      const nlohmann::json& views = meta["views"];
      const std::vector<tl::LocalView> expected = tl::method_views(m);
      ASSERT_EQ(views.size(), expected.size()) << name;
      for (std::size_t k = 0; k < expected.size(); ++k)
        EXPECT_EQ(views[k]["source"], tl::local_view_name(expected[k])) << name;
      EXPECT_EQ(meta["parameters"]["beta"], tl::method_options(m, {}).beta) << name;
      EXPECT_EQ(meta["parameters"]["view_terms"].size(),
                static_cast<std::size_t>(tl::method_options(m, {}).extra_views()))
          << name;
      EXPECT_TRUE(line["text"] == "yes" || line["text"] == "no") << name << ": " << line["text"];
    }
    const nlohmann::json& view = lines[0]["metadata"]["views"];
    switch (m) {
      case tl::Method::Ritual:
        EXPECT_EQ(view[0]["kind"], "image");
        EXPECT_NE(std::find(pool.begin(), pool.end(), view[0]["transform"].get<std::string>()), pool.end());
        break;
      case tl::Method::Icd:
        EXPECT_EQ(view[0]["kind"], "text");
        EXPECT_EQ(view[0]["disturbance"], std::string(agla::views::default_icd_disturbance()));
        // The disturbed prompt is the instruction behind the disturbance (unknown words: [UNK]).
        EXPECT_GT(view[0]["prompt_ids"].size(), lines[0]["metadata"]["prompt_ids"].size());
        break;
      case tl::Method::M3id:
      case tl::Method::M3idLogits:
        EXPECT_EQ(view[0]["kind"], "no-image");
        EXPECT_EQ(lines[0]["metadata"]["parameters"]["space"], m == tl::Method::M3id ? "log-probs" : "logits");
        EXPECT_EQ(lines[0]["metadata"]["parameters"]["m3id_first_t"], 1);
        break;
      case tl::Method::Pai:
        // BLIP has no LLaMA attention: the logit part alone, and the record says so.
        EXPECT_TRUE(lines[0]["metadata"]["parameters"]["pai_attention"].is_null());
        EXPECT_TRUE(lines[0]["metadata"]["parameters"].contains("pai_attention_note"));
        EXPECT_EQ(lines[0]["metadata"]["parameters"]["greedy"], true);
        break;
      case tl::Method::Vacode: {
        // The chosen view is the pool's farthest from the original.
        const nlohmann::json& distances = view[0]["distances"];
        ASSERT_EQ(distances.size(), 7u);
        double best = -1;
        std::string chosen;
        for (const std::string& candidate : {"horizontal flip", "vertical flip", "rotation", "color jitter",
                                             "gaussian blur", "crop", "noise"})
          if (distances[candidate].get<double>() > best) best = distances[candidate].get<double>(), chosen = candidate;
        EXPECT_EQ(view[0]["selected"], chosen);
        break;
      }
      case tl::Method::AglaVcd:
        EXPECT_EQ(view[0]["source"], "ipm-mask");
        EXPECT_EQ(view[1]["source"], "noise");
        EXPECT_EQ(view[1]["noise_step"], 500);
        break;
      default:
        break;
    }
  }
  // The same seed draws the same transforms; another seed draws its own per question.
  const auto a = run_method("ritual", {}, 5), b = run_method("ritual", {}, 5);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["metadata"]["views"], b[i]["metadata"]["views"]);
    EXPECT_EQ(a[i]["text"], b[i]["text"]);
  }
  // Method options reach the views and the record.
  const auto icd = run_method("icd", {"--disturbance", "Is there a"}, 1);
  EXPECT_EQ(icd[0]["metadata"]["views"][0]["disturbance"], "Is there a");
  const auto m3id = run_method("m3id-logits", {"--m3id-first-t", "0", "--m3id-lambda", "0.1"}, 1);
  EXPECT_EQ(m3id[0]["metadata"]["parameters"]["m3id_first_t"], 0);
  EXPECT_EQ(m3id[0]["metadata"]["parameters"]["m3id_lambda"], 0.1);
}

TEST(ToolsPopeTest, PaiBoostsAttentionOnLlava) {
  const std::string dir = temp_dir("pope_pai");
  const std::string questions = dir + "/questions.jsonl";
  std::ofstream(questions)
      << R"({"question_id": 1, "image": "sw_000000.png", "text": "Is there a star?", "label": "yes", "prompt_ids": [1, 7, 95, 9]})"
      << "\n";
  const auto run_pai = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--questions", questions, "--image-folder", eval_set_dir() + "/images",
                                     "--method", "pai", "--lvlm", kLlava, "--answers", dir + "/a.jsonl",
                                     "--max-new-tokens", "4", "--json", "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Output o = pope(args);
    EXPECT_EQ(o.status, 0) << o.err;
    return read_lines(dir + "/a.jsonl")[0]["metadata"];
  };
  const nlohmann::json boosted = run_pai({"--pai-alpha", "50", "--pai-layers", "0,2"});
  EXPECT_EQ(boosted["parameters"]["pai_attention"]["alpha"], 50.0);
  EXPECT_EQ(boosted["parameters"]["pai_attention"]["start_layer"], 0);
  EXPECT_EQ(boosted["views"][0]["kind"], "no-image");
  const nlohmann::json logit_only = run_pai({"--pai-alpha", "0"});
  EXPECT_TRUE(logit_only["parameters"]["pai_attention"].is_null());
}

TEST(ToolsPopeTest, DrivesInstructBlipByPromptIdsInTheQuestionFile) {
  const std::string dir = temp_dir("pope_instructblip");
  const std::string questions = dir + "/questions.jsonl";
  std::ofstream(questions)
      << R"({"question_id": 1, "image": "sw_000000.png", "text": "Is there a star?", "label": "yes", "prompt_ids": [1, 23, 57, 9], "qformer_prompt_ids": [101, 37, 58, 102]})"
      << "\n"
      << R"({"question_id": 2, "image": "sw_000000.png", "text": "Is there a ring?", "label": "no", "prompt_ids": [1, 23, 40, 9]})"
      << "\n";
  const auto run_ib = [&](const std::string& method, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--questions", questions, "--image-folder", eval_set_dir() + "/images",
                                     "--method", method, "--lvlm", kInstructBlip, "--answers", dir + "/a.jsonl",
                                     "--max-new-tokens", "3", "--json", "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    return pope(args);
  };
  // Line 2 has no Q-Former ids of its own: --qformer-prompt-ids gives them.
  const Output missing = run_ib("m3id", {});
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("--qformer-prompt-ids"), std::string::npos) << missing.err;
  const Output o = run_ib("m3id", {"--qformer-prompt-ids", "101,12,102"});
  ASSERT_EQ(o.status, 0) << o.err;
  const auto lines = read_lines(dir + "/a.jsonl");
  EXPECT_EQ(lines[0]["metadata"]["qformer_prompt_ids"], (std::vector<int64_t>{101, 37, 58, 102}));
  EXPECT_EQ(lines[1]["metadata"]["qformer_prompt_ids"], (std::vector<int64_t>{101, 12, 102}));
  EXPECT_EQ(lines[1]["metadata"]["views"][0]["kind"], "no-image");
  // ICD disturbs the instruction's text, which a prompt of ids does not have.
  const Output icd = run_ib("icd", {"--qformer-prompt-ids", "101,12,102"});
  EXPECT_EQ(icd.status, 1);
  EXPECT_NE(icd.err.find("icd needs the instruction as text"), std::string::npos) << icd.err;
}

TEST(ToolsCaptionTest, MethodChoosesTheSecondCaption) {
  const std::string out_dir = temp_dir("caption_method");
  const DataDirScope scope(kToolsData);
  for (const std::string method : {"vcd", "ritual", "icd", "m3id", "vacode"}) {
    const Output o = caption({"--json", "--threads", "1", "--out", out_dir, "--timing-runs", "1", "--method", method,
                              "--max-new-tokens", "8"});
    ASSERT_EQ(o.status, 0) << method << ": " << o.err;
    const nlohmann::json j = nlohmann::json::parse(o.out);
    EXPECT_EQ(j["method"], method);
    EXPECT_EQ(j["parameters"]["method"], method);
    EXPECT_EQ(j["views"].size(), 1u) << method;
    EXPECT_TRUE(j[method]["ids"].is_array()) << method;
    EXPECT_FALSE(j.contains("agla")) << method;
  }
}

TEST(ToolsCaptionTest, DrivesInstructBlipByTokenIds) {
  const std::string out_dir = temp_dir("caption_instructblip");
  // The fixture's reference prompt: language model ids (BOS first) and the Q-Former's [CLS] ... [SEP].
  const std::vector<std::string> ids = {"--prompt-ids", "1,23,57,9,71,40,15", "--qformer-prompt-ids",
                                        "101,37,58,12,91,44,102"};
  std::vector<std::string> args = {"--itm",   kItm,    "--lvlm",         kInstructBlip, "--image",
                                   kInstructBlip + "/image.png", "--json", "--greedy", "--max-new-tokens",
                                   "7",       "--threads", "1",          "--out",       out_dir,
                                   "--timing-runs", "1"};
  args.insert(args.end(), ids.begin(), ids.end());
  const Output o = caption(args);
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["lvlm"]["kind"], "instructblip");
  EXPECT_EQ(j["qformer_prompt_ids"], (std::vector<int64_t>{101, 37, 58, 12, 91, 44, 102}));
  // Regular greedy decoding gives the reference's greedy tokens (transformers v4.37.2).
  const nlohmann::json reference = nlohmann::json::parse(std::ifstream(kInstructBlip + "/reference.json"));
  const std::vector<int64_t> greedy = reference["greedy_tokens"];
  const std::vector<int64_t> got = j["regular"]["ids"];
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got, std::vector<int64_t>(greedy.begin(), greedy.begin() + static_cast<std::ptrdiff_t>(got.size())));
  // PAI's attention part is taken by InstructBLIP.
  std::vector<std::string> pai = args;
  pai.insert(pai.end(), {"--method", "pai"});
  const Output p = caption(pai);
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(nlohmann::json::parse(p.out)["parameters"]["pai_attention"]["alpha"], 0.2);
  // Without the Q-Former's ids the prompt is incomplete, and the message says what is missing.
  std::vector<std::string> missing(args.begin(), args.end() - 2);
  const Output m = caption(missing);
  EXPECT_EQ(m.status, 1);
  EXPECT_NE(m.err.find("--qformer-prompt-ids"), std::string::npos) << m.err;
  // Q-Former ids for a model without a Q-Former are refused.
  const Output blip = caption({"--itm", kItm, "--lvlm", kCaption, "--image", kInstructBlip + "/image.png", "--out",
                               out_dir, "--prompt-ids", "126,5", "--qformer-prompt-ids", "101,102"});
  EXPECT_EQ(blip.status, 1);
  EXPECT_NE(blip.err.find("no Q-Former"), std::string::npos) << blip.err;
}

TEST(ToolsPopeTest, DrivesLlavaByPromptIdsInTheQuestionFile) {
  const std::string dir = temp_dir("pope_llava");
  const std::string questions = dir + "/questions.jsonl";
  {
    std::ofstream file(questions);
    file
        << R"({"question_id": 1, "image": "sw_000000.png", "text": "Is there a star in the image?", "label": "yes", "prompt_ids": [1, 7, 95, 9]})"
        << "\n"
        << R"({"question_id": 2, "image": "sw_000000.png", "text": "Is there a ring in the image?", "label": "no", "prompt_ids": [1, 8, 95, 9]})"
        << "\n";
  }
  const Output o =
      pope({"--questions", questions, "--image-folder", eval_set_dir() + "/images", "--method", "agla", "--itm", kItm,
            "--lvlm", kLlava, "--answers", dir + "/a.jsonl", "--max-new-tokens", "3", "--json", "--quiet"});
  ASSERT_EQ(o.status, 0) << o.err;
  const auto lines = read_lines(dir + "/a.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["metadata"]["prompt_ids"], (std::vector<int64_t>{1, 7, 95, 9}));
  EXPECT_EQ(lines[0]["text"].get<std::string>().front(), '[');  // no tokenizer: the ids in brackets
  // Token ids are not text: the run leaves them unscored, and --evaluate refuses them.
  const nlohmann::json summary = nlohmann::json::parse(o.out);
  EXPECT_TRUE(summary["metrics"].is_null()) << o.out;
  EXPECT_NE(summary.value("not_scored", "").find("token ids"), std::string::npos) << o.out;
  const Output scored = pope({"--evaluate", questions, dir + "/a.jsonl"});
  EXPECT_EQ(scored.status, 1);
  EXPECT_NE(scored.err.find("token ids"), std::string::npos) << scored.err;

  // Caption items carry no ids; --prompt-ids gives them one prompt.
  const Output captions = pope({"--questions", eval_set_dir() + "/shapesworld_captions.jsonl", "--method",
                                "agla-released", "--itm", kItm, "--lvlm", kLlava, "--answers", dir + "/c.jsonl",
                                "--prompt-ids", "1,95,9", "--max-new-tokens", "3", "--json", "--quiet"});
  ASSERT_EQ(captions.status, 0) << captions.err;
  EXPECT_EQ(read_lines(dir + "/c.jsonl")[1]["metadata"]["prompt_ids"], (std::vector<int64_t>{1, 95, 9}));
}

TEST(ToolsIpmTest, JsonMatchesTheFixtureAndPicturesAreWritten) {
  const std::string image = kData + "/blip/images/astronaut_32.png";
  const std::string out = temp_dir("ipm");
  const Output o = ipm({"--itm", kItm, "--image", image, "--prompt", "a woman in a space suit", "--threads", "1",
                        "--json", "--out", out});
  ASSERT_EQ(o.status, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);  // exactly one object on stdout
  EXPECT_EQ(j["image_size"].get<int64_t>(), 32);
  EXPECT_EQ(j["block"], 2);  // layers / 2 of the 4-layer fixture
  EXPECT_TRUE(j["unknown_words"].is_array());
  const auto fixtures = agla::io::read_safetensors(kData + "/blip/fixtures.safetensors");
  const at::Tensor want = fixtures.at("gradcam.i0.p0.avg");
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(j["grid"][r][c].get<double>(), want[r][c].item<double>(), 1e-6);
  EXPECT_NEAR(j["itc"].get<double>(), fixtures.at("itc.sim")[0][0].item<double>(), 1e-5);
  for (const char* png : {"heatmap.png", "mask.png", "augmented.png"}) {
    const at::Tensor written = agla::io::read_image(out + "/" + png);
    EXPECT_EQ(written.sizes(), (at::IntArrayRef{32, 32, 3})) << png;
  }
}

TEST(ToolsIpmTest, OptionErrorsExitWithStatusOne) {
  const std::string image = kData + "/blip/images/astronaut_32.png";
  const std::string dir = temp_dir("ipm_errors");
  expect_errors(
      tl::run_ipm,
      {
          {{"--itm", "/nonexistent", "--image", image, "--prompt", "x"}, "no config.json in '/nonexistent'"},
          {{"--itm", kItm, "--image", "/nonexistent.png", "--prompt", "x"}, "'/nonexistent.png' does not exist"},
          {{"--itm", kItm, "--image", dir, "--prompt", "x"}, "--image '" + dir + "' is a directory"},
          {{"--itm", kItm, "--image", kData + "/blip/fixtures.json", "--prompt", "x"}, "fixtures.json"},
          {{"--itm", kItm, "--image", image, "--prompt", "..."}, "empty after caption pre-processing"},
          {{"--itm", kItm, "--image", image, "--prompt", "x", "--block", "4"},
           "--block must be in [0, 2] for this model (4 text layers); got 4"},
          {{"--itm", kItm, "--image", image, "--prompt", "x", "--block", "3"},
           "--block 3 is the last text layer; GradCAM is zero there by construction"},
          {{"--itm", kItm, "--image", image, "--prompt", "x", "--block", "two"}, "--block expects an integer"},
          {{"--itm", kItm, "--image", image, "--prompt", "x", "--block", "-1"}, "--block must be in [0, 1000]"},
          {{"--itm", kItm, "--image", image, "--prompt", "x", "--threads", "5000"}, "--threads must be in"},
          {{"--itm", kItm, "--image", image}, "--prompt TEXT is required"},
          {{"--itm", kCaption, "--image", image, "--prompt", "x"}, "--itm needs a BLIP ITM checkpoint"},
          {{"--itm", kShippedItm, "--image", image, "--prompt", "zebra xylophone"},
           "every word of --prompt 'zebra xylophone' is outside the ITM model's vocabulary"},
          {{"--unknown"}, "unknown option '--unknown'"},
      });
  // Some unknown words: a warning, and the JSON lists them.
  const Output partial = ipm({"--itm", kShippedItm, "--image", kShippedSample, "--prompt",
                              "is there a zebra star", "--json", "--threads", "1"});
  ASSERT_EQ(partial.status, 0) << partial.err;
  EXPECT_EQ(nlohmann::json::parse(partial.out)["unknown_words"], (std::vector<std::string>{"zebra"}));
  EXPECT_NE(partial.err.find("warning"), std::string::npos);
}

TEST(ToolsShapesWorldTest, OptionsAreBoundedAndStatsHonourOut) {
  const std::string dir = temp_dir("shapesworld");
  expect_errors(
      tl::run_shapesworld,
      {
          {{}, "give --out DIR or --stats SCENES"},
          {{"--out", dir, "--questions-per-split", "1000000000"}, "--questions-per-split must be in [2, 10000]"},
          {{"--out", dir, "--questions-per-split", "7"}, "--questions-per-split must be even"},
          {{"--out", dir, "--captions", "-1"}, "--captions must be in [1, 10000]"},
          {{"--out", dir, "--threads", "-3"}, "--threads must be in [0, 1024]"},
          {{"--out", dir, "--size", "16"}, "--size must be in [32, 512]"},
          {{"--out", dir, "--seed", "x"}, "--seed expects an integer"},
          {{"--stats", "0"}, "--stats must be in [1, 10000000]"},
          {{"--out", ""}, "--out needs a directory"},
          {{"--bogus"}, "unknown option '--bogus'"},
      });
  std::ostringstream out, err;
  ASSERT_EQ(
      tl::run_shapesworld({"--stats", "50", "--out", dir, "--questions-per-split", "4", "--captions", "2"}, out, err),
      0)
      << err.str();
  std::ifstream stats(dir + "/shapesworld_stats.txt");
  const std::string written((std::istreambuf_iterator<char>(stats)), std::istreambuf_iterator<char>());
  EXPECT_NE(written.find("biased: 50 scenes"), std::string::npos) << written;
  EXPECT_EQ(out.str().substr(0, written.size()), written);
  EXPECT_EQ(read_lines(dir + "/shapesworld_pope_random.jsonl").size(), 4u);
}

TEST(ToolsTrainTest, OptionsAreBounded) {
  expect_errors(
      agla::train::run_train,
      {
          {{}, "--stage must be encoder, itm, lvlm or all"},
          {{"--stage", "lvlm"}, "--out DIR is required"},
          {{"--stage", "lvlm", "--out", "x", "--steps", "-1"}, "--steps must be in [0, 1000000]"},
          {{"--stage", "lvlm", "--out", "x", "--batch", "0"}, "--batch must be in [1, 1024]"},
          {{"--stage", "lvlm", "--out", "x", "--lr", "0"}, "--lr must be in (0, 1]"},
          {{"--stage", "lvlm", "--out", "x", "--checkpoint-every", "0"}, "--checkpoint-every must be in"},
          {{"--stage", "lvlm", "--out", "x", "--eval", "1"}, "--eval must be in [2, 100000]"},
          {{"--stage", "lvlm", "--out", "x", "--threads", "-1"}, "--threads must be in [0, 1024]"},
          {{"--stage", "lvlm", "--out", "x", "--bias", "odd"}, "--bias must be biased or control"},
          {{"--stage", "lvlm", "--out", "x", "--init", "/nonexistent"}, "--init '/nonexistent' does not exist"},
          {{"--stage", "all", "--out", "x"}, "--stage all needs --work DIR"},
          {{"--stage", "encoder", "--out", "x", "--eval-only"}, "reads the checkpoint in --work DIR"},
      });
}

TEST(ToolsProgramTest, BuiltProgramsExitOneOnBadOptions) {
  for (const std::string name : {"agla_caption", "agla_ipm", "agla_pope", "agla_shapesworld", "agla_train"}) {
    const std::string program = built_program(name);
    ASSERT_TRUE(fs::exists(program)) << program;
    std::string output;
    EXPECT_EQ(shell(quoted(program) + " --no-such-option 2>&1", output), 1) << name;
    EXPECT_NE(output.find("unknown option '--no-such-option'"), std::string::npos) << name << ": " << output;
    EXPECT_EQ(shell(quoted(program) + " --help", output), 0) << name;
  }
}

TEST(ToolsProgramTest, MultiThreadedRunsRestartWithPassiveWaiting) {
  const std::string program = built_program("agla_caption");
  const std::string out = temp_dir("restart");
  const std::string common = " --json --timing-runs 1 --max-new-tokens 2 --out " + quoted(out);
  const auto policy = [&](const std::string& env, const std::string& threads) {
    std::string output;
    EXPECT_EQ(shell(env + " " + quoted(program) + common + " --threads " + threads + " 2>/dev/null", output), 0)
        << output;
    const nlohmann::json j = nlohmann::json::parse(output);
    EXPECT_EQ(j["threads"], std::stoi(threads));
    return j["omp_wait_policy"].get<std::string>();
  };
  EXPECT_EQ(policy("env -u OMP_WAIT_POLICY", "2"), "PASSIVE");     // restarted once with the variable set
  EXPECT_EQ(policy("env OMP_WAIT_POLICY=ACTIVE", "2"), "ACTIVE");  // the user's choice stands
  EXPECT_EQ(policy("env -u OMP_WAIT_POLICY", "1"), "");            // one thread: nothing to wait for
}

TEST(ToolsProgramTest, ProgramsFindTheirDataWhenMoved) {
  const fs::path root = temp_dir("moved");
  const std::string built = built_program("agla_caption");
  const std::string args =
      " --json --threads 1 --timing-runs 1 --max-new-tokens 3 --out " + quoted(root.string() + "/o");
  std::string output;
  // The build tree's program uses its data link.
  EXPECT_EQ(shell("env -u AGLA_DATA_DIR " + quoted(built) + " --help", output), 0);
  EXPECT_NE(output.find("data directory: " + (fs::path(built).parent_path() / "data").string()), std::string::npos)
      << output;
  // A copy without data next to it fails with where it looked; AGLA_DATA_DIR points it at data.
  fs::create_directories(root / "alone");
  const std::string alone = (root / "alone" / "agla_caption").string();
  fs::copy_file(built, alone);
  EXPECT_EQ(shell("env -u AGLA_DATA_DIR " + quoted(alone) + args + " 2>&1", output), 1);
  EXPECT_NE(output.find("no data directory found"), std::string::npos) << output;
  EXPECT_NE(output.find((root / "alone" / "data").string()), std::string::npos) << output;
  EXPECT_EQ(shell("AGLA_DATA_DIR=" + quoted(kToolsData) + " " + quoted(alone) + args, output), 0) << output;
  EXPECT_EQ(nlohmann::json::parse(output)["image"], kShippedSample);
  // A data folder next to the moved program is found without the variable.
  fs::create_directory_symlink(kToolsData, root / "alone" / "data");
  EXPECT_EQ(shell("env -u AGLA_DATA_DIR " + quoted(alone) + args, output), 0) << output;
}

TEST(ToolsProgramTest, InstalledProgramsFindTheirData) {
  if (!AGLA_TOOLS_INSTALL) GTEST_SKIP() << "configured with AGLA_INSTALL=OFF";
  const fs::path root = temp_dir("install");
  const std::string prefix = (root / "prefix").string();
  std::string output;
  ASSERT_EQ(shell(std::string(AGLA_CMAKE_COMMAND) + " --install " + quoted(AGLA_BINARY_DIR) +
                      " --component tools --prefix " + quoted(prefix) + " 2>&1",
                  output),
            0)
      << output;
  const std::string installed = prefix + "/bin/agla_caption";
  ASSERT_TRUE(fs::exists(installed));
  ASSERT_TRUE(fs::exists(prefix + "/share/agla/data/models/shapesworld-lvlm/model.safetensors"));
  EXPECT_FALSE(fs::exists(prefix + "/include")) << "the tools component installs programs and data only";
  EXPECT_EQ(shell("env -u AGLA_DATA_DIR " + quoted(installed) + " --help", output), 0);
  EXPECT_NE(output.find("data directory: " + prefix + "/share/agla/data"), std::string::npos) << output;
  const std::string args =
      " --json --threads 1 --timing-runs 1 --max-new-tokens 3 --out " + quoted(root.string() + "/o");
  ASSERT_EQ(shell("env -u AGLA_DATA_DIR " + quoted(installed) + args, output), 0) << output;
  EXPECT_EQ(nlohmann::json::parse(output)["image"], prefix + "/share/agla/data/sample.png");
}
