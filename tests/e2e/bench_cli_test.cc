// `dseek bench` as a user runs it, on the tiny-v3 golden checkpoint: every JSON figure is
// there and the derived figures agree with the measured ones (no speed thresholds).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"

namespace {

namespace fs = std::filesystem;

using dseek::testing::CommandResult;
using dseek::testing::run_dseek;

const std::string kTinyV3 = std::string(DSEEK_TEST_DATA) + "/golden/models/tiny-v3";

void expect_rel_near(double got, double want, double rel, const char* what) {
  EXPECT_NEAR(got, want, rel * std::abs(want)) << what;
}

TEST(BenchCli, JsonFiguresArePresentAndConsistent) {
  const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 16 -n 4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);  // stdout is exactly one JSON object
  for (const char* key :
       {"prefill_tokens_per_s", "prefill_seconds", "decode_tokens_per_s", "decode_seconds", "active_bytes_per_token",
        "active_bytes_non_expert", "active_bytes_routed", "active_bytes_embedding_row", "prefill_flops",
        "prefill_flops_per_s", "mem_read_bandwidth_bytes_per_s", "peak_fma_flops_per_s", "decode_efficiency",
        "prefill_efficiency", "peak_rss_bytes", "weight_bytes_total", "kv_cache_bytes", "threads",
        "weights_read_bytes_per_s", "weights_read_bytes", "decode_weights_efficiency",
        "weights_read_bytes_per_s_before_decode", "weights_read_bytes_per_s_after_decode"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_number()) << key << " in " << r.out;
    EXPECT_TRUE(std::isfinite(j[key].get<double>())) << key;
    EXPECT_GT(j[key].get<double>(), 0.0) << key;
  }
  EXPECT_EQ(j["prompt_tokens"], 16);
  EXPECT_EQ(j["decode_tokens"], 4);
  EXPECT_EQ(j["context_tokens"], 0);
  EXPECT_EQ(j["architecture"], "DeepseekV3ForCausalLM");

  const double tps = j["decode_tokens_per_s"], bytes = j["active_bytes_per_token"];
  const double bw = j["mem_read_bandwidth_bytes_per_s"], peak = j["peak_fma_flops_per_s"];
  // The efficiencies are the documented ratios of the printed figures.
  expect_rel_near(j["decode_efficiency"], tps * bytes / bw, 1e-9, "decode_efficiency");
  expect_rel_near(j["decode_weights_efficiency"], tps * bytes / j["weights_read_bytes_per_s"].get<double>(), 1e-9,
                  "decode_weights_efficiency");
  // The weights' bandwidth is the better of the measurements right before and after the decode.
  EXPECT_EQ(j["weights_read_bytes_per_s"].get<double>(),
            std::max(j["weights_read_bytes_per_s_before_decode"].get<double>(),
                     j["weights_read_bytes_per_s_after_decode"].get<double>()));
  // The weights measurement reads every tensor of the checkpoint once per pass.
  EXPECT_EQ(j["weights_read_bytes"].get<uint64_t>(), j["weight_bytes_total"].get<uint64_t>());
  EXPECT_EQ(j["compute_type"], "f32");
  expect_rel_near(j["prefill_flops_per_s"], j["prefill_flops"].get<double>() / j["prefill_seconds"].get<double>(),
                  1e-9, "prefill_flops_per_s");
  expect_rel_near(j["prefill_efficiency"], j["prefill_flops_per_s"].get<double>() / peak, 1e-9, "prefill_efficiency");
  expect_rel_near(j["prefill_tokens_per_s"].get<double>() * j["prefill_seconds"].get<double>(), 16, 1e-9, "prefill");
  expect_rel_near(tps * j["decode_seconds"].get<double>(), 4, 1e-9, "decode");
  // Active bytes: the parts add up, and equal the hand count of bench_test (tiny-v3, BF16).
  EXPECT_EQ(j["active_bytes_non_expert"].get<uint64_t>() + j["active_bytes_routed"].get<uint64_t>() +
                j["active_bytes_embedding_row"].get<uint64_t>(),
            j["active_bytes_per_token"].get<uint64_t>());
  EXPECT_EQ(j["active_bytes_per_token"].get<uint64_t>(), 2618624u);
  EXPECT_LT(j["active_bytes_per_token"].get<uint64_t>(), j["weight_bytes_total"].get<uint64_t>());
  // 20 positions in the cache, 3 layers of (64 + 16) float32 latent values each.
  EXPECT_EQ(j["kv_cache_bytes"].get<int64_t>(), 20 * 3 * 80 * 4);
}

