#include "checksum.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "error.h"

namespace rd {
namespace {

struct Md {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Md() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail(Status::internal, "sha256 unavailable");
  }
  void update(const void* p, std::size_t n) {
    if (EVP_DigestUpdate(ctx.get(), p, n) != 1) fail(Status::internal, "sha256 failed");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx.get(), digest, &n) != 1) fail(Status::internal, "sha256 failed");
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < n; ++i) {
      out += digits[digest[i] >> 4];
      out += digits[digest[i] & 15];
    }
    return out;
  }
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Md md;
  md.update(bytes.data(), bytes.size());
  return md.hex();
}

std::string sha256_fd(int fd, std::uint64_t& total) {
  Md md;
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
