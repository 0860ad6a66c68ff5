#include "json_fields.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace rd {
namespace {

constexpr std::size_t kMaxList = 8;  // reprlib's maxlist / maxdict, as runtime/errors.py sets them
constexpr int kMaxLevel = 3;

// Decode one UTF-8 code point at `i` (the text came from nlohmann's parser, which checked it).
std::uint32_t next_cp(const std::string& s, std::size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
  std::uint32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1Fu) : extra == 2 ? (c & 0x0Fu) : (c & 0x07u);
  ++i;
  for (int k = 0; k < extra && i < s.size(); ++k, ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3Fu);
  return cp;
}

std::vector<std::string> split_cps(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t start = i;
    next_cp(s, i);
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::string join_cps(const std::vector<std::string>& cps, std::size_t from, std::size_t to) {
  std::string out;
  for (std::size_t i = from; i < to && i < cps.size(); ++i) out += cps[i];
  return out;
}

// builtins.repr of a str (CPython's unicode_repr: single quotes unless the text has ' and no ").
std::string py_str_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  char buf[16];
  for (std::size_t i = 0; i < s.size();) {
    std::size_t start = i;
    std::uint32_t cp = next_cp(s, i);
    if (cp == static_cast<unsigned char>(q) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) {
      std::snprintf(buf, sizeof buf, "\\x%02x", cp);
      out += buf;
    } else {
      out += s.substr(start, i - start);
    }
  }
  out += q;
  return out;
}

// reprlib's middle elision of a long repr: keep the head and the tail around "...".
std::string elide(const std::string& text, std::size_t limit) {
  auto cps = split_cps(text);
  if (cps.size() <= limit) return text;
  std::size_t i = (limit - 3) / 2, j = limit - 3 - i;
  return join_cps(cps, 0, i) + "..." + join_cps(cps, cps.size() - j, cps.size());
}

