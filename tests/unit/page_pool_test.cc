// The paged latent cache: PagePool's reference counts, free vs cached pages, LRU eviction and
// its prefix index, lazy storage and row copies; LatentCache's page table over it (reserve
// across page boundaries, truncation, pages_needed, errors that change nothing, copy-on-write
// of a shared page). On small hand-made configs, checked against hand-counted expectations.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv/latent_cache.h"
#include "kv/page_pool.h"

namespace dseek::kv {
namespace {

// 2 layers, latent width 6 + 2 = 8; with the indexer, 128-wide keys (one scale per row).
model::ModelConfig small_config(bool indexer) {
  model::ModelConfig c;
  c.arch = indexer ? model::Arch::kDeepseekV32 : model::Arch::kDeepseekV3;
  c.num_hidden_layers = 2;
  c.kv_lora_rank = 6;
  c.qk_rope_head_dim = 2;
  c.index_head_dim = indexer ? 128 : 0;
  return c;
}

constexpr int64_t kP = 4;  // page tokens in these tests

std::vector<int32_t> toks(int32_t first) { return {first, first + 1, first + 2, first + 3}; }

TEST(PagePool, ShapesAndBytesPerPage) {
  const auto c = small_config(true);
  PagePool pool(c, 5, kP);
  EXPECT_EQ(pool.page_tokens(), kP);
  EXPECT_EQ(pool.max_pages(), 5);
  EXPECT_EQ(pool.latent_width(), 8);
  EXPECT_EQ(pool.index_dim(), 128);
  EXPECT_EQ(pool.num_layers(), 2);
  EXPECT_TRUE(pool.fits(c));
  EXPECT_FALSE(pool.fits(small_config(false)));
  auto deeper = c;
  deeper.num_hidden_layers = 3;
  EXPECT_FALSE(pool.fits(deeper));
  // Per row: 8 floats + 128 key bytes + 1 float scale; 4 rows per layer, 2 layers.
  EXPECT_EQ(pool.bytes_per_page(), (8 * 4 + 128 + 4) * 4 * 2);
  EXPECT_EQ(PagePool(small_config(false), 5, kP).bytes_per_page(), 8 * 4 * 4 * 2);
}

TEST(PagePool, AllocateRetainReleaseCountReferences) {
  PagePool pool(small_config(false), 3, kP);
  const int32_t a = pool.allocate();
  ASSERT_GE(a, 0);
  EXPECT_EQ(pool.refcount(a), 1);
  pool.retain(a);
  EXPECT_EQ(pool.refcount(a), 2);
  EXPECT_EQ(pool.usage().in_use, 1);
  EXPECT_EQ(pool.available(), 2);
  pool.release(a);
  EXPECT_EQ(pool.refcount(a), 1);
  EXPECT_EQ(pool.available(), 2);  // still referenced
  pool.release(a);
  EXPECT_EQ(pool.refcount(a), 0);
  EXPECT_EQ(pool.usage().in_use, 0);
  EXPECT_EQ(pool.available(), 3);
  // Every page handed out is distinct, and a full pool says so.
  const int32_t x = pool.allocate(), y = pool.allocate(), z = pool.allocate();
  EXPECT_TRUE(x >= 0 && y >= 0 && z >= 0 && x != y && y != z && x != z);
  EXPECT_EQ(pool.allocate(), -1);
  EXPECT_EQ(pool.available(), 0);
}

TEST(PagePool, ReleasedPagesAreFreeUnlessPublishedThenCached) {
  PagePool pool(small_config(false), 4, kP);
  const int32_t plain = pool.allocate(), shared = pool.allocate();
  pool.publish(shared, 0, toks(10));
  EXPECT_FALSE(pool.published(plain));
  EXPECT_TRUE(pool.published(shared));
  pool.release(plain);
  pool.release(shared);
  const PagePool::Usage u = pool.usage();
  EXPECT_EQ(u.in_use, 0);
  EXPECT_EQ(u.cached, 1);
  EXPECT_EQ(u.allocated, 2);
  EXPECT_EQ(pool.available(), 4);
  // The cached page is found again by its tokens and is in use once more.
  EXPECT_EQ(pool.acquire_cached(0, toks(10)), shared);
  EXPECT_EQ(pool.refcount(shared), 1);
  EXPECT_EQ(pool.usage().cached, 0);
  EXPECT_EQ(pool.usage().in_use, 1);
  EXPECT_EQ(pool.available(), 3);
  // A second reader of an in-use published page shares it.
  EXPECT_EQ(pool.acquire_cached(0, toks(10)), shared);
  EXPECT_EQ(pool.refcount(shared), 2);
}

TEST(PagePool, FreePagesGoFirstThenCachedPagesLeastRecentlyUsedFirst) {
  PagePool pool(small_config(false), 4, kP);
  int32_t p[4];
  for (int i = 0; i < 4; ++i) p[i] = pool.allocate();
  for (int i = 0; i < 3; ++i) pool.publish(p[i], 0, toks(100 * i));
  for (int i = 0; i < 4; ++i) pool.release(p[i]);  // LRU: p0, p1, p2; p3 free
  EXPECT_EQ(pool.usage().cached, 3);
  // p0 used again: now p1 is the least recently used.
  ASSERT_EQ(pool.acquire_cached(0, toks(0)), p[0]);
  pool.release(p[0]);  // LRU: p1, p2, p0

  EXPECT_EQ(pool.allocate(), p[3]);  // the unpublished free page before any cached one
  EXPECT_EQ(pool.allocate(), p[1]);
  EXPECT_FALSE(pool.published(p[1]));                  // evicted: out of the prefix index
  EXPECT_EQ(pool.acquire_cached(0, toks(100)), -1);    // its old contents are not found
  EXPECT_EQ(pool.acquire_cached(0, toks(200)), p[2]);  // the others still are
  pool.release(p[2]);                                  // LRU: p0, p2
  EXPECT_EQ(pool.allocate(), p[0]);
  EXPECT_EQ(pool.acquire_cached(0, toks(0)), -1);
  EXPECT_EQ(pool.allocate(), p[2]);
  EXPECT_EQ(pool.allocate(), -1);
  EXPECT_EQ(pool.usage().cached, 0);
  EXPECT_EQ(pool.usage().in_use, 4);
}

TEST(PagePool, PublishingAnExistingKeyKeepsTheFirstPage) {
  PagePool pool(small_config(false), 3, kP);
  const int32_t first = pool.allocate(), second = pool.allocate();
  pool.publish(first, 7, toks(1));
  pool.publish(second, 7, toks(1));
  EXPECT_TRUE(pool.published(first));
  EXPECT_FALSE(pool.published(second));
  pool.publish(first, 7, toks(1));  // again: no change
  EXPECT_EQ(pool.acquire_cached(7, toks(1)), first);
  pool.release(second);  // unpublished: free, not cached
  EXPECT_EQ(pool.usage().cached, 0);
}

TEST(PagePool, DifferentTokensOrParentsNeverMatch) {
  PagePool pool(small_config(false), 2, kP);
  const int32_t page = pool.allocate();
  const PagePool::PrefixKey parent = PagePool::chain_key(0, toks(50));
  pool.publish(page, parent, toks(1));
  EXPECT_EQ(pool.acquire_cached(0, toks(1)), -1);           // other parent
  EXPECT_EQ(pool.acquire_cached(parent + 1, toks(1)), -1);  // other parent
  std::vector<int32_t> other = toks(1);
  other[3] = 99;
  EXPECT_EQ(pool.acquire_cached(parent, other), -1);  // one token differs
  std::vector<int32_t> swapped = {2, 1, 3, 4};
  EXPECT_EQ(pool.acquire_cached(parent, swapped), -1);  // same tokens, other order
  EXPECT_EQ(pool.acquire_cached(parent, std::vector<int32_t>{1, 2, 3}), -1);  // not a whole page
  EXPECT_EQ(pool.refcount(page), 1);                                         // no miss retained it
  EXPECT_EQ(pool.acquire_cached(parent, toks(1)), page);
  // Chain keys depend on the parent, the tokens and their order.
  EXPECT_NE(PagePool::chain_key(0, toks(1)), PagePool::chain_key(1, toks(1)));
  EXPECT_NE(PagePool::chain_key(0, toks(1)), PagePool::chain_key(0, other));
  EXPECT_NE(PagePool::chain_key(0, toks(1)), PagePool::chain_key(0, swapped));
  EXPECT_EQ(PagePool::chain_key(3, toks(1)), PagePool::chain_key(3, toks(1)));
}

TEST(PagePool, StorageGrowsOnlyWithUse) {
  PagePool pool(small_config(true), 1000, kP);
  EXPECT_EQ(pool.usage().allocated, 0);
  EXPECT_EQ(pool.available(), 1000);
  const int32_t a = pool.allocate();
  EXPECT_EQ(pool.usage().allocated, 1);
  pool.release(a);
  const int32_t b = pool.allocate();  // the freed page's storage is reused
  EXPECT_EQ(b, a);
  EXPECT_EQ(pool.usage().allocated, 1);
  const int32_t c = pool.allocate();
  EXPECT_EQ(pool.usage().allocated, 2);
  EXPECT_EQ(pool.usage().in_use, 2);
  EXPECT_EQ(pool.available(), 998);
  EXPECT_NE(c, b);
}

TEST(PagePool, CopyRowsCopiesEveryLayerAndLeavesTheRestOfTheTarget) {
  PagePool pool(small_config(true), 2, kP);
  const int32_t from = pool.allocate(), to = pool.allocate();
  const int64_t W = pool.latent_width(), d = pool.index_dim();
  for (int64_t l = 0; l < 2; ++l) {
    for (int64_t i = 0; i < kP * W; ++i) {
      pool.latent(from, l)[i] = static_cast<float>(1000 * l + i);
      pool.latent(to, l)[i] = -1.0f;
    }
    for (int64_t i = 0; i < kP * d; ++i) {
      pool.index_keys(from, l)[i] = static_cast<uint8_t>(l * 7 + i);
      pool.index_keys(to, l)[i] = 0xEE;
    }
    for (int64_t i = 0; i < kP; ++i) {
      pool.index_scales(from, l)[i] = static_cast<float>(l + 0.5 * i);
      pool.index_scales(to, l)[i] = -2.0f;
    }
  }
  pool.copy_rows(from, to, 3);
  for (int64_t l = 0; l < 2; ++l) {
    const PagePool& cp = pool;
    for (int64_t i = 0; i < kP * W; ++i)
      EXPECT_EQ(cp.latent(to, l)[i], i < 3 * W ? static_cast<float>(1000 * l + i) : -1.0f) << l << " " << i;
    for (int64_t i = 0; i < kP * d; ++i)
      EXPECT_EQ(cp.index_keys(to, l)[i], i < 3 * d ? static_cast<uint8_t>(l * 7 + i) : 0xEE) << l << " " << i;
    for (int64_t i = 0; i < kP; ++i)
      EXPECT_EQ(cp.index_scales(to, l)[i], i < 3 ? static_cast<float>(l + 0.5 * i) : -2.0f) << l << " " << i;
  }
}

// Fills rows [from, to) of every layer with values that name (layer, position, column).
void write_rows(LatentCache& cache, int64_t from, int64_t to, float tag) {
  for (int64_t l = 0; l < cache.num_layers(); ++l)
    for (int64_t p = from; p < to; ++p) {
      for (int64_t j = 0; j < cache.latent_width(); ++j)
        cache.latent_row(l, p)[j] = tag + static_cast<float>(100 * l + 10 * p + j) * 1e-3f;
      for (int64_t j = 0; j < cache.index_dim(); ++j) cache.index_key(l, p)[j] = static_cast<uint8_t>(tag + p + j);
      if (cache.index_dim()) cache.index_scale(l, p)[0] = tag + static_cast<float>(p);
    }
}

// Whether rows [from, to) hold what write_rows(tag) wrote.
bool rows_hold(const LatentCache& cache, int64_t from, int64_t to, float tag) {
  for (int64_t l = 0; l < cache.num_layers(); ++l)
    for (int64_t p = from; p < to; ++p) {
      for (int64_t j = 0; j < cache.latent_width(); ++j)
        if (cache.latent_row(l, p)[j] != tag + static_cast<float>(100 * l + 10 * p + j) * 1e-3f) return false;
      for (int64_t j = 0; j < cache.index_dim(); ++j)
        if (cache.index_key(l, p)[j] != static_cast<uint8_t>(tag + p + j)) return false;
      if (cache.index_dim() && cache.index_scale(l, p)[0] != tag + static_cast<float>(p)) return false;
    }
  return true;
}

TEST(LatentCache, ReserveAcrossPageBoundariesPlacesPositionsInPages) {
  auto pool = std::make_shared<PagePool>(small_config(true), 8, kP);
  LatentCache cache(pool, 32);
  ASSERT_TRUE(cache.reserve_next(6).ok());
  EXPECT_EQ(cache.pages().size(), 2u);
  write_rows(cache, 0, 6, 1);
  cache.commit(6);
  ASSERT_TRUE(cache.reserve_next(3).ok());  // positions 6..8: fills page 1, opens page 2
  EXPECT_EQ(cache.pages().size(), 3u);
  write_rows(cache, 6, 9, 1);
  cache.commit(3);
  EXPECT_EQ(cache.length(), 9);
  EXPECT_TRUE(rows_hold(cache, 0, 9, 1));
  // Position p is slot p % P of page pages[p / P].
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t p = 0; p < 9; ++p) {
      const int32_t page = cache.pages()[static_cast<size_t>(p / kP)];
      EXPECT_EQ(cache.latent_row(l, p), pool->latent(page, l) + (p % kP) * 8);
      EXPECT_EQ(cache.index_key(l, p), pool->index_keys(page, l) + (p % kP) * 128);
      EXPECT_EQ(cache.index_scale(l, p), pool->index_scales(page, l) + (p % kP));
    }
  EXPECT_EQ(pool->usage().in_use, 3);
  ASSERT_TRUE(cache.reserve_next(3).ok());  // fits in page 2: nothing new
  EXPECT_EQ(pool->usage().in_use, 3);
  EXPECT_EQ(cache.bytes_per_token(), (8 * 4 + 128 + 4) * 2);
}

TEST(LatentCache, TruncateReleasesThePagesPastTheLastPosition) {
  auto pool = std::make_shared<PagePool>(small_config(false), 8, kP);
  LatentCache cache(pool, 32);
  ASSERT_TRUE(cache.reserve_next(10).ok());
  write_rows(cache, 0, 10, 2);
  cache.commit(10);
  EXPECT_EQ(pool->usage().in_use, 3);
  cache.truncate(12);  // past the end: no change
  EXPECT_EQ(cache.length(), 10);
  cache.truncate(5);  // position 4 is in page 1
  EXPECT_EQ(cache.length(), 5);
  EXPECT_EQ(cache.pages().size(), 2u);
  EXPECT_EQ(pool->usage().in_use, 2);
  EXPECT_TRUE(rows_hold(cache, 0, 5, 2));
  cache.truncate(4);
  EXPECT_EQ(cache.pages().size(), 1u);
  cache.truncate(0);
  EXPECT_EQ(cache.pages().size(), 0u);
  EXPECT_EQ(pool->usage().in_use, 0);
  EXPECT_EQ(pool->available(), 8);
}

TEST(LatentCache, PagesNeededCountsNewPagesAndTheCopyOfASharedLastPage) {
  auto pool = std::make_shared<PagePool>(small_config(false), 8, kP);
  LatentCache cache(pool, 32);
  EXPECT_EQ(cache.pages_needed(0), 0);
  EXPECT_EQ(cache.pages_needed(1), 1);
  EXPECT_EQ(cache.pages_needed(4), 1);
  EXPECT_EQ(cache.pages_needed(5), 2);
  ASSERT_TRUE(cache.reserve_next(6).ok());
  cache.commit(6);
  EXPECT_EQ(cache.pages_needed(2), 0);
  EXPECT_EQ(cache.pages_needed(3), 1);
  EXPECT_EQ(cache.pages_needed(10), 2);  // positions [6, 16): pages 2 and 3
  EXPECT_EQ(cache.pages_needed(11), 3);
  pool->retain(cache.pages()[1]);  // someone else reads the partial last page
  EXPECT_EQ(cache.pages_needed(2), 1);
  EXPECT_EQ(cache.pages_needed(3), 2);
  pool->release(cache.pages()[1]);
  EXPECT_EQ(cache.pages_needed(2), 0);
  cache.truncate(4);  // at a page boundary: the next write opens a new page, nothing to copy
  pool->publish(cache.pages()[0], 0, toks(0));
  EXPECT_EQ(cache.pages_needed(1), 1);
  cache.truncate(3);  // inside a published page: copy it first
  EXPECT_EQ(cache.pages_needed(1), 1);
  EXPECT_EQ(cache.pages_needed(2), 2);
}

TEST(LatentCache, ContextFullAndPoolFullChangeNothing) {
  auto pool = std::make_shared<PagePool>(small_config(false), 3, kP);
  LatentCache other(pool, 32), cache(pool, 8);
  ASSERT_TRUE(other.reserve_next(8).ok());  // 2 of the 3 pages
  other.commit(8);
  ASSERT_TRUE(cache.reserve_next(2).ok());
  write_rows(cache, 0, 2, 3);
  cache.commit(2);
  const std::vector<int32_t> pages = cache.pages();
  const PagePool::Usage before = pool->usage();

  Status st = cache.reserve_next(7);  // 2 + 7 > 8
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("context full"), std::string::npos) << st.message();
  st = cache.reserve_next(3);  // a second page, none left
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("KV cache full: 1 pages needed, 0 available"), std::string::npos) << st.message();
  EXPECT_EQ(cache.length(), 2);
  EXPECT_EQ(cache.pages(), pages);
  EXPECT_EQ(pool->usage().in_use, before.in_use);
  EXPECT_EQ(pool->available(), 0);
  EXPECT_TRUE(rows_hold(cache, 0, 2, 3));
  ASSERT_TRUE(cache.reserve_next(2).ok());  // still room in its page
}

