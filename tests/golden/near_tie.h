// Following the reference through the V3.2 indexer's near-ties.
//
// The lightning indexer keeps the index_topk best of scores computed from FP8 (e4m3) queries and
// keys. A change of float32 summation order anywhere upstream (a SIMD kernel, a batch of another
// size) moves an activation by ~1e-7, which now and then moves one FP8 rounding of the indexer's
// q or k by a whole e4m3 step, and that is enough to swap the k-th and (k+1)-th keys where their
// scores are within ~1e-3 of each other. Neither side is more right than the other; the
// reference simply fell on one. Such a swap changes the logits far beyond the golden tolerance.
//
// NearTieSearch runs a computation once, recording every row whose k-th and (k+1)-th scores are
// within kNearTieMargin (relative) of each other. If the result does not match the reference,
// it runs it again with the selection flipped at the closest near-ties (one at a time, then two
// at a time), and keeps the first that does. The test then checks the result as usual, so a
// real error still fails: only selections that differ from ours at a near-tie are tried.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "model/indexer.h"

namespace dseek::testing {

// Relative gap of the k-th and (k+1)-th scores below which a row counts as a near-tie: one e4m3
// step (2^-3 of a value) on one product of a 16-head x 128 dot product moves a score by far less
// than this, so every swap summation order can cause is among the candidates.
constexpr double kNearTieMargin = 1e-2;

// A row's selection flipped: at `layer` (indexer_select call, modulo the number of layers) and
// query `position`, `in` replaces `out`.
struct TieFlip {
  int64_t layer = 0, position = 0;
  int32_t out = 0, in = 0;
  double margin = 0;  // (kth - next) / |kth|
  std::string describe() const {
    return "layer " + std::to_string(layer) + " query " + std::to_string(position) + ": key " + std::to_string(in) +
           " for key " + std::to_string(out) + " (scores " + std::to_string(margin) + " apart, relative)";
  }
};

class NearTieProbe : public model::SelectionProbe {
 public:
  explicit NearTieProbe(int64_t layers) : layers_(layers) {}

  void on_layer() override { layer_ = (layer_ + 1) % layers_; }

  void on_row(int64_t position, const float* scores, int64_t n, int64_t k, std::vector<int32_t>* selected) override {
    // The worst selected key and the best unselected one.
    int32_t worst_in = -1, best_out = -1;
    std::vector<bool> chosen(static_cast<size_t>(n), false);
    for (int32_t s : *selected) chosen[s] = true;
    for (int32_t s = 0; s < n; ++s) {
      if (chosen[s]) {
        if (worst_in < 0 || scores[s] < scores[worst_in]) worst_in = s;
      } else if (best_out < 0 || scores[s] > scores[best_out]) {
        best_out = s;
      }
    }
    if (worst_in < 0 || best_out < 0 || static_cast<int64_t>(selected->size()) != k) return;
    const std::lock_guard<std::mutex> lock(mu_);
    for (const TieFlip& f : flips_) {
      if (f.layer != layer_ || f.position != position) continue;
      auto it = std::find(selected->begin(), selected->end(), f.out);
      if (it != selected->end() && !chosen[f.in]) {
        *it = f.in;
        std::sort(selected->begin(), selected->end());
      }
    }
    const double kth = scores[worst_in], next = scores[best_out];
    const double margin = (kth - next) / std::max(std::fabs(kth), 1e-30);
    if (margin < kNearTieMargin) {
      const bool seen = std::any_of(seen_.begin(), seen_.end(),
                                    [&](const TieFlip& f) { return f.layer == layer_ && f.position == position; });
      if (!seen) seen_.push_back({layer_, position, worst_in, best_out, margin});
    }
  }

  // Starts a run: layer count from zero, the given flips applied, nothing recorded yet.
  void start(std::vector<TieFlip> flips) {
    layer_ = -1;
    flips_ = std::move(flips);
    seen_.clear();
  }
  const std::vector<TieFlip>& near_ties() const { return seen_; }

 private:
  int64_t layers_;
  int64_t layer_ = -1;
  std::mutex mu_;
  std::vector<TieFlip> flips_, seen_;
};

// Runs `compute` (which must run the model from scratch), and while `matches` says no, again with
// the closest near-ties flipped. Returns the flips of the run that matched (empty: none needed)
// and leaves the probe installed with them, so later computations make the same choices, until
// the search object is destroyed. When no tried flip set matches, the unflipped result is left
// for the caller's checks to report.
class NearTieSearch {
 public:
  explicit NearTieSearch(int64_t layers) : probe_(layers) { model::set_selection_probe(&probe_); }
  ~NearTieSearch() { model::set_selection_probe(nullptr); }
  NearTieSearch(const NearTieSearch&) = delete;
  NearTieSearch& operator=(const NearTieSearch&) = delete;

  std::vector<TieFlip> run(const std::function<void()>& compute, const std::function<bool()>& matches) {
    probe_.start({});
    compute();
    if (matches()) return {};
    std::vector<TieFlip> ties = probe_.near_ties();
    std::sort(ties.begin(), ties.end(), [](const TieFlip& a, const TieFlip& b) { return a.margin < b.margin; });
    std::vector<std::vector<TieFlip>> tries;
    for (size_t i = 0; i < std::min<size_t>(ties.size(), 12); ++i) tries.push_back({ties[i]});
    for (size_t i = 0; i < std::min<size_t>(ties.size(), 6); ++i)
      for (size_t j = i + 1; j < std::min<size_t>(ties.size(), 6); ++j) tries.push_back({ties[i], ties[j]});
    for (const auto& flips : tries) {
      probe_.start(flips);
      compute();
      if (matches()) return flips;
    }
    probe_.start({});
    compute();  // leave the unflipped result for the caller's report
    return {};
  }

 private:
  NearTieProbe probe_;
};

inline std::string describe(const std::vector<TieFlip>& flips) {
  std::string s;
  for (const TieFlip& f : flips) s += (s.empty() ? "" : "; ") + f.describe();
  return s.empty() ? "none" : s;
}

}  // namespace dseek::testing
