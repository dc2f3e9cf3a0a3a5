// The server's metrics (serve::Metrics): the exposition text is parsed here by a small,
// independent reader of Prometheus' text format 0.0.4, and checked for what a scraper relies on:
// every sample belongs to a family announced by # HELP and # TYPE before it, histogram buckets
// are cumulative with ascending "le" ending at +Inf equal to _count, label values round-trip
// through escaping, and the numbers are the ones recorded.
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "serve/metrics.h"

namespace dseek::serve {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;  // as written
  size_t line = 0;
};

struct Exposition {
  std::map<std::string, size_t> help_line, type_line;  // family -> line number
  std::map<std::string, std::string> type;
  std::vector<Sample> samples;
  std::vector<std::string> errors;
};

bool is_name_char(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
         (!first && std::isdigit(static_cast<unsigned char>(c)));
}

double to_double(const std::string& v) {
  if (v == "+Inf") return INFINITY;
  if (v == "-Inf") return -INFINITY;
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  EXPECT_TRUE(end && *end == '\0') << "not a number: '" << v << "'";
  return d;
}

Exposition parse(const std::string& text) {
  Exposition e;
  if (!text.empty() && text.back() != '\n') e.errors.push_back("the text does not end with a line feed");
  std::istringstream in(text);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto fail = [&](const std::string& why) { e.errors.push_back("line " + std::to_string(n) + ": " + why + ": " + line); };
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream ls(line);
      std::string hash, kind, name;
      ls >> hash >> kind >> name;
      if (kind == "HELP") {
        if (e.help_line.count(name)) fail("second HELP");
        e.help_line[name] = n;
      } else if (kind == "TYPE") {
        std::string type;
        ls >> type;
        if (e.type_line.count(name)) fail("second TYPE");
        if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" && type != "untyped")
          fail("unknown type");
        e.type_line[name] = n;
        e.type[name] = type;
      }
      continue;
    }
    Sample s;
    s.line = n;
    size_t i = 0;
    while (i < line.size() && is_name_char(line[i], i == 0)) ++i;
    s.name = line.substr(0, i);
    if (s.name.empty()) {
      fail("no metric name");
      continue;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t start = i;
        while (i < line.size() && is_name_char(line[i], i == start)) ++i;
        const std::string label = line.substr(start, i - start);
        if (label.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          fail("bad label");
          break;
        }
        i += 2;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c != '\\') {
            value += c;
            continue;
          }
          if (i >= line.size()) break;
          const char esc = line[i++];
          if (esc == 'n') value += '\n';
          else if (esc == '\\' || esc == '"') value += esc;
          else fail("bad escape");
        }
        if (!closed) fail("unterminated label value");
        if (s.labels.count(label)) fail("repeated label");
        s.labels[label] = value;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) {
        fail("unterminated label set");
        continue;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      fail("no space before the value");
      continue;
    }
    s.value = line.substr(i + 1);
    if (s.value.empty() || s.value.find(' ') != std::string::npos) fail("bad value");
    e.samples.push_back(s);
  }
  return e;
}

// The family a sample belongs to: its own name, or a histogram's name without the suffix.
std::string family_of(const Exposition& e, const std::string& name) {
  if (e.type.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      if (e.type.count(base) && e.type.at(base) == "histogram") return base;
    }
  }
  return "";
}

// Every check that does not depend on the values; returns the parsed text.
Exposition check_well_formed(const std::string& text) {
  Exposition e = parse(text);
  for (const auto& err : e.errors) ADD_FAILURE() << err;
  for (const auto& [name, line] : e.type_line) EXPECT_TRUE(e.help_line.count(name)) << name << " has no HELP";
  for (const Sample& s : e.samples) {
    const std::string fam = family_of(e, s.name);
    EXPECT_FALSE(fam.empty()) << "line " << s.line << ": " << s.name << " has no # TYPE";
    if (fam.empty()) continue;
    EXPECT_TRUE(e.help_line.count(fam)) << fam << " has no # HELP";
    EXPECT_LT(e.type_line[fam], s.line) << fam << ": # TYPE after a sample";
    EXPECT_EQ(fam.rfind("dseek_", 0), 0u) << fam;
    if (e.type[fam] == "counter" || e.type[fam] == "histogram") {
      EXPECT_GE(to_double(s.value), 0) << s.name;
    }
  }
  // Histograms: per family (these have no other labels), buckets in order of ascending le,
  // cumulative, the last one +Inf and equal to _count; _sum and _count present once.
  for (const auto& [fam, type] : e.type) {
    if (type != "histogram") continue;
    std::vector<std::pair<double, double>> buckets;
    int sums = 0, counts = 0;
    double count = -1;
    for (const Sample& s : e.samples) {
      if (s.name == fam + "_bucket") {
        EXPECT_TRUE(s.labels.count("le")) << fam;
        if (!s.labels.count("le")) continue;
        buckets.emplace_back(to_double(s.labels.at("le")), to_double(s.value));
      } else if (s.name == fam + "_sum") {
        ++sums;
      } else if (s.name == fam + "_count") {
        ++counts;
        count = to_double(s.value);
      }
    }
    EXPECT_EQ(sums, 1) << fam;
    EXPECT_EQ(counts, 1) << fam;
    EXPECT_GE(buckets.size(), 2u) << fam;
    if (buckets.empty()) continue;
    for (size_t i = 1; i < buckets.size(); ++i) {
      EXPECT_LT(buckets[i - 1].first, buckets[i].first) << fam << ": le not ascending";
      EXPECT_LE(buckets[i - 1].second, buckets[i].second) << fam << ": buckets not cumulative";
    }
    EXPECT_TRUE(std::isinf(buckets.back().first)) << fam << ": no +Inf bucket";
    EXPECT_EQ(buckets.back().second, count) << fam << ": +Inf bucket != _count";
  }
  return e;
}

