#include "kv/page_pool.h"

#include <algorithm>
#include <iterator>

#include "base/check.h"

namespace dseek::kv {

// Storage of one page, created the first time the page is handed out (lazy growth).
struct PagePool::Page {
  std::vector<uint8_t> latent;  // [L, P, row_bytes]
  std::vector<uint8_t> keys;   // [L, P, index_dim]
  std::vector<float> scales;   // [L, P, index_dim / 128]
};

// Bookkeeping of one page.
struct PagePool::Entry {
  int32_t refs = 0;
  bool published = false;
  PrefixKey key = 0, parent = 0;  // valid while published
  std::vector<int32_t> tokens;    // [P], valid while published: what a key lookup is verified against
  std::list<int32_t>::iterator lru;  // valid while cached (published, refs == 0)
};

struct PagePool::Impl {
  std::vector<Entry> entries;  // [pages created so far]; ids are dense from 0
  std::vector<int32_t> free;   // created, unreferenced, unpublished: reused before anything else
  std::list<int32_t> lru;      // cached pages, least recently used first
  std::unordered_map<PrefixKey, int32_t> index;  // chain key -> published page
  int64_t in_use = 0;
};

PagePool::PagePool(const model::ModelConfig& c, int64_t max_pages, int64_t page_tokens, CacheType type)
    : page_tokens_(page_tokens),
      max_pages_(max_pages),
      latent_width_(c.latent_cache_width()),
      index_dim_(c.has_indexer() ? c.index_head_dim : 0),
      num_layers_(c.num_hidden_layers),
      layout_{type, c.kv_lora_rank, c.latent_cache_width() - c.kv_lora_rank},
      row_bytes_(layout_.row_bytes()),
      impl_(std::make_unique<Impl>()) {
  DSEEK_CHECK(page_tokens >= 1, "page_tokens {}", page_tokens);
  DSEEK_CHECK(max_pages >= 0 && max_pages <= INT32_MAX, "max_pages {}", max_pages);
}

PagePool::~PagePool() = default;

bool PagePool::fits(const model::ModelConfig& c) const {
  return num_layers_ == c.num_hidden_layers && latent_width_ == c.latent_cache_width() && layout_.rank == c.kv_lora_rank &&
         index_dim_ == (c.has_indexer() ? c.index_head_dim : 0);
}

int64_t PagePool::bytes_per_page() const {
  const int64_t per_row = row_bytes_ + index_dim_ + (index_dim_ / 128) * 4;
  return per_row * page_tokens_ * num_layers_;
}

int32_t PagePool::allocate() {
  Impl& s = *impl_;
  int32_t page;
  if (!s.free.empty()) {
    page = s.free.back();
    s.free.pop_back();
  } else if (static_cast<int64_t>(pages_.size()) < max_pages_) {
    page = static_cast<int32_t>(pages_.size());
    auto storage = std::make_unique<Page>();
    const auto rows = static_cast<size_t>(num_layers_ * page_tokens_);
    storage->latent.resize(rows * static_cast<size_t>(row_bytes_));
    storage->keys.resize(rows * static_cast<size_t>(index_dim_));
    storage->scales.resize(rows * static_cast<size_t>(index_dim_ / 128));
    pages_.push_back(std::move(storage));
    s.entries.emplace_back();
  } else if (!s.lru.empty()) {
    // Evict: the page leaves the prefix index, so no later lookup can find its old contents.
    page = s.lru.front();
    s.lru.pop_front();
    Entry& e = s.entries[static_cast<size_t>(page)];
    const auto it = s.index.find(e.key);
    DSEEK_CHECK(it != s.index.end() && it->second == page, "cached page {} missing from the prefix index", page);
    s.index.erase(it);
    e.published = false;
    e.tokens.clear();
  } else {
    return -1;
  }
  s.entries[static_cast<size_t>(page)].refs = 1;
  ++s.in_use;
  return page;
}

void PagePool::retain(int32_t page) {
  Entry& e = impl_->entries.at(static_cast<size_t>(page));
  DSEEK_CHECK(e.refs > 0, "retain of unreferenced page {} (cached pages are taken with acquire_cached)", page);
  ++e.refs;
}

void PagePool::release(int32_t page) {
  Impl& s = *impl_;
  Entry& e = s.entries.at(static_cast<size_t>(page));
  DSEEK_CHECK(e.refs > 0, "release of unreferenced page {}", page);
  if (--e.refs > 0) return;
  --s.in_use;
  if (e.published) {
    s.lru.push_back(page);  // most recently used
    e.lru = std::prev(s.lru.end());
  } else {
    s.free.push_back(page);
  }
}

int32_t PagePool::refcount(int32_t page) const { return impl_->entries.at(static_cast<size_t>(page)).refs; }

bool PagePool::published(int32_t page) const { return impl_->entries.at(static_cast<size_t>(page)).published; }

PagePool::PrefixKey PagePool::chain_key(PrefixKey parent, std::span<const int32_t> tokens) {
  // splitmix64's finalizer over (parent, each token, count): a well-mixed 64-bit key; equality
  // of keys is only a hint, lookups verify parent and tokens.
  auto mix = [](uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(parent + 0x9E3779B97F4A7C15ull);
  for (const int32_t t : tokens) h = mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9E3779B97F4A7C15ull));
  return mix(h ^ tokens.size());
}

