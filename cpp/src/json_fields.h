// Typed reads of JSON values, the C++ side of runtime/fields.py: every value of a bundle's manifest is checked for its
// type and range before anything uses it, and the first bad one raises a FieldError naming the field by its path in
// the document (`files[2].size`, `preprocess.std[0]`) with the same words as Python's messages.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "error.h"

namespace rd {

using Json = nlohmann::json;

// A field of a document has the wrong type or value, or is missing (Status::bundle).
class FieldError : public Error {
 public:
  explicit FieldError(const std::string& message) : Error(Status::bundle, message) {}
};

// Python's repr of a JSON value as runtime/errors.quote renders it (reprlib limits, at most 200 characters).
std::string quote(const Json& value, std::size_t limit = 200);
// The same for a value Python holds as a tuple (lists rendered "(a, b)", "(a,)").
std::string quote_tuple(const Json& value, std::size_t limit = 200);
// Python's repr of a str.
std::string quote_str(const std::string& utf8, std::size_t limit = 200);
// Number of Unicode code points of a UTF-8 string (Python's len of a str).
std::size_t code_points(const std::string& utf8);
// Python's `format(x, "g")`.
std::string format_g(double x);
// Python's equality of two JSON values (1 == 1.0 == True; lists element-wise; objects key-wise).
bool py_equal(const Json& a, const Json& b);

namespace fields {

void need(bool ok, const std::string& field, const std::string& want, const Json& found);
const Json& get(const Json& object, const std::string& key, const std::string& field);
std::int64_t integer(const Json& v, const std::string& field, std::optional<std::int64_t> lo = std::nullopt,
                     std::optional<std::int64_t> hi = std::nullopt);
double number(const Json& v, const std::string& field, std::optional<double> lo = std::nullopt,
              std::optional<double> hi = std::nullopt, std::optional<double> above = std::nullopt);
std::string string(const Json& v, const std::string& field, const std::vector<std::string>* choices = nullptr,
                   std::size_t max_len = 1024);
const Json& mapping(const Json& v, const std::string& field);
const Json& items(const Json& v, const std::string& field, std::size_t min_len = 0, std::size_t max_len = 100000);
// True for a JSON number that is not a bool (Python's numbers.Real without bool).
bool is_real(const Json& v);

}  // namespace fields
}  // namespace rd
