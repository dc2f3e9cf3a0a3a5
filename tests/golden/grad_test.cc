// Gradient parity with DeepSeek's reference model under PyTorch autograd (float32, naive
// attention, MTP excluded; tests/data/golden/grad): the loss within 1e-5 relative and every
// gradient tensor within 1e-3 x its max |value|, for the library (train::loss_and_gradients)
// and for `dseek grad` run as a user runs it; bad token files give one-line errors.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "../e2e/e2e_util.h"
#include "model/weights.h"
#include "test_util.h"
#include "train/model_grad.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

constexpr double kLossTolerance = 1e-5;  // relative

std::string grad_golden() { return golden_dir() + "/grad/tiny-v3.safetensors"; }
std::string tiny_v3() { return golden_dir() + "/models/tiny-v3"; }

std::unique_ptr<io::SafetensorsFile> open_golden() {
  auto f = io::SafetensorsFile::open(grad_golden());
  EXPECT_TRUE(f.ok()) << f.status().message();
  return f.ok() ? std::move(f.value()) : nullptr;
}

// Compares every `grad.*` tensor of `want` with got(name) (nullptr: missing) and the tensor
// sets both ways; prints the worst relative error.
template <typename Got>
void compare_gradients(const io::SafetensorsFile& want, const std::set<std::string>& got_names, Got got) {
  double worst = 0;
  std::string worst_name;
  std::set<std::string> want_names;
  for (const auto& [name, view] : want.tensors()) {
    if (name.rfind("grad.", 0) != 0) continue;
    want_names.insert(name);
    const std::vector<float> ref = read_f32(want, name);
    std::vector<float> mine;
    std::vector<int64_t> shape;
    if (!got(name, &mine, &shape)) {
      ADD_FAILURE() << "no gradient for " << name;
      continue;
    }
    EXPECT_EQ(shape, view.shape) << name;
    const double err = relative_error(mine, ref);
    EXPECT_LE(err, kGoldenTolerance) << name;
    if (err > worst) worst = err, worst_name = name;
  }
  // Autograd leaves no gradient (None) on an expert no token was routed to, so the golden file
  // omits it; we write zeros for it, as "a gradient for every weight" asks.
  for (const std::string& name : got_names) {
    if (want_names.count(name)) continue;
    std::vector<float> mine;
    std::vector<int64_t> shape;
    ASSERT_TRUE(got(name, &mine, &shape));
    EXPECT_NE(name.find(".experts."), std::string::npos) << "unexpected gradient " << name;
    EXPECT_TRUE(std::all_of(mine.begin(), mine.end(), [](float v) { return v == 0.0f; })) << name;
  }
  for (const std::string& name : want_names) EXPECT_TRUE(got_names.count(name)) << "missing " << name;
  std::printf("worst gradient error: %.3g x max|ref| (%s), %zu tensors\n", worst, worst_name.c_str(), want_names.size());
}

TEST(GradGolden, LibraryMatchesAutograd) {
  auto want = open_golden();
  ASSERT_NE(want, nullptr);
  auto weights = model::load_weights(tiny_v3());
  ASSERT_TRUE(weights.ok()) << weights.status().message();
  const std::vector<int32_t> tokens = read_i32(*want, "tokens");
  ASSERT_EQ(tokens.size(), 90u);

  auto result = train::loss_and_gradients(**weights, tokens);
  ASSERT_TRUE(result.ok()) << result.status().message();
  const double ref_loss = read_f32(*want, "loss").at(0);
  const double loss_err = std::fabs(result->loss - ref_loss) / std::fabs(ref_loss);
  std::printf("loss %.7f, reference %.7f, relative error %.3g\n", result->loss, ref_loss, loss_err);
  EXPECT_LE(loss_err, kLossTolerance);

  std::set<std::string> names;
  for (const auto& [name, g] : result->grads.tensors()) names.insert("grad." + name);
  compare_gradients(*want, names, [&](const std::string& name, std::vector<float>* v, std::vector<int64_t>* shape) {
    auto it = result->grads.tensors().find(name.substr(5));
    if (it == result->grads.tensors().end()) return false;
    *v = it->second.values;
    *shape = it->second.shape;
    return true;
  });
}

