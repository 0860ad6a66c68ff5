// sha256 (OpenSSL's EVP) of bytes, whole or piece by piece, and of files streamed through one buffer; XXH3-128
// (libxxhash) for the private cache's entries, where nothing needs a cryptographic digest (cache.h says why).
#pragma once

#include <openssl/evp.h>
#include <xxhash.h>

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

// XXH3's 128-bit hash fed piece by piece; `hex()` gives its canonical (big-endian) form, as Python's xxhash prints it.
class Xxh3_128 {
 public:
  Xxh3_128();
  void update(const void* data, std::size_t size);
  std::string hex() const;

 private:
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state_{XXH3_createState(), &XXH3_freeState};
};

std::string sha256_hex(const std::string& bytes);
// sha256 of an open file descriptor's remaining bytes; `read` receives the number of bytes hashed.
std::string sha256_fd(int fd, std::uint64_t& read);

}  // namespace rd