// Two caches share pages (adopted through the prefix index, or retained); the one that
// truncates inside the shared last page and writes gets its own copy: the other's rows stay.
TEST(LatentCache, CopyOnWriteKeepsTheOtherReadersRows) {
  for (bool publish : {true, false}) {
    auto pool = std::make_shared<PagePool>(small_config(true), 8, kP);
    LatentCache a(pool, 32), b(pool, 32);
    ASSERT_TRUE(a.reserve_next(8).ok());
    write_rows(a, 0, 8, 4);
    a.commit(8);
    if (publish) {
      pool->publish(a.pages()[0], 0, toks(0));
      pool->publish(a.pages()[1], PagePool::chain_key(0, toks(0)), toks(4));
      b.adopt_page(pool->acquire_cached(0, toks(0)));
      b.adopt_page(pool->acquire_cached(PagePool::chain_key(0, toks(0)), toks(4)));
    } else {
      for (int32_t page : a.pages()) pool->retain(page);
      for (int32_t page : a.pages()) b.adopt_page(page);
    }
    ASSERT_EQ(b.pages(), a.pages());
    EXPECT_EQ(b.length(), 8);
    EXPECT_TRUE(rows_hold(b, 0, 8, 4));
    EXPECT_EQ(pool->usage().in_use, 2);

    b.truncate(6);
    EXPECT_EQ(b.pages_needed(1), 1);
    ASSERT_TRUE(b.reserve_next(1).ok());
    EXPECT_EQ(b.pages()[0], a.pages()[0]);  // the untouched full page stays shared
    EXPECT_NE(b.pages()[1], a.pages()[1]);
    EXPECT_EQ(pool->refcount(a.pages()[1]), 1);
    EXPECT_EQ(pool->refcount(a.pages()[0]), 2);
    EXPECT_TRUE(rows_hold(b, 0, 6, 4));  // the kept rows were copied
    write_rows(b, 6, 7, 9);
    b.commit(1);
    EXPECT_TRUE(rows_hold(a, 0, 8, 4)) << "publish " << publish;
    EXPECT_TRUE(rows_hold(b, 6, 7, 9));
    EXPECT_EQ(pool->published(a.pages()[1]), publish);
    ASSERT_TRUE(b.reserve_next(1).ok());  // its own page now: no further copy
    EXPECT_EQ(pool->usage().in_use, 3);
  }
}

