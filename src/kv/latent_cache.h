// One sequence's KV cache of MLA: per layer and token, only the normalized latent c_kv and the
// rotated rope key, [kv_lora_rank + qk_rope_head_dim] values (576 for V3), never the per-head
// keys and values. For V3.2, also the indexer's FP8 keys and their scales.
// Rows are absolute positions with RoPE already applied; they are never re-rotated. Rows are
// stored in the pool's cache type (f32, bf16 or fp8: kv/cache_type.h): write them with
// kv::encode_latent_row, read them with cpu::decode_latent_row or the attention kernels.
//
// Paged: position p lives in page pages[p / P] at slot p % P of a PagePool (page_pool.h),
// either a private pool sized for max_tokens (dseek run/chat) or one shared by every sequence
// (the server), where full pages can be shared between sequences through the prefix index.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kv/page_pool.h"
#include "model/config.h"

namespace dseek::kv {

class LatentCache {
 public:
  // A private pool of ceil(max_tokens / P) pages; memory grows with use, not up front.
  LatentCache(const model::ModelConfig& c, int64_t max_tokens, CacheType type = CacheType::kF32);
  // Pages from a shared pool; this cache holds at most max_tokens positions.
  LatentCache(std::shared_ptr<PagePool> pool, int64_t max_tokens);
  ~LatentCache();  // releases its pages
  LatentCache(const LatentCache&) = delete;
  LatentCache& operator=(const LatentCache&) = delete;

  int64_t length() const { return length_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t latent_width() const { return pool_->latent_width(); }
  CacheType cache_type() const { return pool_->cache_type(); }
  const cpu::LatentLayout& latent_layout() const { return pool_->latent_layout(); }
  int64_t index_dim() const { return pool_->index_dim(); }
  int64_t num_layers() const { return pool_->num_layers(); }
  int64_t page_tokens() const { return pool_->page_tokens(); }
  PagePool& pool() { return *pool_; }
  const PagePool& pool() const { return *pool_; }
  const std::vector<int32_t>& pages() const { return pages_; }
  // Whether this cache has the shapes of config c (layers, latent and indexer widths).
  bool fits(const model::ModelConfig& c) const { return pool_->fits(c); }

  // Pages needed so that positions [length, length + n) can be written, counting the copy of a
  // shared last page: what reserve_next(n) will take from the pool.
  int64_t pages_needed(int64_t n) const;
  // Makes positions [length, length + n) writable: allocates pages, and copies a partially
  // filled last page first if it is shared or published (copy-on-write). Errors: past
  // max_tokens ("context full: ..."), or the pool has too few pages ("KV cache full: ...");
  // on error nothing changes.
  Status reserve_next(int64_t n);
  // Marks positions [length, length + n) as filled (after every layer wrote them).
  void commit(int64_t n) { length_ += n; }
  // Forgets every position >= n, releasing the pages past the one holding position n - 1.
  void truncate(int64_t n);
  // Appends an already written, published page of the pool (retained by the caller's
  // acquire_cached, which this cache now owns): positions [length, length + P). length must be
  // a multiple of P.
  void adopt_page(int32_t page);

  // Row `pos` of `layer` as stored: latent_layout().row_bytes() bytes.
  uint8_t* latent_bytes(int64_t layer, int64_t pos) {
    return pool_->latent_bytes(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * row_bytes_;
  }
  const uint8_t* latent_bytes(int64_t layer, int64_t pos) const {
    return pool_->latent_bytes(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * row_bytes_;
  }
  // The same row as float32 values [latent_width]: f32 caches only (checked).
  float* latent_row(int64_t layer, int64_t pos) {
    return pool_->latent(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * latent_width_;
  }
  const float* latent_row(int64_t layer, int64_t pos) const {
    return pool_->latent(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * latent_width_;
  }
  uint8_t* index_key(int64_t layer, int64_t pos) {
    return pool_->index_keys(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * index_dim_;
  }
  const uint8_t* index_key(int64_t layer, int64_t pos) const {
    return pool_->index_keys(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * index_dim_;
  }
  float* index_scale(int64_t layer, int64_t pos) {
    return pool_->index_scales(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * (index_dim_ / 128);
  }
  const float* index_scale(int64_t layer, int64_t pos) const {
    return pool_->index_scales(pages_[static_cast<size_t>(pos / P_)], layer) + (pos % P_) * (index_dim_ / 128);
  }

  // Bytes one token occupies across all layers, as stored (latent rows in the cache type, e4m3
  // index keys and their scales).
  int64_t bytes_per_token() const;

 private:
  std::shared_ptr<PagePool> pool_;
  int64_t max_tokens_;
  int64_t length_ = 0;
  int64_t P_, latent_width_, row_bytes_, index_dim_;  // copies of the pool's, for the row accessors
  std::vector<int32_t> pages_;            // page table: position p is in pages_[p / P_]
};

// One layer of one sequence's cache, as the attention and the indexer read and write it.
struct LayerView {
  LatentCache* cache;
  int64_t layer;
  const cpu::LatentLayout& latent_layout() const { return cache->latent_layout(); }
  uint8_t* latent_bytes(int64_t pos) const { return cache->latent_bytes(layer, pos); }
  float* latent_row(int64_t pos) const { return cache->latent_row(layer, pos); }  // f32 caches only
  uint8_t* index_key(int64_t pos) const { return cache->index_key(layer, pos); }
  float* index_scale(int64_t pos) const { return cache->index_scale(layer, pos); }
};

}  // namespace dseek::kv