void PagePool::publish(int32_t page, PrefixKey parent, std::span<const int32_t> tokens) {
  Impl& s = *impl_;
  Entry& e = s.entries.at(static_cast<size_t>(page));
  DSEEK_CHECK(e.refs > 0, "publish of unreferenced page {}", page);
  DSEEK_CHECK(static_cast<int64_t>(tokens.size()) == page_tokens_, "publish of {} tokens, pages hold {}",
              tokens.size(), page_tokens_);
  const PrefixKey key = chain_key(parent, tokens);
  if (e.published) {  // a published page is read-only, so it can only hold what it was published as
    DSEEK_CHECK(e.key == key && e.parent == parent && std::ranges::equal(e.tokens, tokens),
                "page {} published twice with different contents", page);
    return;
  }
  if (!s.index.emplace(key, page).second) return;  // the first page with this key stays
  e.published = true;
  e.key = key;
  e.parent = parent;
  e.tokens.assign(tokens.begin(), tokens.end());
}

int32_t PagePool::acquire_cached(PrefixKey parent, std::span<const int32_t> tokens) {
  Impl& s = *impl_;
  if (static_cast<int64_t>(tokens.size()) != page_tokens_) return -1;
  const auto it = s.index.find(chain_key(parent, tokens));
  if (it == s.index.end()) return -1;
  const int32_t page = it->second;
  Entry& e = s.entries[static_cast<size_t>(page)];
  if (e.parent != parent || !std::ranges::equal(e.tokens, tokens)) return -1;  // a hash collision
  if (e.refs == 0) {  // cached: in use again; when released it goes to the LRU's recent end
    s.lru.erase(e.lru);
    ++s.in_use;
  }
  ++e.refs;
  return page;
}

uint8_t* PagePool::latent_bytes(int32_t page, int64_t layer) {
  return pages_[static_cast<size_t>(page)]->latent.data() + layer * page_tokens_ * row_bytes_;
}
const uint8_t* PagePool::latent_bytes(int32_t page, int64_t layer) const {
  return pages_[static_cast<size_t>(page)]->latent.data() + layer * page_tokens_ * row_bytes_;
}
float* PagePool::latent(int32_t page, int64_t layer) {
  DSEEK_CHECK(layout_.format == CacheType::kF32, "float32 view of a {} cache", cache_type_name(layout_.format));
  return reinterpret_cast<float*>(latent_bytes(page, layer));
}
const float* PagePool::latent(int32_t page, int64_t layer) const {
  DSEEK_CHECK(layout_.format == CacheType::kF32, "float32 view of a {} cache", cache_type_name(layout_.format));
  return reinterpret_cast<const float*>(latent_bytes(page, layer));
}
uint8_t* PagePool::index_keys(int32_t page, int64_t layer) {
  return pages_[static_cast<size_t>(page)]->keys.data() + layer * page_tokens_ * index_dim_;
}
const uint8_t* PagePool::index_keys(int32_t page, int64_t layer) const {
  return pages_[static_cast<size_t>(page)]->keys.data() + layer * page_tokens_ * index_dim_;
}
float* PagePool::index_scales(int32_t page, int64_t layer) {
  return pages_[static_cast<size_t>(page)]->scales.data() + layer * page_tokens_ * (index_dim_ / 128);
}
const float* PagePool::index_scales(int32_t page, int64_t layer) const {
  return pages_[static_cast<size_t>(page)]->scales.data() + layer * page_tokens_ * (index_dim_ / 128);
}

void PagePool::copy_rows(int32_t from, int32_t to, int64_t n) {
  DSEEK_CHECK(n >= 0 && n <= page_tokens_, "copy_rows of {} rows, pages hold {}", n, page_tokens_);
  const int64_t blocks = index_dim_ / 128;
  for (int64_t l = 0; l < num_layers_; ++l) {
    std::copy_n(latent_bytes(from, l), n * row_bytes_, latent_bytes(to, l));
    std::copy_n(index_keys(from, l), n * index_dim_, index_keys(to, l));
    std::copy_n(index_scales(from, l), n * blocks, index_scales(to, l));
  }
}

PagePool::Usage PagePool::usage() const {
  return {max_pages_, static_cast<int64_t>(pages_.size()), impl_->in_use, static_cast<int64_t>(impl_->lru.size())};
}

int64_t PagePool::resident_bytes() const { return static_cast<int64_t>(pages_.size()) * bytes_per_page(); }

int64_t PagePool::available() const {
  return max_pages_ - static_cast<int64_t>(pages_.size()) + static_cast<int64_t>(impl_->free.size()) +
         static_cast<int64_t>(impl_->lru.size());
}

}  // namespace dseek::kv
