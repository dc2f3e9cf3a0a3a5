// The tokenizer CLI as other tools call it: `dseek tokenize TOKENIZER --jsonl IN.jsonl`,
// `--file X --count`, `dseek detokenize --ids`, `dseek chat-format --messages`, and one-line
// errors with a non-zero exit for bad input.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <gtest/gtest.h>

#include "tokenizer_test_util.h"
#include "scratch_dir.h"

namespace dseek::tokenizer {
namespace {

struct Result {
  int code;
  std::string out, err;
};

// Per-process scratch directory: ctest runs these tests as parallel processes.
std::filesystem::path scratch_dir() {
  static const dseek::testing::ScratchDir dir("tokcli");
  return dir.path();
}

Result run(const std::string& args) {
  auto dir = scratch_dir();
  std::string out = (dir / "dseek_cli_out.txt").string(), err = (dir / "dseek_cli_err.txt").string();
  std::string cmd = std::string(DSEEK_BINARY) + " " + args + " >" + out + " 2>" + err;
  int rc = std::system(cmd.c_str());
  return {WEXITSTATUS(rc), testing::read_file(out), testing::read_file(err)};
}

std::string tmp_file(const std::string& name, const std::string& content) {
  auto p = scratch_dir() / name;
  std::ofstream(p, std::ios::binary) << content;
  return p.string();
}

const std::string kTok = testing::kTokenizerDir;

TEST(TokenizerCli, JsonlGoldenCases) {
  const std::string in = std::string(DSEEK_TEST_DATA) + "/tokenizer/deepseek-v3-cases.jsonl";
  auto r = run("tokenize " + kTok + " --jsonl " + in);
  ASSERT_EQ(r.code, 0) << r.err;
  auto rows = testing::read_jsonl(in);
  std::istringstream lines(r.out);
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    ASSERT_LT(i, rows.size());
    EXPECT_EQ(nlohmann::json::parse(line)["ids"], rows[i]["ids"]) << "line " << i + 1;
  }
  EXPECT_EQ(i, rows.size());
}

TEST(TokenizerCli, BosFileCountAndTokenizerJsonPath) {
  std::string in = tmp_file("dseek_cli_in.jsonl", "{\"text\": \"Hello world\"}\n");
  auto r = run("tokenize " + kTok + "/tokenizer.json --jsonl " + in + " --bos");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], nlohmann::json::parse("[0, 19923, 2058]"));
  std::string text = tmp_file("dseek_cli_text.txt", "Hello world\n你好世界");
  r = run("tokenize " + kTok + " --file " + text + " --count");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(testing::v3_tokenizer().encode("Hello world\n你好世界").value().size()) + "\n");
}

TEST(TokenizerCli, Detokenize) {
  auto r = run("detokenize " + kTok + " --ids 19923,2058");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world");
  r = run("detokenize " + kTok + " --ids 0,128803,19923 --skip-special --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], "<｜User｜>Hello");
}

TEST(TokenizerCli, ChatFormatV3) {
  std::string m = tmp_file("dseek_cli_msgs.json", R"([{"role": "user", "content": "Bonjour !"}])");
  auto r = run("chat-format " + kTok + " --messages " + m);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "<｜begin▁of▁sentence｜><｜User｜>Bonjour !<｜Assistant｜>");
  r = run("chat-format " + kTok + " --messages " + std::string(DSEEK_TEST_DATA) +
          "/chat/dsv32-tools-input.json --format v3.2 --thinking");
  ASSERT_EQ(r.code, 0) << r.err;
  std::string want = testing::read_file(std::string(DSEEK_TEST_DATA) + "/chat/dsv32-tools-expected.txt");
  want.pop_back();  // the file's final newline
  EXPECT_EQ(r.out, want);
}

TEST(TokenizerCli, ErrorsAreOneLineAndNonZero) {
  auto one_line_error = [](const Result& r, const std::string& needle, const std::string& out = "") {
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(r.out, out);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  std::string bad_utf8 = tmp_file("dseek_cli_bad.txt", "abc\xFF");
  one_line_error(run("tokenize " + kTok + " --file " + bad_utf8 + " --count"), "offset 3");
  std::string bad_jsonl = tmp_file("dseek_cli_bad.jsonl", "{\"text\": \"a\"}\n{\"txt\": 1}\n");
  // Lines before the bad one were already answered.
  one_line_error(run("tokenize " + kTok + " --jsonl " + bad_jsonl), "dseek_cli_bad.jsonl:2", "{\"ids\":[67]}\n");
  one_line_error(run("tokenize /nonexistent --jsonl " + bad_jsonl), "/nonexistent");
  std::string broken = tmp_file("dseek_cli_broken.json", "{\"model\": ");
  one_line_error(run("tokenize " + broken + " --file " + bad_utf8 + " --count"), "dseek_cli_broken.json");
  one_line_error(run("detokenize " + kTok + " --ids 1,x"), "'x'");
  one_line_error(run("detokenize " + kTok + " --ids 999999"), "999999");
  std::string bad_msgs = tmp_file("dseek_cli_bad_msgs.json", R"([{"role": "user", "content": 3}])");
  one_line_error(run("chat-format " + kTok + " --messages " + bad_msgs), "messages[0].content");
}

}  // namespace
}  // namespace dseek::tokenizer