const Sample* find(const Exposition& e, const std::string& name, const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& s : e.samples)
    if (s.name == name && s.labels == labels) return &s;
  return nullptr;
}

double value(const Exposition& e, const std::string& name, const std::map<std::string, std::string>& labels = {}) {
  const Sample* s = find(e, name, labels);
  EXPECT_NE(s, nullptr) << name;
  return s ? to_double(s->value) : NAN;
}

TEST(Metrics, AFreshRegistryIsWellFormedAndListsEveryFamily) {
  Metrics m;
  const Exposition e = check_well_formed(m.prometheus_text());
  const std::map<std::string, std::string> want = {
      {"dseek_requests_total", "counter"},
      {"dseek_prompt_tokens_total", "counter"},
      {"dseek_prompt_tokens_cached_total", "counter"},
      {"dseek_generation_tokens_total", "counter"},
      {"dseek_request_finish_total", "counter"},
      {"dseek_time_to_first_token_seconds", "histogram"},
      {"dseek_time_per_output_token_seconds", "histogram"},
      {"dseek_batch_sequences", "histogram"},
      {"dseek_engine_steps_total", "counter"},
      {"dseek_queue_length", "gauge"},
      {"dseek_running_sequences", "gauge"},
      {"dseek_kv_cache_pages_used", "gauge"},
      {"dseek_kv_cache_pages_cached", "gauge"},
      {"dseek_kv_cache_pages_total", "gauge"},
      {"dseek_kv_cache_usage_ratio", "gauge"},
      {"dseek_preemptions_total", "counter"},
  };
  EXPECT_EQ(e.type, want);
  EXPECT_EQ(value(e, "dseek_time_to_first_token_seconds_count"), 0);
  EXPECT_EQ(value(e, "dseek_kv_cache_usage_ratio"), 0);
  for (const char* r : {"stop", "length", "cancelled", "error"})
    EXPECT_EQ(value(e, "dseek_request_finish_total", {{"reason", r}}), 0) << r;
}

TEST(Metrics, RecordedValuesAppearWithTheirLabels) {
  Metrics m;
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 429);
  m.count_request("/metrics", 200);
  m.count_finish("stop");
  m.count_finish("length");
  m.count_finish("length");
  m.add_prompt_tokens(100, 30);
  m.add_prompt_tokens(5, 0);
  m.add_generated_tokens(7);
  m.count_preemption();
  m.set_gauges(3, 4, 25, 5, 100);
  for (int n : {3, 1, 40}) m.observe_step(n);
  const Exposition e = check_well_formed(m.prometheus_text());
  EXPECT_EQ(value(e, "dseek_requests_total", {{"endpoint", "/v1/chat/completions"}, {"status", "200"}}), 2);
  EXPECT_EQ(value(e, "dseek_requests_total", {{"endpoint", "/v1/chat/completions"}, {"status", "429"}}), 1);
  EXPECT_EQ(value(e, "dseek_requests_total", {{"endpoint", "/metrics"}, {"status", "200"}}), 1);
  EXPECT_EQ(value(e, "dseek_request_finish_total", {{"reason", "length"}}), 2);
  EXPECT_EQ(value(e, "dseek_request_finish_total", {{"reason", "stop"}}), 1);
  EXPECT_EQ(value(e, "dseek_prompt_tokens_total"), 105);
  EXPECT_EQ(value(e, "dseek_prompt_tokens_cached_total"), 30);
  EXPECT_EQ(value(e, "dseek_generation_tokens_total"), 7);
  EXPECT_EQ(value(e, "dseek_preemptions_total"), 1);
  EXPECT_EQ(value(e, "dseek_engine_steps_total"), 3);
  EXPECT_EQ(value(e, "dseek_queue_length"), 3);
  EXPECT_EQ(value(e, "dseek_running_sequences"), 4);
  EXPECT_EQ(value(e, "dseek_kv_cache_pages_used"), 25);
  EXPECT_EQ(value(e, "dseek_kv_cache_pages_cached"), 5);
  EXPECT_EQ(value(e, "dseek_kv_cache_pages_total"), 100);
  EXPECT_DOUBLE_EQ(value(e, "dseek_kv_cache_usage_ratio"), 0.25);
  EXPECT_EQ(m.steps(), 3);
  EXPECT_EQ(m.max_batch_sequences(), 40);
  EXPECT_EQ(m.generated_tokens(), 7);
  // Batch sizes 3, 1, 40 against buckets 1, 2, 4, ..., 64: "le" includes the bound.
  const std::map<std::string, double> batch = {{"1", 1}, {"2", 1}, {"4", 2}, {"8", 2},
                                               {"16", 2}, {"32", 2}, {"64", 3}, {"+Inf", 3}};
  for (const auto& [le, n] : batch) EXPECT_EQ(value(e, "dseek_batch_sequences_bucket", {{"le", le}}), n) << le;
  EXPECT_EQ(value(e, "dseek_batch_sequences_sum"), 44);
}

