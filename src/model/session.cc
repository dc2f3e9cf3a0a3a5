// Session's prefix bookkeeping: the chain key of every full page, publication of pages as they
// fill, and adoption of pages other sessions published (model/deepseek.h, kv/page_pool.h).
#include <algorithm>
#include <random>
#include <vector>

#include "kv/latent_codec.h"
#include "model/deepseek.h"
#include "model/indexer.h"
#include "ops/fp8.h"

namespace dseek::model {

void Session::truncate(int64_t n) {
  cache_.truncate(n);
  const int64_t len = cache_.length();
  if (len < static_cast<int64_t>(tokens_.size())) tokens_.resize(static_cast<size_t>(len));
  // A page cut inside is no longer full: it loses its key (and is copied before the next write).
  const auto full = static_cast<size_t>(len / cache_.page_tokens());
  if (keys_.size() > full) keys_.resize(full);
}

void Session::publish_full_pages() {
  const int64_t P = cache_.page_tokens();
  kv::PagePool& pool = cache_.pool();
  for (auto i = static_cast<int64_t>(keys_.size()); i < cache_.length() / P; ++i) {
    const kv::PagePool::PrefixKey parent = i == 0 ? 0 : keys_[static_cast<size_t>(i - 1)];
    const std::span<const int32_t> page_tokens(tokens_.data() + i * P, static_cast<size_t>(P));
    if (shared_) pool.publish(cache_.pages()[static_cast<size_t>(i)], parent, page_tokens);
    keys_.push_back(kv::PagePool::chain_key(parent, page_tokens));
  }
}

Status Session::append_random_rows(std::span<const int32_t> tokens, uint64_t seed) {
  const auto n = static_cast<int64_t>(tokens.size());
  DSEEK_RETURN_IF_ERROR(cache_.reserve_next(n));
  const cpu::LatentLayout& layout = cache_.latent_layout();
  const int64_t width = cache_.latent_width(), index_dim = cache_.index_dim(), p0 = cache_.length();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(std::max(width, index_dim)));
  for (int64_t layer = 0; layer < cache_.num_layers(); ++layer) {
    for (int64_t p = p0; p < p0 + n; ++p) {
      for (int64_t i = 0; i < width; ++i) row[i] = normal(rng);
      kv::encode_latent_row(layout, row.data(), cache_.latent_bytes(layer, p));
      if (index_dim > 0) {
        for (int64_t i = 0; i < index_dim; ++i) row[i] = normal(rng);
        ops::fp8_quantize_blocks(row.data(), index_dim, kIndexerQuantBlock, /*pow2_scale=*/true,
                                 cache_.index_key(layer, p), cache_.index_scale(layer, p));
      }
    }
  }
  cache_.commit(n);
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  publish_full_pages();
  return {};
}

int64_t Session::reuse_prefix(std::span<const int32_t> prompt) {
  const auto n = static_cast<int64_t>(prompt.size());
  int64_t common = 0;
  while (common < length() && common < n && tokens_[static_cast<size_t>(common)] == prompt[common]) ++common;
  truncate(common);
  const int64_t P = cache_.page_tokens();
  kv::PagePool& pool = cache_.pool();
  while (length() % P == 0 && length() + P <= n && length() + P <= max_tokens()) {
    const kv::PagePool::PrefixKey parent = keys_.empty() ? 0 : keys_.back();
    const std::span<const int32_t> next = prompt.subspan(static_cast<size_t>(length()), static_cast<size_t>(P));
    const int32_t page = pool.acquire_cached(parent, next);
    if (page < 0) break;
    cache_.adopt_page(page);
    tokens_.insert(tokens_.end(), next.begin(), next.end());
    keys_.push_back(kv::PagePool::chain_key(parent, next));
  }
  return length();
}

}  // namespace dseek::model
