// The server's metrics in Prometheus' text exposition format (version 0.0.4), served at
// GET /metrics. Counters, gauges and histograms with fixed buckets; every update is thread-safe
// (the engine thread and the HTTP threads both record).
//
// Names (all prefixed dseek_):
//   requests_total{endpoint,status}        HTTP requests answered, by route and status code
//   prompt_tokens_total                    prompt tokens of admitted requests
//   prompt_tokens_cached_total             of those, reused from the prefix cache
//   generation_tokens_total                tokens generated
//   request_finish_total{reason}           stop | length | cancelled | error
//   time_to_first_token_seconds            histogram, from submit to the first generated token
//   time_per_output_token_seconds          histogram, between consecutive tokens of a sequence
//   batch_sequences                        histogram, sequences in each engine step
//   engine_steps_total                     forward passes run by the engine
//   queue_length                           gauge, requests waiting to join the batch
//   running_sequences                      gauge, sequences in the batch
//   kv_cache_pages_used / _cached / _total gauges, pages of the shared latent cache
//   kv_cache_usage_ratio                   gauge, used / total
//   preemptions_total                      sequences preempted for lack of cache pages
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace dseek::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implicit
  void observe(double v);
  // Prometheus lines for metric `name` (with _bucket, _sum, _count), after its # HELP/# TYPE.
  std::string render(const std::string& name) const;
  uint64_t count() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  void count_request(const std::string& endpoint, int status);
  void count_finish(const std::string& reason);
  void add_prompt_tokens(int64_t n, int64_t cached);
  void add_generated_tokens(int64_t n);
  void observe_ttft(double seconds) { ttft_.observe(seconds); }
  void observe_token_latency(double seconds) { tpot_.observe(seconds); }
  void observe_step(int64_t sequences);
  void count_preemption() { preemptions_.fetch_add(1); }
  void set_gauges(int64_t queued, int64_t running, int64_t pages_used, int64_t pages_cached, int64_t pages_total);

  std::string prometheus_text() const;

  // For tests and logs.
  int64_t generated_tokens() const { return generated_.load(); }
  int64_t steps() const { return steps_.load(); }
  int64_t max_batch_sequences() const { return max_batch_.load(); }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // guarded by mu_
  std::map<std::string, uint64_t> finishes_;                  // guarded by mu_
  std::atomic<int64_t> prompt_{0}, prompt_cached_{0}, generated_{0}, steps_{0}, max_batch_{0}, preemptions_{0};
  std::atomic<int64_t> queued_{0}, running_{0}, pages_used_{0}, pages_cached_{0}, pages_total_{0};
  Histogram ttft_, tpot_, batch_;
};

}  // namespace dseek::serve
