// The SDK's private cache of compiled models, by runtime/cache.py's rules and in its entry format. A cached compiled
// model is code the process will run, so an entry must be one this user wrote for exactly the content it is used for:
// - folders are opened one component at a time below the cache root, without following links (O_NOFOLLOW, openat),
//   made 0700 when created, and refused when owned by another user or writable by group or others (the caller then
//   runs without a cache and says why);
// - an entry is written to a new 0600 file in its folder and renamed over its name (a link planted at the name is
//   replaced, never followed); it begins with the line "resnet-deploy cache entry 1 xxh3-128 <hex>", the XXH3-128 of
//   its binding (8-byte little-endian length, then the binding: what it was made from) and of its bytes, and a read
//   recomputes that digest over the bytes it mapped and returns them only when it matches.
// What remains: this user (and root) can write the folder, so they can write an entry whose digest matches; the
// digest guards against damaged and misplaced entries, the folder checks against everyone else. For that a
// non-cryptographic 128-bit hash serves as well as sha256 and is about 7x as fast (Python's entries use blake3 or
// sha256 under other names; the two never read each other's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "fd.h"

namespace rd {

namespace fs = std::filesystem;

// An entry's checked bytes: a private copy-on-write mapping of its file (the reader may write to it without
// touching the file), the header left out.
class Mapping {
 public:
  Mapping(void* base, std::size_t length) noexcept : base_(base), length_(length) {}
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::uint8_t* data() const noexcept { return static_cast<std::uint8_t*>(base_) + offset_; }
  std::size_t size() const noexcept { return length_ - offset_; }
  void skip(std::size_t n) noexcept { offset_ += n < size() ? n : size(); }

 private:
  void* base_;
  std::size_t length_, offset_ = 0;
};

class PrivateDir {
 public:
  // root/parts..., made where missing (0700) and opened without following links; nullptr, and `why` (one line),
  // where it cannot be made or opened, or is a link, another user's or writable by group or others; `warn` says
  // whether that is worth a warning (all but a cache root that cannot be made, as in a read-only home).
  static std::unique_ptr<PrivateDir> open(const fs::path& root, const std::vector<std::string>& parts, std::string& why,
                                          bool& warn);

  const fs::path& path() const noexcept { return path_; }
  // The entry `name` when it exists, is a regular file of this user's that others cannot write, and its digest
  // matches `binding` and its bytes; nullptr otherwise, with `why` (one line; empty when there is no entry).
  std::unique_ptr<Mapping> read(const std::string& name, const std::string& binding, std::string& why) const;
  // Entry `name` for `binding`, its bytes written by `produce` (atomically: a new file renamed over the name); false
  // and `why` where it could not be written, which only costs the next start its compile.
  bool write(const std::string& name, const std::string& binding, const std::function<void(std::ostream&)>& produce,
             std::string& why) const noexcept;

 private:
  PrivateDir(fs::path path, Fd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  fs::path path_;
  Fd fd_;
};

}  // namespace rd
