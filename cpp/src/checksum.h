// sha256 (OpenSSL's EVP) of bytes, whole or piece by piece, and of files streamed through one buffer.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rd {

// A sha256 fed piece by piece; `hex()` ends it.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t size);
  std::string hex();

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

std::string sha256_hex(const std::string& bytes);
// sha256 of an open file descriptor's remaining bytes; `read` receives the number of bytes hashed.
std::string sha256_fd(int fd, std::uint64_t& read);

}  // namespace rd
