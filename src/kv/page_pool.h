// Paged storage for the MLA latent KV cache, shared by every sequence of a model (the server's
// continuous batching) or private to one (dseek run/chat). A page holds `page_tokens`
// consecutive positions of one sequence for every layer:
//   latent        [L][P][row_bytes]  (normalized c_kv | rotated k_rope) in the pool's cache type:
//                 f32, bf16 or fp8 (kv/cache_type.h; byte layouts in cpu/attention_format.h)
//   index keys    [L][P][index_head_dim] e4m3                   (V3.2 only)
//   index scales  [L][P][index_head_dim / 128] f32              (V3.2 only)
// Sequences own page tables (LatentCache); pages are reference counted.
//
// Prefix reuse: a full page is published under the chain key of every token up to its end
// (key = hash(parent key, its P tokens), root parent 0). A later sequence whose prompt starts
// with the same tokens (same system prompt, earlier turns of a chat) adopts those pages instead
// of recomputing them. Published pages nobody references stay cached and are evicted least
// recently used when a page is needed. A published page is read-only: a sequence that must
// write into one (after truncating inside it) copies it first (LatentCache::reserve_next).
// Keys are verified against the stored tokens and parent, so a hash collision is a miss.
//
// Storage for a page is allocated the first time the page is handed out and kept for reuse, so
// memory grows with use up to max_pages * bytes_per_page().
//
// Not thread-safe: one thread (the engine's) uses a pool and the sessions on it.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/cache_type.h"
#include "model/config.h"

namespace dseek::kv {

class PagePool {
 public:
  static constexpr int64_t kDefaultPageTokens = 16;
  using PrefixKey = uint64_t;

  PagePool(const model::ModelConfig& c, int64_t max_pages, int64_t page_tokens = kDefaultPageTokens,
           CacheType type = CacheType::kF32);
  ~PagePool();  // out of line: Impl is complete only in page_pool.cc
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  int64_t page_tokens() const { return page_tokens_; }
  int64_t max_pages() const { return max_pages_; }
  int64_t latent_width() const { return latent_width_; }  // r + d_r values per row
  CacheType cache_type() const { return layout_.format; }
  const cpu::LatentLayout& latent_layout() const { return layout_; }
  int64_t latent_row_bytes() const { return row_bytes_; }
  int64_t index_dim() const { return index_dim_; }
  int64_t num_layers() const { return num_layers_; }
  // Whether pages have the shapes of config c (layers, latent and indexer widths).
  bool fits(const model::ModelConfig& c) const;
  int64_t bytes_per_page() const;

  // A page with reference count 1 and unspecified contents: a free page, else the least
  // recently used unreferenced published page (unpublished first), else -1 (all referenced).
  int32_t allocate();
  void retain(int32_t page);
  // At reference count 0 the page becomes free, or cached (evictable) if it is published.
  void release(int32_t page);
  int32_t refcount(int32_t page) const;
  bool published(int32_t page) const;

  static PrefixKey chain_key(PrefixKey parent, std::span<const int32_t> tokens);
  // Publishes a full, written page as holding `tokens` (page_tokens of them) after the prefix
  // `parent`. If another page already holds that key, nothing changes (the first one stays).
  void publish(int32_t page, PrefixKey parent, std::span<const int32_t> tokens);
  // The page published for exactly these tokens after `parent`, retained for the caller (and
  // marked most recently used); -1 if none.
  int32_t acquire_cached(PrefixKey parent, std::span<const int32_t> tokens);

  uint8_t* latent_bytes(int32_t page, int64_t layer);  // [P, latent_row_bytes]
  const uint8_t* latent_bytes(int32_t page, int64_t layer) const;
  // The same as float32 rows [P, latent_width]: f32 pools only (checked).
  float* latent(int32_t page, int64_t layer);
  const float* latent(int32_t page, int64_t layer) const;
  uint8_t* index_keys(int32_t page, int64_t layer);  // [P, index_dim]
  const uint8_t* index_keys(int32_t page, int64_t layer) const;
  float* index_scales(int32_t page, int64_t layer);  // [P, index_dim / 128]
  const float* index_scales(int32_t page, int64_t layer) const;
  // Copies every layer's rows [0, n) of page `from` to page `to`.
  void copy_rows(int32_t from, int32_t to, int64_t n);

  struct Usage {
    int64_t max_pages = 0;
    int64_t allocated = 0;  // pages whose storage exists
    int64_t in_use = 0;     // referenced by at least one sequence
    int64_t cached = 0;     // published, unreferenced, evictable
  };
  Usage usage() const;
  // Bytes of page storage that exists now (usage().allocated pages): what the cache holds in memory.
  int64_t resident_bytes() const;
  // Pages allocate() can still hand out: never used + free + cached.
  int64_t available() const;

 private:
  struct Page;   // storage: latent, index keys and scales of every layer
  struct Entry;  // bookkeeping: reference count, publication, LRU position
  int64_t page_tokens_, max_pages_, latent_width_, index_dim_, num_layers_;
  cpu::LatentLayout layout_;
  int64_t row_bytes_;
  std::vector<std::unique_ptr<Page>> pages_;  // [pages created so far]: lazy growth up to max_pages
  struct Impl;  // entries, free list, LRU list, prefix index
  std::unique_ptr<Impl> impl_;
};

}  // namespace dseek::kv