TEST(Metrics, HistogramBucketsAreCumulativeAndEndAtTheCount) {
  Metrics m;
  for (double s : {0.001, 0.005, 0.007, 0.3, 2.0, 75.0}) m.observe_ttft(s);
  for (double s : {0.0005, 0.02, 20.0}) m.observe_token_latency(s);
  const Exposition e = check_well_formed(m.prometheus_text());
  EXPECT_EQ(value(e, "dseek_time_to_first_token_seconds_bucket", {{"le", "0.005"}}), 2);
  EXPECT_EQ(value(e, "dseek_time_to_first_token_seconds_bucket", {{"le", "0.01"}}), 3);
  EXPECT_EQ(value(e, "dseek_time_to_first_token_seconds_bucket", {{"le", "60"}}), 5);
  EXPECT_EQ(value(e, "dseek_time_to_first_token_seconds_bucket", {{"le", "+Inf"}}), 6);
  EXPECT_EQ(value(e, "dseek_time_to_first_token_seconds_count"), 6);
  EXPECT_NEAR(value(e, "dseek_time_to_first_token_seconds_sum"), 77.313, 1e-9);
  EXPECT_EQ(value(e, "dseek_time_per_output_token_seconds_bucket", {{"le", "0.001"}}), 1);
  EXPECT_EQ(value(e, "dseek_time_per_output_token_seconds_bucket", {{"le", "10"}}), 2);
  EXPECT_EQ(value(e, "dseek_time_per_output_token_seconds_count"), 3);

  Histogram h({1, 2});
  h.observe(0.5);
  h.observe(2);
  h.observe(NAN);
  EXPECT_EQ(h.count(), 3u);
  const std::string text = h.render("x");
  EXPECT_NE(text.find("x_bucket{le=\"1\"} 1\nx_bucket{le=\"2\"} 2\nx_bucket{le=\"+Inf\"} 3\n"), std::string::npos)
      << text;
}

TEST(Metrics, LabelValuesAreEscaped) {
  Metrics m;
  const std::string odd = "/v1/\"quoted\"\\back\nslash";
  m.count_request(odd, 400);
  m.count_finish("we\"ird");
  const std::string text = m.prometheus_text();
  EXPECT_NE(text.find("endpoint=\"/v1/\\\"quoted\\\"\\\\back\\nslash\""), std::string::npos) << text;
  const Exposition e = check_well_formed(text);
  EXPECT_EQ(value(e, "dseek_requests_total", {{"endpoint", odd}, {"status", "400"}}), 1);
  EXPECT_EQ(value(e, "dseek_request_finish_total", {{"reason", "we\"ird"}}), 1);
}

TEST(Metrics, ConcurrentUpdatesAreAllCounted) {
  Metrics m;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&m, t] {
      for (int i = 0; i < 1000; ++i) {
        m.observe_token_latency(0.01);
        m.observe_step(1 + (i + t) % 8);
        m.add_generated_tokens(1);
        m.count_request("/v1/completions", 200);
        if (i % 100 == 0) (void)m.prometheus_text();
      }
    });
  for (auto& th : threads) th.join();
  const Exposition e = check_well_formed(m.prometheus_text());
  EXPECT_EQ(value(e, "dseek_time_per_output_token_seconds_count"), 4000);
  EXPECT_EQ(value(e, "dseek_batch_sequences_count"), 4000);
  EXPECT_EQ(value(e, "dseek_generation_tokens_total"), 4000);
  EXPECT_EQ(value(e, "dseek_requests_total", {{"endpoint", "/v1/completions"}, {"status", "200"}}), 4000);
  EXPECT_EQ(m.max_batch_sequences(), 8);
}

}  // namespace
}  // namespace dseek::serve
