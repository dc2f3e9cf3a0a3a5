#include "kv/latent_cache.h"

#include <algorithm>

#include "base/check.h"

namespace dseek::kv {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

LatentCache::LatentCache(const model::ModelConfig& c, int64_t max_tokens, CacheType type)
    : LatentCache(std::make_shared<PagePool>(c, ceil_div(std::max<int64_t>(max_tokens, 1), PagePool::kDefaultPageTokens),
                                             PagePool::kDefaultPageTokens, type),
                  max_tokens) {}

LatentCache::LatentCache(std::shared_ptr<PagePool> pool, int64_t max_tokens)
    : pool_(std::move(pool)), max_tokens_(max_tokens) {
  DSEEK_CHECK(pool_ != nullptr, "LatentCache without a pool");
  P_ = pool_->page_tokens();
  latent_width_ = pool_->latent_width();
  row_bytes_ = pool_->latent_row_bytes();
  index_dim_ = pool_->index_dim();
}

LatentCache::~LatentCache() {
  for (const int32_t page : pages_) pool_->release(page);
}

int64_t LatentCache::pages_needed(int64_t n) const {
  if (n <= 0) return 0;
  const int64_t have = static_cast<int64_t>(pages_.size());
  int64_t need = std::max<int64_t>(0, ceil_div(length_ + n, P_) - have);
  // Writing into a partially filled page that others may read (shared, or published for later
  // sequences) needs a private copy of it first.
  if (length_ % P_ != 0) {
    const int32_t last = pages_[static_cast<size_t>(length_ / P_)];
    if (pool_->refcount(last) > 1 || pool_->published(last)) ++need;
  }
  return need;
}

Status LatentCache::reserve_next(int64_t n) {
  if (length_ + n > max_tokens_)
    return Status::errorf("context full: {} cached + {} new tokens exceed the context size of {} tokens", length_, n,
                          max_tokens_);
  const int64_t need = pages_needed(n);
  if (need > pool_->available())
    return Status::errorf("KV cache full: {} pages needed, {} available", need, pool_->available());
  if (n <= 0) return {};
  if (length_ % P_ != 0) {  // copy-on-write of the partially filled last page
    int32_t& last = pages_[static_cast<size_t>(length_ / P_)];
    if (pool_->refcount(last) > 1 || pool_->published(last)) {
      const int32_t copy = pool_->allocate();
      DSEEK_CHECK(copy >= 0, "pool ran out of pages after counting them");
      pool_->copy_rows(last, copy, length_ % P_);
      pool_->release(last);
      last = copy;
    }
  }
  while (static_cast<int64_t>(pages_.size()) * P_ < length_ + n) {
    const int32_t page = pool_->allocate();
    DSEEK_CHECK(page >= 0, "pool ran out of pages after counting them");
    pages_.push_back(page);
  }
  return {};
}

void LatentCache::truncate(int64_t n) {
  length_ = std::clamp<int64_t>(n, 0, length_);
  // Also drops pages reserved past length but never committed.
  const auto keep = static_cast<size_t>(ceil_div(length_, P_));
  while (pages_.size() > keep) {
    pool_->release(pages_.back());
    pages_.pop_back();
  }
}

void LatentCache::adopt_page(int32_t page) {
  DSEEK_CHECK(length_ % P_ == 0, "adopt_page at length {}, not a multiple of the page size {}", length_, P_);
  DSEEK_CHECK(length_ + P_ <= max_tokens_, "adopt_page past the context size {}", max_tokens_);
  truncate(length_);  // pages reserved but never written go back first
  pages_.push_back(page);
  length_ += P_;
}

int64_t LatentCache::bytes_per_token() const {
  const int64_t per_layer = row_bytes_ + index_dim_ + (index_dim_ / 128) * 4;
  return per_layer * num_layers();
}

}  // namespace dseek::kv
