// io::SafetensorsFile::copy_into_memory (--no-mmap): every tensor moves into private memory on a
// 64-byte boundary with its bytes unchanged, the file's mapping is given back, progress reaches
// the file size, a second call does nothing, and a file cut short is a one-line error that leaves
// the views on the mapping.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "io/safetensors.h"

namespace dseek::io {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("dseek_copy_" + std::to_string(::getpid()) + "_" + name)).string();
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

// Whether /proc/self/maps lists a mapping of `path`.
bool mapped_in_this_process(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.size() >= path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0) return true;
  return false;
}

struct Spec {
  std::string name, dtype;
  int64_t count;  // elements
  int elem;       // bytes an element
};

// A safetensors file of the given tensors, packed back to back in this order (so at odd
// offsets), with the header padded by spaces until the data section starts `start_mod_64` bytes
// past a 64-byte boundary. Returns the file's bytes; each tensor's bytes are random.
std::vector<uint8_t> make_file(const std::vector<Spec>& specs, size_t start_mod_64,
                               std::map<std::string, std::vector<uint8_t>>* contents) {
  std::mt19937 rng(11);
  std::string header = "{";
  std::vector<uint8_t> data;
  for (const Spec& s : specs) {
    const size_t begin = data.size(), bytes = static_cast<size_t>(s.count) * static_cast<size_t>(s.elem);
    std::vector<uint8_t>& mine = (*contents)[s.name];
    for (size_t i = 0; i < bytes; ++i) mine.push_back(static_cast<uint8_t>(rng()));
    data.insert(data.end(), mine.begin(), mine.end());
    if (header.size() > 1) header += ",";
    header += fmt::format(R"("{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", s.name, s.dtype, s.count,
                          begin, begin + bytes);
  }
  header += "}";
  while ((8 + header.size()) % 64 != start_mod_64) header += " ";
  const uint64_t n = header.size();
  std::vector<uint8_t> file(8 + header.size() + data.size());
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(file.data() + 8 + header.size(), data.data(), data.size());
  return file;
}

std::string write_file(const std::vector<uint8_t>& bytes, const std::string& name) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  return path;
}

const std::vector<Spec> kSpecs = {
    {"a.weight", "U8", 37, 1},
    {"b.scale", "F32", 5, 4},
    {"empty", "F32", 0, 4},
    {"c.weight", "BF16", 21, 2},
    {"big.weight", "F8_E4M3", (int64_t{33} << 20) + 123, 1},  // read in two pieces of at most 32 MB
    {"d.weight", "F32", 3, 4},
};

TEST(SafetensorsCopy, EveryTensorLandsOn64BytesWithItsBytes) {
  std::map<std::string, std::vector<uint8_t>> contents;
  const std::vector<uint8_t> bytes = make_file(kSpecs, 24, &contents);  // 8-aligned, as real headers
  const std::string path = write_file(bytes, "aligned");
  auto opened = SafetensorsFile::open(path);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  SafetensorsFile& f = *opened.value();
  int misaligned_before = 0;
  for (const auto& [name, t] : f.tensors()) misaligned_before += reinterpret_cast<uintptr_t>(t.data) % 64 != 0;
  EXPECT_GE(misaligned_before, 4);  // the premise: the file places them anywhere
  EXPECT_FALSE(f.in_anonymous_memory());
  EXPECT_TRUE(mapped_in_this_process(path));

  std::vector<size_t> progress;
  ASSERT_TRUE(f.copy_into_memory([&](size_t n) { progress.push_back(n); }).ok());
  EXPECT_TRUE(f.in_anonymous_memory());
  EXPECT_FALSE(mapped_in_this_process(path));  // nothing reads through the mapping any more
  ASSERT_EQ(f.tensors().size(), kSpecs.size());
  for (const auto& [name, t] : f.tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << name;
    ASSERT_EQ(t.nbytes, contents[name].size()) << name;
    EXPECT_EQ(0, std::memcmp(t.data, contents[name].data(), t.nbytes)) << name;
  }
  const TensorView* big = f.find("big.weight");
  EXPECT_GE(anonymous_kb_at(big->data), static_cast<long>(big->nbytes / 1024));  // private memory now
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), bytes.size());
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_LE(progress[i - 1], progress[i]);

  // A second call has nothing to do: the views stay where they are.
  std::map<std::string, const uint8_t*> at;
  for (const auto& [name, t] : f.tensors()) at[name] = t.data;
  EXPECT_TRUE(f.copy_into_memory().ok());
  for (const auto& [name, t] : f.tensors()) EXPECT_EQ(t.data, at[name]) << name;

  // The file itself was only read.
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  ASSERT_EQ(ss.str().size(), bytes.size());
  EXPECT_EQ(0, std::memcmp(ss.str().data(), bytes.data(), bytes.size()));
  std::filesystem::remove(path);
}

// A file cut short after it was opened: a one-line error naming it and the first byte it could
// not read, and the views stay on the mapping.
TEST(SafetensorsCopy, ATruncatedFileIsAnErrorAndTheViewsStay) {
  std::map<std::string, std::vector<uint8_t>> contents;
  const std::vector<uint8_t> bytes = make_file({{"w", "U8", int64_t{3} << 20, 1}}, 8, &contents);
  const std::string path = write_file(bytes, "truncated");
  auto opened = SafetensorsFile::open(path);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  SafetensorsFile& f = *opened.value();
  const uint8_t* before = f.find("w")->data;
  std::filesystem::resize_file(path, size_t{1} << 20);
  const Status s = f.copy_into_memory();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("read failed at byte 1048576"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  EXPECT_FALSE(f.in_anonymous_memory());
  EXPECT_TRUE(mapped_in_this_process(path));
  EXPECT_EQ(f.find("w")->data, before);
  std::filesystem::remove(path);
}

TEST(SafetensorsCopy, AFileWithoutTensorsCopiesNothing) {
  std::map<std::string, std::vector<uint8_t>> contents;
  const std::vector<uint8_t> bytes = make_file({}, 16, &contents);
  const std::string path = write_file(bytes, "none");
  auto opened = SafetensorsFile::open(path);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  std::vector<size_t> progress;
  EXPECT_TRUE(opened.value()->copy_into_memory([&](size_t n) { progress.push_back(n); }).ok());
  EXPECT_TRUE(opened.value()->tensors().empty());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), bytes.size());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dseek::io
