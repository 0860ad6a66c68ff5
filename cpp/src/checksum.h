// sha256 (OpenSSL's EVP) of bytes and of files, streamed through one buffer.
#pragma once

#include <cstdint>
#include <string>

namespace rd {

std::string sha256_hex(const std::string& bytes);
// sha256 of an open file descriptor's remaining bytes; `read` receives the number of bytes hashed.
std::string sha256_fd(int fd, std::uint64_t& read);

}  // namespace rd
