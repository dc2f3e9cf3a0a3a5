#include "serve/metrics.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace dseek::serve {

namespace {

// Prometheus label values escape backslash, double quote and line feed; HELP text escapes
// backslash and line feed only (text format 0.0.4).
std::string escape_label(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char ch : v) {
    if (ch == '\\') out += "\\\\";
    else if (ch == '"') out += "\\\"";
    else if (ch == '\n') out += "\\n";
    else out += ch;
  }
  return out;
}

// Go-style floats as Prometheus writes them: shortest round trip, "+Inf", "-Inf", "NaN".
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void family(std::string* out, const std::string& name, const char* type, const char* help) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void sample(std::string* out, const std::string& name, double v) { *out += fmt::format("{} {}\n", name, number(v)); }

void max_into(std::atomic<int64_t>* a, int64_t v) {
  int64_t cur = a->load();
  while (v > cur && !a->compare_exchange_weak(cur, v)) {
  }
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  // Bucket i counts bounds_[i-1] < v <= bounds_[i] (Prometheus' "le"); NaN lands in +Inf.
  const size_t i = std::isnan(v) ? bounds_.size()
                                 : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                                       bounds_.begin());
  std::lock_guard lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard lock(mu_);
  return count_;
}

std::string Histogram::render(const std::string& name) const {
  std::lock_guard lock(mu_);
  std::string out;
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, le, cumulative);
  }
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, number(sum_), name, count_);
  return out;
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      batch_({1, 2, 4, 8, 16, 32, 64}) {
  // Every finish reason is shown from the start, so rates over them never begin mid-series.
  for (const char* r : {"stop", "length", "cancelled", "error"}) finishes_[r] = 0;
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::count_finish(const std::string& reason) {
  std::lock_guard lock(mu_);
  ++finishes_[reason];
}

void Metrics::add_prompt_tokens(int64_t n, int64_t cached) {
  prompt_.fetch_add(n);
  prompt_cached_.fetch_add(cached);
}

void Metrics::add_generated_tokens(int64_t n) { generated_.fetch_add(n); }

void Metrics::observe_step(int64_t sequences) {
  steps_.fetch_add(1);
  max_into(&max_batch_, sequences);
  batch_.observe(static_cast<double>(sequences));
}

void Metrics::set_gauges(int64_t queued, int64_t running, int64_t pages_used, int64_t pages_cached,
                         int64_t pages_total) {
  queued_.store(queued);
  running_.store(running);
  pages_used_.store(pages_used);
  pages_cached_.store(pages_cached);
  pages_total_.store(pages_total);
}

std::string Metrics::prometheus_text() const {
  std::string out;
  {
    std::lock_guard lock(mu_);
    family(&out, "dseek_requests_total", "counter", "HTTP requests answered, by route and status code.");
    for (const auto& [key, n] : requests_)
      out += fmt::format("dseek_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", escape_label(key.first),
                         key.second, n);
    family(&out, "dseek_request_finish_total", "counter", "Generation requests finished, by reason.");
    for (const auto& [reason, n] : finishes_)
      out += fmt::format("dseek_request_finish_total{{reason=\"{}\"}} {}\n", escape_label(reason), n);
  }
  const auto counter = [&](const char* name, const char* help, const std::atomic<int64_t>& v) {
    family(&out, name, "counter", help);
    sample(&out, name, static_cast<double>(v.load()));
  };
  const auto gauge = [&](const char* name, const char* help, double v) {
    family(&out, name, "gauge", help);
    sample(&out, name, v);
  };
  const auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    family(&out, name, "histogram", help);
    out += h.render(name);
  };
  counter("dseek_prompt_tokens_total", "Prompt tokens of admitted requests.", prompt_);
  counter("dseek_prompt_tokens_cached_total", "Prompt tokens reused from the prefix cache.", prompt_cached_);
  counter("dseek_generation_tokens_total", "Tokens generated.", generated_);
  counter("dseek_engine_steps_total", "Forward passes run by the engine.", steps_);
  counter("dseek_preemptions_total", "Sequences preempted for lack of cache pages.", preemptions_);
  histogram("dseek_time_to_first_token_seconds", "Time from submit to the first generated token.", ttft_);
  histogram("dseek_time_per_output_token_seconds", "Time between consecutive tokens of a sequence.", tpot_);
  histogram("dseek_batch_sequences", "Sequences in each engine step.", batch_);
  gauge("dseek_queue_length", "Requests waiting to join the batch.", static_cast<double>(queued_.load()));
  gauge("dseek_running_sequences", "Sequences in the running batch.", static_cast<double>(running_.load()));
  const int64_t used = pages_used_.load(), total = pages_total_.load();
  gauge("dseek_kv_cache_pages_used", "Pages of the shared latent cache held by sequences.",
        static_cast<double>(used));
  gauge("dseek_kv_cache_pages_cached", "Unreferenced pages kept for prefix reuse.",
        static_cast<double>(pages_cached_.load()));
  gauge("dseek_kv_cache_pages_total", "Pages of the shared latent cache.", static_cast<double>(total));
  gauge("dseek_kv_cache_usage_ratio", "Used pages over total pages.",
        total > 0 ? static_cast<double>(used) / static_cast<double>(total) : 0.0);
  return out;
}

}  // namespace dseek::serve
