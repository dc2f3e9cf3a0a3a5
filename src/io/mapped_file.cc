#include "io/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

namespace dseek::io {

Expected<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::errorf("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::errorf("{}: not a regular file", path);
  }
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ == 0) {
    ::close(fd);
    return file;
  }
  // PROT_READ + MAP_PRIVATE: the weights are never written, and a private mapping keeps a
  // stray write from reaching the user's checkpoint. No MAP_POPULATE: pages come in on first
  // touch, so opening a huge checkpoint is instant and only the experts used are read.
  void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p != MAP_FAILED) {
    file->data_ = static_cast<const uint8_t*>(p);
    file->mapped_ = true;
    ::close(fd);
    return file;
  }
  log_warn("{}: mmap failed ({}); reading the file into memory instead", path, std::strerror(errno));
  file->fallback_.resize(file->size_);
  size_t done = 0;
  while (done < file->size_) {
    ssize_t n = ::read(fd, file->fallback_.data() + done, file->size_ - done);
    if (n <= 0) {
      ::close(fd);
      return Status::errorf("{}: read failed after {} of {} bytes", path, done, file->size_);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  file->data_ = file->fallback_.data();
  return file;
}

MappedFile::~MappedFile() { unmap(); }

void MappedFile::unmap() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
  mapped_ = false;
  data_ = nullptr;
}

Expected<std::string> read_text_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status::errorf("{}: is a directory, expected a file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::errorf("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::errorf("{}: read failed", path);
  return ss.str();
}

}  // namespace dseek::io
