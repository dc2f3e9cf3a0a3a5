// Session's prefix bookkeeping: the chain key of every full page, publication of pages as they
// fill, and adoption of pages other sessions published (model/deepseek.h, kv/page_pool.h).
#include <algorithm>

#include "model/deepseek.h"

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
