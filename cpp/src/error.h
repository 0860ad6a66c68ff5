// The one exception type of the SDK: a status (rd_status's values) and a one-line message. The C API turns it into
// a status code and rd_last_error(); the C++ wrapper turns that back into resnet_deploy::Error.
#pragma once

#include <stdexcept>
#include <string>

namespace rd {

enum class Status { ok = 0, argument = 1, bundle = 2, image = 3, backend = 4, memory = 5, internal = 6 };

class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

[[noreturn]] inline void fail(Status status, const std::string& message) { throw Error(status, message); }

// The first line of a library's message (OpenVINO's span pages), as Python's errors.first_line.
inline std::string first_line(const std::string& text) {
  auto start = text.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return "error";
  auto end = text.find_first_of("\r\n", start);
  std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.pop_back();
  return line;
}

}  // namespace rd
