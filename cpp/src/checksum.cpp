#include "checksum.h"

#include <unistd.h>

#include <cerrno>
#include <vector>

#include "error.h"

namespace rd {

Sha256::Sha256() {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) fail(Status::internal, "sha256 unavailable");
}

void Sha256::update(const void* data, std::size_t size) {
  if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) fail(Status::internal, "sha256 failed");
}

namespace {
std::string to_hex(const unsigned char* digest, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[digest[i] >> 4];
    out += digits[digest[i] & 15];
  }
  return out;
}
}  // namespace

std::string Sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), digest, &n) != 1) fail(Status::internal, "sha256 failed");
  return to_hex(digest, n);
}

Xxh3_128::Xxh3_128() {
  if (!state_ || XXH3_128bits_reset(state_.get()) != XXH_OK) fail(Status::internal, "XXH3 unavailable");
}

void Xxh3_128::update(const void* data, std::size_t size) {
  if (XXH3_128bits_update(state_.get(), data, size) != XXH_OK) fail(Status::internal, "XXH3 failed");
}

std::string Xxh3_128::hex() const {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
  return to_hex(canonical.digest, sizeof canonical.digest);
}

std::string sha256_hex(const std::string& bytes) {
  Sha256 md;
  md.update(bytes.data(), bytes.size());
  return md.hex();
}

std::string sha256_fd(int fd, std::uint64_t& total) {
  Sha256 md;
  std::vector<unsigned char> buf(std::size_t{1} << 22);
  total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(Status::bundle, "could not read a bundle file");
    if (n == 0) break;
    md.update(buf.data(), static_cast<std::size_t>(n));
    total += static_cast<std::uint64_t>(n);
  }
  return md.hex();
}

}  // namespace rd