TEST(LatentCache, DestructionReleasesItsPages) {
  auto pool = std::make_shared<PagePool>(small_config(false), 4, kP);
  {
    LatentCache cache(pool, 16);
    ASSERT_TRUE(cache.reserve_next(7).ok());
    cache.commit(7);
    pool->publish(cache.pages()[0], 0, toks(0));
    EXPECT_EQ(pool->usage().in_use, 2);
    EXPECT_EQ(pool->available(), 2);
  }
  EXPECT_EQ(pool->usage().in_use, 0);
  EXPECT_EQ(pool->usage().cached, 1);  // the published page stays findable
  EXPECT_EQ(pool->available(), 4);
  EXPECT_GE(pool->acquire_cached(0, toks(0)), 0);
}

TEST(LatentCache, PrivatePoolHoldsMaxTokens) {
  const auto c = small_config(false);
  LatentCache cache(c, 37);  // ceil(37 / 16) = 3 pages of the default size
  EXPECT_EQ(cache.page_tokens(), PagePool::kDefaultPageTokens);
  EXPECT_EQ(cache.pool().max_pages(), 3);
  EXPECT_EQ(cache.pool().usage().allocated, 0);
  ASSERT_TRUE(cache.reserve_next(37).ok());
  cache.commit(37);
  EXPECT_FALSE(cache.reserve_next(1).ok());
  cache.truncate(20);
  ASSERT_TRUE(cache.reserve_next(17).ok());
}

}  // namespace
}  // namespace dseek::kv
