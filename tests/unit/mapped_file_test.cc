// io::MappedFile::copy_into_memory (--no-mmap): the bytes stay at the same address with the same
// content, the range becomes anonymous memory, progress reaches the file size, and files with
// nothing to copy are left alone.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/mapped_file.h"

namespace dseek::io {
namespace {

std::string write_temp_file(const std::vector<uint8_t>& bytes, const std::string& name) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dseek_mapped_" + std::to_string(::getpid()) + "_" + name)).string();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  return path;
}

// The "Anonymous:" kB of the mapping that holds address p, from /proc/self/smaps (-1: not found).
long anonymous_kb_at(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto at = reinterpret_cast<uintptr_t>(p);
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = lo <= at && at < hi;
      continue;
    }
    long kb = 0;
    if (inside && std::sscanf(line.c_str(), "Anonymous: %ld kB", &kb) == 1) return kb;
  }
  return -1;
}

TEST(MappedFile, CopyIntoMemoryKeepsAddressAndBytes) {
  std::vector<uint8_t> bytes((size_t{5} << 20) + 123);  // not a multiple of a page or a huge page
  std::mt19937 rng(5);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  const std::string path = write_temp_file(bytes, "copy");
  auto file = MappedFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  MappedFile& f = *file.value();
  ASSERT_TRUE(f.is_mapped());
  const uint8_t* before = f.data();
  EXPECT_EQ(anonymous_kb_at(before), 0);  // a clean file mapping
  std::vector<size_t> progress;
  ASSERT_TRUE(f.copy_into_memory([&](size_t n) { progress.push_back(n); }).ok());
  EXPECT_TRUE(f.in_anonymous_memory());
  EXPECT_EQ(f.data(), before);
  EXPECT_EQ(f.size(), bytes.size());
  EXPECT_EQ(0, std::memcmp(f.data(), bytes.data(), bytes.size()));
  EXPECT_GE(anonymous_kb_at(before), static_cast<long>(bytes.size() / 1024));  // private memory now
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), bytes.size());
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_LE(progress[i - 1], progress[i]);
  // A second call has nothing to do; the bytes stay.
  EXPECT_TRUE(f.copy_into_memory().ok());
  EXPECT_EQ(0, std::memcmp(f.data(), bytes.data(), bytes.size()));
  // The file itself was only read.
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str().size(), bytes.size());
  EXPECT_EQ(0, std::memcmp(ss.str().data(), bytes.data(), bytes.size()));
  std::filesystem::remove(path);
}

// A file cut short after it was opened: a one-line error naming it, and the mapping is kept.
TEST(MappedFile, CopyIntoMemoryOfATruncatedFileIsAnError) {
  const std::string path = write_temp_file(std::vector<uint8_t>(size_t{3} << 20, 7), "truncated");
  auto file = MappedFile::open(path);
  ASSERT_TRUE(file.ok());
  std::filesystem::resize_file(path, size_t{1} << 20);
  const Status s = file.value()->copy_into_memory();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("read failed at byte 1048576"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  EXPECT_FALSE(file.value()->in_anonymous_memory());
  std::filesystem::remove(path);
}

TEST(MappedFile, CopyIntoMemoryOfAnEmptyFileIsANoOp) {
  const std::string path = write_temp_file({}, "empty");
  auto file = MappedFile::open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(file.value()->copy_into_memory().ok());
  EXPECT_FALSE(file.value()->in_anonymous_memory());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dseek::io