// --paired K: the decode in blocks of K tokens with a read of the weights around each; the
// summary figures are recomputed here from the blocks the JSON lists.
TEST(BenchCli, PairedDecodeBlocksAndTheirMedian) {
  const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 8 --paired 3 --bw-mib 64 -t 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("paired_blocks")) << r.out;
  const auto& blocks = j["paired_blocks"];
  ASSERT_EQ(blocks.size(), 3u);  // 3 + 3 + 2 tokens
  const double bytes = j["active_bytes_per_token"];
  int64_t tokens = 0;
  double seconds = 0, fastest = 0;
  std::vector<double> eff;
  for (size_t b = 0; b < blocks.size(); ++b) {
    const auto& k = blocks[b];
    EXPECT_EQ(k["tokens"].get<int64_t>(), b < 2 ? 3 : 2);
    EXPECT_GT(k["seconds"].get<double>(), 0.0);
    EXPECT_GT(k["bytes_per_s_before"].get<double>(), 0.0);
    if (b > 0) EXPECT_EQ(k["bytes_per_s_before"], blocks[b - 1]["bytes_per_s_after"]);  // one probe between blocks
    tokens += k["tokens"].get<int64_t>();
    seconds += k["seconds"].get<double>();
    fastest = std::max({fastest, k["bytes_per_s_before"].get<double>(), k["bytes_per_s_after"].get<double>()});
    eff.push_back(k["tokens"].get<double>() * bytes / k["seconds"].get<double>() /
                  ((k["bytes_per_s_before"].get<double>() + k["bytes_per_s_after"].get<double>()) / 2));
  }
  EXPECT_EQ(tokens, 8);
  expect_rel_near(seconds, j["decode_seconds"], 1e-9, "decode time is the blocks' time, probes excluded");
  std::sort(eff.begin(), eff.end());
  expect_rel_near(j["paired_decode_efficiency_median"], eff[1], 1e-9, "median of 3 blocks");
  expect_rel_near(j["paired_decode_efficiency_min"], eff[0], 1e-9, "min");
  expect_rel_near(j["paired_decode_efficiency_max"], eff[2], 1e-9, "max");
  int fast = 0;
  for (const auto& k : blocks)
    fast += std::min(k["bytes_per_s_before"].get<double>(), k["bytes_per_s_after"].get<double>()) >= 0.8 * fastest;
  EXPECT_EQ(j["paired_fast_blocks"].get<int>(), fast);
  // Without --paired the JSON has no such keys.
  const CommandResult plain = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --bw-mib 64 -t 1 --json");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_FALSE(nlohmann::json::parse(plain.out).contains("paired_blocks"));
}

TEST(BenchCli, TextReportHasEveryLine) {
  const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 8 -n 2 --ctx 8 --reps 2 --bw-mib 64 -t 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* line : {"threads:     1", "context:     8 tokens", "prefill:", "(best of 2)", "decode:",
                           "active weight bytes / token: 2.62 MB", "prefill FLOPs:", "memory read bandwidth:", "weights read bandwidth:",
                           "decode efficiency against the weights' own memory:",
                           "peak FP32 FMA:", "decode efficiency:", "prefill efficiency:", "peak RSS:", "summary:"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " in\n" << r.out;
}

// The KV cache type by llama.cpp's spelling (-ctk) and dseek's, and a random context: the
// report says what was used, and the cache holds the context's rows in that type.
TEST(BenchCli, CacheTypeSpellingsAndRandomContext) {
  for (const std::string flag : {"-ctk bf16", "-ctk=bf16", "--cache-type-k bf16", "--ctk bf16"}) {
    const CommandResult r =
        run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --ctx 16 --ctx-fill random --bw-mib 16 --json " + flag);
    ASSERT_EQ(r.exit_code, 0) << flag << ": " << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["kv_cache_type"], "bf16") << flag;
    EXPECT_EQ(j["context_fill"], "random") << flag;
    EXPECT_EQ(j["context_tokens"], 16) << flag;
    // 22 positions (16 + 4 + 2), 3 layers of (64 + 16) bfloat16 latent values each.
    EXPECT_EQ(j["kv_cache_bytes"].get<int64_t>(), 22 * 3 * 80 * 2) << flag;
  }
  const CommandResult bad = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 -ctk q9");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("cache-type-k"), std::string::npos) << bad.err;
  const CommandResult fill = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --ctx 8 --ctx-fill zeros");
  EXPECT_NE(fill.exit_code, 0);
  EXPECT_NE(fill.err.find("ctx-fill"), std::string::npos) << fill.err;
}

