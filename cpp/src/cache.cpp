#include "cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>
#include <streambuf>

#include "checksum.h"
#include "error.h"

namespace rd {
namespace {

const std::string kMagic = "resnet-deploy cache entry 1";  // runtime/cache.py's MAGIC
constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// The entry digest's algorithm: XXH3-128, not sha256. Whoever can write the folder can write any digest (cache.h), so
// the digest only has to catch damaged and misplaced entries, which a 128-bit hash does as well as a cryptographic one;
// a ResNet-50's ~100 MB entry is checked before its import in ~13 ms instead of ~90 ms (sha256 with SHA-NI), so the
// import again overlaps the model file's sha256 on a cached start.
const std::string kAlgorithm = "xxh3-128";
constexpr std::size_t kHeaderSize = 27 + 10 + 32 + 1;  // kMagic, " xxh3-128 ", the hex digest, "\n"

std::string header_line(const std::string& hex) { return kMagic + " " + kAlgorithm + " " + hex + "\n"; }

// Why a folder or entry with this stat must not be trusted, or "" (runtime/cache.py's _unsafe).
std::string unsafe(const struct stat& st, const std::string& what) {
  if (S_ISLNK(st.st_mode)) return what + " is a symbolic link";
  if (st.st_uid != ::geteuid())
    return what + " is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
           std::to_string(::geteuid()) + ")";
  if (st.st_mode & 022) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return what + " is writable by group or others (mode " + mode + ")";
  }
  return "";
}

// The reason an open of `path` failed with `err`: a link at its name is said as such.
std::string open_failure(const fs::path& path, int err) {
  struct stat st {};
  if (err == ELOOP || (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))) return "a symbolic link";
  return std::strerror(err);
}

// The digest an entry's header holds: XXH3-128(len(binding) as 8 bytes little-endian + binding + bytes), started here
// and fed the bytes by the caller.
Xxh3_128 bound_digest(const std::string& binding) {
  Xxh3_128 md;
  std::array<unsigned char, 8> length{};
  for (std::size_t i = 0; i < length.size(); ++i)
    length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(binding.size()) >> (8 * i));
  md.update(length.data(), length.size());
  md.update(binding.data(), binding.size());
  return md;
}

// The header's length when `m` begins with a header whose digest matches `binding` and the bytes after it, else 0.
std::size_t checked_header(const Mapping& m, const std::string& binding) {
  const char* text = reinterpret_cast<const char*>(m.data());
  const void* end = std::memchr(text, '\n', std::min<std::size_t>(m.size(), 200));
  if (end == nullptr) return 0;
  const std::size_t length = static_cast<std::size_t>(static_cast<const char*>(end) - text) + 1;
  const std::string header(text, length);
  const std::string prefix = kMagic + " " + kAlgorithm + " ";  // another algorithm's entry: compiled again, replaced
  if (header.compare(0, prefix.size(), prefix) != 0) return 0;
  Xxh3_128 md = bound_digest(binding);
  md.update(m.data() + length, m.size() - length);
  return header == header_line(md.hex()) ? length : 0;
}

// An ostream's buffer writing to a descriptor from offset `base` on, and seeking in it: OpenVINO's export goes back to
// fill in a size it has written past.
class FdWriter : public std::streambuf {
 public:
  FdWriter(int fd, off_t base) : fd_(fd), base_(base), pos_(base), end_(base), buf_(std::size_t{1} << 20) {
    setp(buf_.data(), buf_.data() + buf_.size());
  }
  bool ok() const noexcept { return ok_; }
  off_t end() const noexcept { return end_; }

 protected:
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override { return drain() ? 0 : -1; }
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    if (!drain()) return pos_type(off_type(-1));
    const off_t from = dir == std::ios_base::beg ? base_ : dir == std::ios_base::cur ? pos_ : end_;
    if (from + off < base_) return pos_type(off_type(-1));
    pos_ = from + static_cast<off_t>(off);
    return pos_type(off_type(pos_ - base_));
  }
  pos_type seekpos(pos_type to, std::ios_base::openmode which) override {
    return seekoff(off_type(to), std::ios_base::beg, which);
  }

 private:
  bool drain() {
    const auto n = static_cast<std::size_t>(pptr() - pbase());
    for (std::size_t done = 0; ok_ && done < n;) {
      ssize_t got = ::pwrite(fd_, pbase() + done, n - done, pos_);
      if (got < 0 && errno == EINTR) continue;
      ok_ = got > 0;
      if (ok_) {
        done += static_cast<std::size_t>(got);
        pos_ += got;
      }
    }
    end_ = std::max(end_, pos_);
    setp(buf_.data(), buf_.data() + buf_.size());
    return ok_;
  }
  int fd_;
  off_t base_, pos_, end_;
  std::vector<char> buf_;
  bool ok_ = true;
};