std::string py_float_repr(double x) {
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  int p = 1;
  for (; p <= 17; ++p) {  // the shortest digits that read back as x (Python's repr)
    std::snprintf(buf, sizeof buf, "%.*e", p - 1, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string e(buf);
  auto epos = e.find('e');
  std::string mant = e.substr(0, epos);
  int exp10 = std::atoi(e.c_str() + epos + 1);
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp10 >= -5 + 1 && exp10 < 16) {  // CPython's repr: positional from 1e-4 up to 1e16
    int point = exp10 + 1;
    if (point <= 0) {
      out = "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
    } else if (static_cast<std::size_t>(point) >= digits.size()) {
      out = digits + std::string(static_cast<std::size_t>(point) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<std::size_t>(point)) + "." + digits.substr(static_cast<std::size_t>(point));
    }
  } else {
    out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    std::snprintf(buf, sizeof buf, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    out += buf;
  }
  return (neg ? "-" : "") + out;
}

std::string repr1(const Json& v, int level, bool tuples = false) {
  switch (v.type()) {
    case Json::value_t::null:
      return "None";
    case Json::value_t::boolean:
      return v.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer:
      return std::to_string(v.get<std::int64_t>());
    case Json::value_t::number_unsigned:
      return std::to_string(v.get<std::uint64_t>());
    case Json::value_t::number_float:
      return elide(py_float_repr(v.get<double>()), 200);
    case Json::value_t::string: {
      auto cps = split_cps(v.get_ref<const std::string&>());
      return elide(py_str_repr(join_cps(cps, 0, 200)), 200);
    }
    case Json::value_t::array: {
      const char* open = tuples ? "(" : "[";
      const char* close = tuples ? ")" : "]";
      if (v.empty()) return std::string(open) + close;
      if (level <= 0) return std::string(open) + "..." + close;
      std::string out = open;
      std::size_t n = 0;
      for (const auto& x : v) {
        if (n == kMaxList) {
          out += ", ...";
          break;
        }
        out += (n++ ? ", " : "") + repr1(x, level - 1, tuples);
      }
      return out + (tuples && v.size() == 1 ? "," : "") + close;
    }
    case Json::value_t::object: {
      if (v.empty()) return "{}";
      if (level <= 0) return "{...}";
      std::string out = "{";
      std::size_t n = 0;
      for (auto it = v.begin(); it != v.end(); ++it) {  // nlohmann keeps keys sorted, as reprlib sorts them
        if (n == kMaxList) {
          out += ", ...";
          break;
        }
        out += (n++ ? ", " : "") + repr1(Json(it.key()), level - 1) + ": " + repr1(it.value(), level - 1);
      }
      return out + "}";
    }
    default:
      return "<binary>";
  }
}

std::string bounds(std::optional<double> lo, std::optional<double> hi) {
  if (lo && hi) return " from " + format_g(*lo) + " to " + format_g(*hi);
  if (lo) return " >= " + format_g(*lo);
  if (hi) return " <= " + format_g(*hi);
  return "";
}

}  // namespace

std::size_t code_points(const std::string& utf8) {
  std::size_t n = 0;
  for (unsigned char c : utf8) n += (c & 0xC0) != 0x80;
  return n;
}

std::string format_g(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

std::string quote(const Json& value, std::size_t limit) {
  std::string text = repr1(value, kMaxLevel);
  auto cps = split_cps(text);
  return cps.size() <= limit ? text : join_cps(cps, 0, limit - 3) + "...";
}

std::string quote_tuple(const Json& value, std::size_t limit) {
  std::string text = repr1(value, kMaxLevel, true);
  auto cps = split_cps(text);
  return cps.size() <= limit ? text : join_cps(cps, 0, limit - 3) + "...";
}

std::string quote_str(const std::string& utf8, std::size_t limit) { return quote(Json(utf8), limit); }

bool py_equal(const Json& a, const Json& b) {
  auto numeric = [](const Json& v) { return v.is_number() || v.is_boolean(); };
  if (numeric(a) && numeric(b)) {
    auto as_double = [](const Json& v) { return v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>(); };
    if (a.is_number_float() || b.is_number_float()) return as_double(a) == as_double(b);
    auto as_int = [](const Json& v) -> long double {
      return v.is_boolean()           ? (v.get<bool>() ? 1 : 0)
             : v.is_number_unsigned() ? static_cast<long double>(v.get<std::uint64_t>())
                                      : static_cast<long double>(v.get<std::int64_t>());
    };
    return as_int(a) == as_int(b);
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!py_equal(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !py_equal(it.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

namespace fields {

bool is_real(const Json& v) { return v.is_number(); }  // nlohmann's booleans are not numbers

void need(bool ok, const std::string& field, const std::string& want, const Json& found) {
  if (!ok) throw FieldError(field + " must be " + want + ", found " + quote(found));
}

const Json& get(const Json& object, const std::string& key, const std::string& field) {
  auto it = object.find(key);
  if (it == object.end()) throw FieldError(field + " is missing");
  return *it;
}

std::int64_t integer(const Json& v, const std::string& field, std::optional<std::int64_t> lo,
                     std::optional<std::int64_t> hi) {
  bool ok = v.is_number_integer();
  // an unsigned value above int64's range is above every upper bound this reader uses (and meets any lower one)
  bool big = ok && v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX);
  std::int64_t x = !ok ? 0 : big ? INT64_MAX : v.get<std::int64_t>();
  if (ok) ok = big ? !hi : (!lo || x >= *lo) && (!hi || x <= *hi);
  std::optional<double> dlo, dhi;
  if (lo) dlo = static_cast<double>(*lo);
  if (hi) dhi = static_cast<double>(*hi);
  need(ok, field, "an integer" + bounds(dlo, dhi), v);
  return x;
}

double number(const Json& v, const std::string& field, std::optional<double> lo, std::optional<double> hi,
              std::optional<double> above) {
  bool ok = is_real(v) && std::isfinite(v.get<double>());
  double x = ok ? v.get<double>() : 0.0;
  ok = ok && (!lo || x >= *lo) && (!hi || x <= *hi) && (!above || x > *above);
  std::string want = "a finite number" + (above ? " above " + format_g(*above) : bounds(lo, hi));
  need(ok, field, want, v);
  return x;
}

std::string string(const Json& v, const std::string& field, const std::vector<std::string>* choices,
                   std::size_t max_len) {
  if (choices != nullptr) {
    bool in = false;
    if (v.is_string())
      for (const auto& c : *choices) in = in || c == v.get_ref<const std::string&>();
    std::string want = "one of ";
    for (std::size_t i = 0; i < choices->size(); ++i) want += (i ? ", " : "") + quote_str((*choices)[i]);
    need(in, field, want, v);
  }
  bool ok = v.is_string() && !v.get_ref<const std::string&>().empty() &&
            code_points(v.get_ref<const std::string&>()) <= max_len;
  need(ok, field, "a string of 1 to " + std::to_string(max_len) + " characters", v);
  return v.get<std::string>();
}

const Json& mapping(const Json& v, const std::string& field) {
  need(v.is_object(), field, "an object", v);
  return v;
}

const Json& items(const Json& v, const std::string& field, std::size_t min_len, std::size_t max_len) {
  need(v.is_array(), field, "a list", v);
  if (v.size() < min_len || v.size() > max_len)
    throw FieldError(field + " must hold " + std::to_string(min_len) + " to " + std::to_string(max_len) +
                     " items, found " + std::to_string(v.size()));
  return v;
}

}  // namespace fields
}  // namespace rd
