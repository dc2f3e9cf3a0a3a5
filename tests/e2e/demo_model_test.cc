// The shipped demo model (models/demo, made by scripts/train_demo.sh --install): it is what
// dseek run/chat/serve load without -m, it predicts held-out English and French text far better
// than chance, and it answers in the language it is addressed in.
//
// The held-out excerpts in tests/data/demo are the first paragraphs of the ELTeC validation
// files, novels the model never saw in training.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "e2e_util.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

std::string demo_model() { return std::string(DSEEK_SOURCE_DIR) + "/models/demo"; }
std::string demo_data(const std::string& name) { return std::string(DSEEK_TEST_DATA) + "/demo/" + name; }

// Mean next-token loss in nats from dseek perplexity's summary line ("nll X nats/token").
double held_out_nll(const std::string& file) {
  const auto r = run_dseek("perplexity -m " + demo_model() + " --file " + file + " --ctx 256 -t 2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  const std::string all = r.out + r.err;
  if (!std::regex_search(all, m, std::regex(R"(nll ([0-9.]+) nats/token)"))) {
    ADD_FAILURE() << "no 'nll X nats/token' in: " << all;
    return NAN;
  }
  return std::stod(m[1]);
}

// How many words of `text` are among a language's commonest function words.
int count_words(const std::string& text, const std::set<std::string>& words) {
  std::string lower;
  for (char ch : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::istringstream in(std::regex_replace(lower, std::regex(R"([^a-z'àâçéèêëîïôûùüÿœ]+)"), " "));
  int n = 0;
  for (std::string w; in >> w;) n += words.count(w) ? 1 : 0;
  return n;
}

const std::set<std::string> kEnglish = {"the", "and", "of", "to", "a", "in", "he", "she", "was", "that",
                                        "it", "his", "her", "with", "had", "i", "you", "not", "for", "is"};
const std::set<std::string> kFrench = {"le", "la", "les", "de", "des", "et", "il", "elle", "un", "une",
                                       "que", "qui", "dans", "ne", "pas", "je", "vous", "est", "son", "sa"};

TEST(DemoModel, IsTheDefaultModel) {
  ASSERT_TRUE(fs::exists(demo_model() + "/model.safetensors")) << "scripts/train_demo.sh --install makes it";
  const auto r = run_dseek("run -p 'Il était une fois' -n 4 --seed 1 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("loaded " + demo_model()), std::string::npos) << r.err;
}

// Chance is ln(8192) = 9.01 nats (uniform over the vocabulary); the unigram distribution of the
// training tokens gives 7.13 (English) and 7.46 (French) nats on these excerpts. The demo model
// must be far below both in each language.
TEST(DemoModel, PredictsHeldOutEnglishAndFrench) {
  for (const char* lang : {"en", "fr"}) {
    const double nll = held_out_nll(demo_data(std::string("valid-") + lang + ".txt"));
    EXPECT_LT(nll, 5.0) << lang << ": held-out loss " << nll << " nats/token";
  }
}

TEST(DemoModel, AnswersInTheLanguageItIsAddressedIn) {
  struct Case {
    std::string prompt;
    bool french;
  };
  const Case cases[] = {{"The old man looked at the house and", false},
                        {"She opened the letter and read it twice.", false},
                        {"Le vieux paysan regarda la maison et", true},
                        {"Elle ouvrit la lettre et la relut deux fois.", true}};
  for (const Case& c : cases) {
    int en = 0, fr = 0;
    for (int seed = 1; seed <= 3; ++seed) {
      const auto r = run_dseek("run -p '" + c.prompt + "' -n 48 -t 2 --seed " + std::to_string(seed));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      en += count_words(r.out, kEnglish);
      fr += count_words(r.out, kFrench);
    }
    if (c.french) {
      EXPECT_GT(fr, 2 * en) << c.prompt << ": French words " << fr << ", English words " << en;
    } else {
      EXPECT_GT(en, 2 * fr) << c.prompt << ": English words " << en << ", French words " << fr;
    }
  }
}

}  // namespace
}  // namespace dseek::testing