// The same checks through the command line, whose output format other tools read.
TEST(GradGolden, CommandWritesTheGoldenTensors) {
  auto want = open_golden();
  ASSERT_NE(want, nullptr);
  const ScratchDir scratch("grad");
  const fs::path dir = scratch.path();
  {
    std::ofstream f(dir / "tokens.json");
    f << "[";
    const std::vector<int32_t> tokens = read_i32(*want, "tokens");
    for (size_t i = 0; i < tokens.size(); ++i) f << (i ? ", " : "") << tokens[i];
    f << "]\n";
  }
  const CommandResult r = run_dseek("grad " + tiny_v3() + " --tokens " + (dir / "tokens.json").string() + " --out " +
                                    (dir / "out.safetensors").string() + " -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto got = io::SafetensorsFile::open((dir / "out.safetensors").string());
  ASSERT_TRUE(got.ok()) << got.status().message();
  const io::SafetensorsFile& g = *got.value();

  const io::TensorView* loss = g.find("loss");
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(loss->dtype, DType::kF32);
  EXPECT_EQ(loss->shape, std::vector<int64_t>{1});
  const double ref_loss = read_f32(*want, "loss").at(0);
  EXPECT_LE(std::fabs(read_f32(g, "loss").at(0) - ref_loss) / std::fabs(ref_loss), kLossTolerance);

  std::set<std::string> names;
  for (const auto& [name, view] : g.tensors())
    if (name != "loss") names.insert(name);
  compare_gradients(*want, names, [&](const std::string& name, std::vector<float>* v, std::vector<int64_t>* shape) {
    const io::TensorView* t = g.find(name);
    if (t == nullptr) return false;
    EXPECT_EQ(t->dtype, DType::kF32) << name;
    *v = read_f32(g, name);
    *shape = t->shape;
    return true;
  });
}

// Each bad tokens file: non-zero exit, one "dseek: error:" line naming the file and the problem,
// and no output file.
TEST(GradCommand, BadTokensFileIsOneLineError) {
  const ScratchDir scratch("grad-bad");
  const fs::path dir = scratch.path();
  std::string too_long = "[";
  for (int i = 0; i < 257; ++i) too_long += (i ? ",5" : "5");  // context of tiny-v3: 256
  too_long += "]";
  const std::map<std::string, std::pair<std::string, std::string>> cases = {
      // file stem -> (contents, a phrase the message must contain)
      {"object", {"{\"tokens\": [1, 2]}", "expected a JSON list of token ids"}},
      {"not-json", {"[1, 2,", ""}},  // the JSON reader words this one
      {"float", {"[1, 2.5, 3]", "expected an integer token id"}},
      {"string", {"[1, \"a\"]", "expected an integer token id"}},
      {"out-of-range", {"[1, 2, 512]", "outside the vocabulary [0, 512)"}},
      {"negative", {"[-1, 2]", "outside the vocabulary"}},
      {"one-token", {"[7]", "need at least 2"}},
      {"empty", {"[]", "need at least 2"}},
      {"too-long", {too_long, "exceed the context of 256"}},
  };
  for (const auto& [stem, c] : cases) {
    const fs::path tokens = dir / (stem + ".json");
    std::ofstream(tokens) << c.first;
    const fs::path out = dir / (stem + ".safetensors");
    const CommandResult r =
        run_dseek("grad " + tiny_v3() + " --tokens " + tokens.string() + " --out " + out.string() + " -t 1");
    EXPECT_NE(r.exit_code, 0) << stem;
    EXPECT_EQ(r.err.rfind("dseek: error: ", 0), 0u) << stem << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << stem << ": " << r.err;
    EXPECT_NE(r.err.find(tokens.string()), std::string::npos) << stem << ": " << r.err;
    EXPECT_NE(r.err.find(c.second), std::string::npos) << stem << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << stem;
  }
  const CommandResult missing = run_dseek("grad " + tiny_v3() + " --tokens " + (dir / "nope.json").string() +
                                          " --out " + (dir / "x.safetensors").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nope.json"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace dseek::testing