// The entry's digest over the bytes the file holds from `from` to `to`, read back (from the page cache).
std::string digest_of(int fd, const std::string& binding, off_t from, off_t to) {
  Xxh3_128 md = bound_digest(binding);
  std::vector<char> buf(std::size_t{1} << 22);
  while (from < to) {
    ssize_t got = ::pread(fd, buf.data(), std::min<std::size_t>(buf.size(), static_cast<std::size_t>(to - from)), from);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw std::runtime_error("read back failed");
    md.update(buf.data(), static_cast<std::size_t>(got));
    from += got;
  }
  return md.hex();
}

std::string random_hex() {
  std::random_device rd;
  char out[17];
  std::snprintf(out, sizeof out, "%08x%08x", rd(), rd());
  return out;
}

}  // namespace

Mapping::~Mapping() { ::munmap(base_, length_); }

std::unique_ptr<PrivateDir> PrivateDir::open(const fs::path& root, const std::vector<std::string>& parts,
                                             std::string& why, bool& warn) {
  auto refuse = [&](const std::string& reason, bool worth_a_warning) {
    why = reason;
    warn = worth_a_warning;
    return nullptr;
  };
  std::error_code ec;
  if (root.has_parent_path()) fs::create_directories(root.parent_path(), ec);  // ~/.cache: made as mkdir -p does
  if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) {
    const int err = errno;  // a read-only home: no cache, quietly
    return refuse("cannot make " + root.string() + " (" + std::strerror(err) + ")", false);
  }
  Fd fd(::open(root.c_str(), kDirFlags));
  if (!fd) {
    const std::string reason = open_failure(root, errno);
    return refuse("cannot use " + root.string() + " (" + reason + ")", reason == "a symbolic link");
  }
  fs::path where = root;
  for (std::size_t i = 0;; ++i) {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
      const int err = errno;
      return refuse("cannot use " + where.string() + " (" + std::strerror(err) + ")", true);
    }
    if (std::string bad = unsafe(st, where.string()); !bad.empty()) return refuse(bad, true);
    if (i == parts.size()) break;
    where /= parts[i];
    if (::mkdirat(fd.get(), parts[i].c_str(), 0700) != 0 && errno != EEXIST) {
      const int err = errno;
      return refuse("cannot make " + where.string() + " (" + std::strerror(err) + ")", true);
    }
    Fd sub(::openat(fd.get(), parts[i].c_str(), kDirFlags));
    if (!sub) {
      const std::string reason = open_failure(where, errno);
      return refuse("cannot use " + where.string() + " (" + reason + ")", true);
    }
    fd = std::move(sub);
  }
  return std::unique_ptr<PrivateDir>(new PrivateDir(where, std::move(fd)));
}

std::unique_ptr<Mapping> PrivateDir::read(const std::string& name, const std::string& binding, std::string& why) const {
  why.clear();
  const std::string where = (path_ / name).string();
  auto refuse = [&](const std::string& reason) {
    why = "cache entry " + where + " not used (" + reason + ")";
    return nullptr;
  };
  Fd fd(::openat(fd_.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    const int err = errno;
    return err == ENOENT ? nullptr : refuse(err == ELOOP ? "a symbolic link" : std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    const int err = errno;
    return refuse(std::strerror(err));
  }
  std::string bad = unsafe(st, "it");
  if (bad.empty() && !S_ISREG(st.st_mode)) bad = "it is not a regular file";
  if (bad.empty() && static_cast<std::size_t>(st.st_size) <= kHeaderSize) bad = "it is empty";
  if (!bad.empty()) return refuse(bad);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    return refuse(std::strerror(err));
  }
  auto mapping = std::make_unique<Mapping>(base, size);
  const std::size_t header = checked_header(*mapping, binding);
  if (header == 0) return refuse("its digest does not match its bytes or what it was made from");
  mapping->skip(header);
  return mapping;
}

bool PrivateDir::write(const std::string& name, const std::string& binding,
                       const std::function<void(std::ostream&)>& produce, std::string& why) const noexcept {
  std::string tmp;
  try {
    tmp = "." + name + "." + std::to_string(::getpid()) + "." + random_hex() + ".tmp";
    Fd fd(::openat(fd_.get(), tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) {
      const int err = errno;
      tmp.clear();
      throw std::runtime_error(std::strerror(err));
    }
    FdWriter buf(fd.get(), static_cast<off_t>(kHeaderSize));  // the header goes first, once the digest is known
    std::ostream out(&buf);
    produce(out);
    out.flush();
    if (!out || !buf.ok()) throw std::runtime_error("write failed");
    const std::string header = header_line(digest_of(fd.get(), binding, static_cast<off_t>(kHeaderSize), buf.end()));
    if (::pwrite(fd.get(), header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()))
      throw std::runtime_error("write failed");
    if (::close(fd.release()) != 0) throw std::runtime_error(std::strerror(errno));
    if (::renameat(fd_.get(), tmp.c_str(), fd_.get(), name.c_str()) != 0)
      throw std::runtime_error(std::strerror(errno));
    return true;
  } catch (const std::exception& e) {  // a full disk, OpenVINO failing to export: no entry, the model runs all the same
    if (!tmp.empty()) ::unlinkat(fd_.get(), tmp.c_str(), 0);
    try {
      why = first_line(e.what());
    } catch (...) {
    }
    return false;
  }
}

}  // namespace rd