// The report names the kernel family and the optional decode paths in use: DSEEK_ISA picks the
// family, DSEEK_FP8_DOT=0 / DSEEK_INT8_DOT=0 switch their paths off, and --dtype bf16 names the
// vdpbf16ps path instead of GFNI where the CPU has it.
TEST(BenchCli, NamesTheKernelsInUse) {
  auto kernels = [](const std::string& env, const std::string& flags) {
    const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --bw-mib 16 --json " + flags);
    EXPECT_EQ(r.exit_code, 0) << env << ": " << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out)["kernels"].get<std::string>() : std::string();
  };
  ::setenv("DSEEK_ISA", "scalar", 1);
  EXPECT_EQ(kernels("scalar", ""), "scalar");
  ::unsetenv("DSEEK_ISA");
  const std::string best = kernels("default", "");
  EXPECT_TRUE(best.rfind("avx512", 0) == 0 || best.rfind("avx2", 0) == 0 || best == "scalar") << best;
  ::setenv("DSEEK_FP8_DOT", "0", 1);
  ::setenv("DSEEK_INT8_DOT", "0", 1);
  const std::string plain = kernels("no optional paths", "");
  EXPECT_EQ(plain.find("GFNI"), std::string::npos) << plain;
  EXPECT_EQ(plain.find("VNNI"), std::string::npos) << plain;
  EXPECT_EQ(plain.find("decode:"), std::string::npos) << plain;
  ::unsetenv("DSEEK_INT8_DOT");
  ::setenv("DSEEK_FP8_DOT", "1", 1);
  const std::string f32 = kernels("fp8 on", ""), bf16 = kernels("fp8 on, bf16", "--dtype bf16");
  ::unsetenv("DSEEK_FP8_DOT");
  if (f32.find("GFNI") != std::string::npos) {
    EXPECT_EQ(bf16.find("GFNI"), std::string::npos) << bf16;  // bf16 compute: the vdpbf16ps path
  }
  if (bf16.find("vdpbf16ps") != std::string::npos) {
    EXPECT_EQ(f32.find("vdpbf16ps"), std::string::npos) << f32;
  }
  const CommandResult text = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --bw-mib 16");
  EXPECT_NE(text.out.find("kernels " + best), std::string::npos) << text.out;
}

// --dtype as vLLM spells it: the report names the compute type; an unknown one is an error that
// names the flag.
TEST(BenchCli, ComputeTypeFlag) {
  for (const std::string flag : {"--dtype bf16", "--dtype bfloat16", "--dtype=bf16"}) {
    const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --bw-mib 16 --json " + flag);
    ASSERT_EQ(r.exit_code, 0) << flag << ": " << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["compute_type"], "bf16") << flag;
  }
  const CommandResult bad = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --dtype fp16");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--dtype"), std::string::npos) << bad.err;
}

// --no-mmap (llama.cpp's flag): the report says where the weights were read from.
TEST(BenchCli, NoMmapFlag) {
  for (const std::string flag : {"", "--no-mmap"}) {
    const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --bw-mib 16 --json " + flag);
    ASSERT_EQ(r.exit_code, 0) << flag << ": " << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["weights_memory"], flag.empty() ? "mmap" : "anonymous") << flag;
  }
  const CommandResult text = run_dseek("bench -m " + kTinyV3 + " -p 4 -n 2 --bw-mib 16 --no-mmap");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("copied into memory (--no-mmap)"), std::string::npos) << text.out;
}

TEST(BenchCli, TooLongARunIsAOneLineError) {
  // tiny-v3 has max_position_embeddings 256.
  const CommandResult r = run_dseek("bench -m " + kTinyV3 + " -p 200 -n 100 --bw-mib 64");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("max_position_embeddings 256"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

}  // namespace
