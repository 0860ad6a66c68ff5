#include "manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <tuple>

#include "checksum.h"
#include "fd.h"
#include "registry.h"

namespace rd {
namespace {

constexpr int kMaxDepth = 512;  // nesting of JSON values a manifest may have (Python's parser stops near 1000)

[[noreturn]] void bundle_error(const std::string& message) { fail(Status::bundle, message); }

std::string hex_digest(const Json& v, const std::string& field) {
  bool ok = v.is_string() && v.get_ref<const std::string&>().size() == 64 &&
            std::all_of(v.get_ref<const std::string&>().begin(), v.get_ref<const std::string&>().end(),
                        [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  fields::need(ok, field, "64 lower-case hex digits", v);
  return v.get<std::string>();
}

// Names that reach serving configurations and code (runtime/manifest.py's ARCH_NAME and TENSOR_NAME, the schema's
// patterns): ASCII letters, digits and a few marks, 1 to 64 characters, matched whole.
constexpr const char* kArchPattern = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}";
constexpr const char* kTensorPattern = "[A-Za-z_][A-Za-z0-9_]{0,63}";

bool ascii_alnum(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

std::string name(const Json& v, const std::string& field, bool arch) {
  bool ok = v.is_string();
  if (ok) {
    const std::string& s = v.get_ref<const std::string&>();
    ok = !s.empty() && s.size() <= 64 &&
         (arch ? ascii_alnum(s[0]) : (ascii_alnum(s[0]) && !(s[0] >= '0' && s[0] <= '9')) || s[0] == '_');
    for (std::size_t i = 1; ok && i < s.size(); ++i)
      ok = ascii_alnum(s[i]) || s[i] == '_' || (arch && (s[i] == '.' || s[i] == '-'));
  }
  std::string what = arch ? "letters, digits, '_', '.' or '-'" : "an identifier";
  fields::need(ok, field, what + " of 1 to 64 characters (" + (arch ? kArchPattern : kTensorPattern) + ")", v);
  return v.get<std::string>();
}

const Json& get_or(const Json& object, const std::string& key, const Json& fallback) {
  auto it = object.find(key);
  return it == object.end() ? fallback : *it;
}

FileEntry file_entry(const Json& v, const std::string& field) {
  using namespace fields;
  static const Json onnx("onnx"), any("any"), empty = Json::object();
  static const std::vector<std::string> formats = allowed("format", "text");
  static const std::vector<std::string> precisions = allowed("precision", "none");
  static const std::vector<std::string> targets = allowed("target", "any");
  const Json& f = mapping(v, field);
  FileEntry e;
  e.path = check_relative(get(f, "path", field + ".path"), field + ".path");
  e.sha256 = hex_digest(get(f, "sha256", field + ".sha256"), field + ".sha256");
  if (f.contains("blake3")) e.blake3 = hex_digest(f["blake3"], field + ".blake3");
  e.format = string(get_or(f, "format", onnx), field + ".format", &formats);
  e.info = mapping(get_or(f, "info", empty), field + ".info");
  if (e.format == "engine")
    for (const char* key : {"tensorrt_version", "gpu", "compute_capability"})
      string(get(e.info, key, field + ".info." + key), field + ".info." + key, nullptr, 200);
  e.precision = string(get(f, "precision", field + ".precision"), field + ".precision", &precisions);
  e.target = string(get_or(f, "target", any), field + ".target", &targets);
  e.size = integer(get(f, "size", field + ".size"), field + ".size", 0);
  return e;
}

Manifest parse(const Json& d) {
  using namespace fields;
  static const Json empty = Json::object(), input("input"), logits("logits");
  Manifest m;
  m.arch = name(get(d, "arch", "arch"), "arch", true);
  const Json& classes = items(get(d, "classes", "classes"), "classes", 1, kMaxClasses);
  for (std::size_t i = 0; i < classes.size(); ++i)
    m.classes.push_back(string(classes[i], "classes[" + std::to_string(i) + "]", nullptr, 1000));
  m.preprocess = Preprocess::from_json(get(d, "preprocess", "preprocess"));
  const Json& inp = mapping(get(d, "input", "input"), "input");
  const Json& batch = mapping(get(inp, "batch", "input.batch"), "input.batch");
  const char* keys[3] = {"min", "opt", "max"};
  for (int i = 0; i < 3; ++i)
    m.batch[static_cast<std::size_t>(i)] = integer(get(batch, keys[i], std::string("input.batch.") + keys[i]),
                                                   std::string("input.batch.") + keys[i], 1, kMaxBatch);
  need(m.batch[0] <= m.batch[1] && m.batch[1] <= m.batch[2], "input.batch", "min <= opt <= max",
       Json(std::to_string(m.batch[0]) + ", " + std::to_string(m.batch[1]) + ", " + std::to_string(m.batch[2])));
  if (inp.contains("shape"))
    need(py_equal(inp["shape"], Json::array({m.preprocess.channels(), m.preprocess.height(), m.preprocess.width()})),
         "input.shape", "[C, H, W] of preprocess", inp["shape"]);
  static const Json float32("float32");
  static const std::vector<std::string> dtypes{"float32"};
  string(get_or(inp, "dtype", float32), "input.dtype", &dtypes);
  const Json& out = mapping(get_or(d, "output", empty), "output");
  if (out.contains("shape"))
    need(py_equal(out["shape"], Json::array({m.classes.size()})), "output.shape", "[number of classes]", out["shape"]);
  string(get_or(out, "dtype", float32), "output.dtype", &dtypes);
  const Json& files = items(get(d, "files", "files"), "files", 1, kMaxFiles);
  for (std::size_t i = 0; i < files.size(); ++i)
    m.files.push_back(file_entry(files[i], "files[" + std::to_string(i) + "]"));
  for (std::size_t i = 0; i < m.files.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      need(m.files[i].path != m.files[j].path, "files", "distinct paths", Json(m.files[i].path));
  const Json& src = mapping(get_or(d, "source", empty), "source");
  for (const char* key : {"kind", "path", "sha256"})
    if (src.contains(key) && !src[key].is_null()) string(src[key], std::string("source.") + key, nullptr, 4096);
  mapping(get_or(d, "versions", empty), "versions");
  mapping(get_or(d, "export_args", empty), "export_args");
  m.input_name = name(get_or(inp, "name", input), "input.name", false);
  m.output_name = name(get_or(out, "name", logits), "output.name", false);
  return m;
}

std::string join(const std::string& a, const std::string& b) {
  if (!b.empty() && b[0] == '/') return b;
  if (a.empty() || a.back() == '/') return a + b;
  return a + "/" + b;
}

// posixpath.normpath: "." and empty parts dropped, ".." applied, two leading slashes kept as POSIX allows.
std::string normpath(const std::string& path) {
  if (path.empty()) return ".";
  int initial = path[0] == '/' ? (path.compare(0, 2, "//") == 0 && path.compare(0, 3, "///") != 0 ? 2 : 1) : 0;
  std::vector<std::string> parts;
  for (std::size_t start = 0; start <= path.size();) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    start = end + 1;
    if (part.empty() || part == ".") continue;
    if (part != ".." || (!initial && parts.empty()) || (!parts.empty() && parts.back() == ".."))
      parts.push_back(part);
    else if (!parts.empty())
      parts.pop_back();
  }
  std::string out(static_cast<std::size_t>(initial), '/');
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? "/" : "") + parts[i];
  return out.empty() ? "." : out;
}

// Python 3.11's posixpath._joinrealpath with strict=False: links resolved one component at a time, a component that
// cannot be examined kept as it is, and a loop ending the resolution there (`ok` false).
std::pair<std::string, bool> join_realpath(std::string path, std::string rest,
                                           std::map<std::string, std::optional<std::string>>& seen) {
  if (!rest.empty() && rest[0] == '/') {
    rest.erase(0, 1);
    path = "/";
  }
  while (!rest.empty()) {
    std::size_t cut = rest.find('/');
    std::string name = rest.substr(0, cut);
    rest = cut == std::string::npos ? "" : rest.substr(cut + 1);
    if (name.empty() || name == ".") continue;
    if (name == "..") {
      if (!path.empty()) {
        std::size_t i = path.rfind('/') + 1;
        std::string head = path.substr(0, i), tail = path.substr(i);
        while (head.size() > 1 && head.back() == '/') head.pop_back();
        path = tail == ".." ? join(join(head, ".."), "..") : head;
      } else {
        path = "..";
      }
      continue;
    }
    std::string next = join(path, name);
    struct stat st {};
    if (::lstat(next.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) {
      path = next;
      continue;
    }
    auto known = seen.find(next);
    if (known != seen.end()) {
      if (known->second) {
        path = *known->second;
        continue;
      }
      return {join(next, rest), false};  // a loop
    }
    seen[next] = std::nullopt;
    std::vector<char> buf(4096);
    ssize_t n = ::readlink(next.c_str(), buf.data(), buf.size());
    if (n < 0) throw std::runtime_error(std::string(std::strerror(errno)) + ": " + quote_str(next));
    bool ok = false;
    std::tie(path, ok) = join_realpath(path, std::string(buf.data(), static_cast<std::size_t>(n)), seen);
    if (!ok) return {join(path, rest), false};
    seen[next] = path;
  }
  return {path, true};
}

// pathlib.Path.resolve() (Python 3.11, not strict): realpath, made absolute, and a link loop reported.
std::string resolve(const std::string& p) {
  std::map<std::string, std::optional<std::string>> seen;
  std::string path = join_realpath("", p, seen).first;
  if (path.empty() || path[0] != '/') path = join(fs::current_path().string(), path);
  path = normpath(path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ELOOP)
    throw std::runtime_error("Symlink loop from " + quote_str(path));
  return path;
}

bool inside(const std::string& root, const std::string& target) {
  if (target == root) return true;
  std::string prefix = root == "/" ? "/" : root + "/";
  return target.compare(0, prefix.size(), prefix) == 0;
}

// The file's bytes, or `over` when it holds more than `cap` (read in pieces: a 32 MiB buffer is not zero-filled for a
// 3 kB manifest).
std::string read_capped(const fs::path& path, std::uintmax_t cap, bool& over) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot open: ") + std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > cap) break;
  }
  over = text.size() > cap;
  return text;
}

}  // namespace

Manifest Manifest::from_json(const Json& d) {
  if (!d.is_object())
    bundle_error(std::string(kManifestName) + " does not hold a JSON object; the bundle is damaged, export it again");
  static const Json none;
  const Json& version = get_or(d, "format_version", none);
  if (!(version.is_number() && py_equal(version, Json(kFormatVersion))))
    bundle_error("manifest format_version " + quote(version) + " is not supported; expected " +
                 std::to_string(kFormatVersion) + " (re-export the bundle with this version of resnet-deploy)");
  try {
    return parse(d);
  } catch (const FieldError& e) {
    bundle_error(std::string("manifest field ") + e.what());
  }
}

std::string check_relative(const Json& path, const std::string& field) {
  bool ok = path.is_string() && !path.get_ref<const std::string&>().empty() &&
            code_points(path.get_ref<const std::string&>()) <= 255;
  fields::need(ok, field, "a relative path of 1 to 255 characters", path);
  const std::string& p = path.get_ref<const std::string&>();
  // PurePosixPath's rules: not absolute, no empty, "." or ".." parts (the text is its own normal form), no
  // backslash or NUL, and no Windows drive (a second character ':').
  ok = p[0] != '/' && p.find('\\') == std::string::npos && p.find('\0') == std::string::npos;
  std::size_t first = (static_cast<unsigned char>(p[0]) < 0x80)   ? 1
                      : (static_cast<unsigned char>(p[0]) < 0xE0) ? 2
                      : (static_cast<unsigned char>(p[0]) < 0xF0) ? 3
                                                                  : 4;
  ok = ok && !(p.size() > first && p[first] == ':');
  for (std::size_t start = 0; ok && start <= p.size();) {
    std::size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    std::string part = p.substr(start, end - start);
    ok = !part.empty() && part != "." && part != "..";
    start = end + 1;
  }
  fields::need(ok, field, "a relative path inside the bundle (no '..', not absolute)", path);
  return p;
}

fs::path bundle_path(const fs::path& bundle, const std::string& rel) {
  std::string root = resolve(bundle.string()), target;
  try {
    check_relative(Json(rel), "path");
    target = resolve(join(root, rel));
  } catch (const std::exception& e) {  // FieldError, a link loop, an unreadable link
    bundle_error("bundle file " + quote_str(rel) + " is not a plain relative path inside the bundle (" +
                 first_line(e.what()) + ")");
  }
  if (!inside(root, target))
    bundle_error("bundle file " + quote_str(rel) +
                 " resolves outside the bundle (a link that leads out of it); refused without opening it");
  return target;
}

Json parse_manifest_text(const std::string& text, const std::string& where) {
  try {
    if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0)  // Python's json refuses a byte-order mark
      throw std::runtime_error("Unexpected UTF-8 BOM (decode using utf-8-sig)");
    Json::parser_callback_t depth_limit = [](int depth, Json::parse_event_t, Json&) {
      if (depth > kMaxDepth) throw std::runtime_error("nested too deeply");
      return true;
    };
    return Json::parse(text, depth_limit);
  } catch (const std::exception& e) {
    bundle_error(where + " is not valid JSON (" + first_line(e.what()).substr(0, 200) +
                 "); the bundle is damaged, export it again");
  }
}

Manifest read_manifest(const fs::path& bundle) {
  std::error_code ec;
  if (!fs::is_directory(bundle, ec)) bundle_error("bundle directory not found: " + bundle.string());
  fs::path listed = bundle / kManifestName;
  if (!fs::exists(listed, ec) && !fs::is_symlink(listed, ec))
    bundle_error(bundle.string() + " is not a bundle: it has no " + kManifestName +
                 " (make one with `resnet-deploy export`)");
  fs::path path = bundle_path(bundle, kManifestName);
  std::string text;
  try {
    bool over = false;
    text = read_capped(path, kMaxManifestBytes, over);
    if (over)
      bundle_error(listed.string() + " is over " + std::to_string(kMaxManifestBytes >> 20) +
                   " MB; a manifest is a few kB, so this is not a bundle written by `resnet-deploy export`");
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    bundle_error(listed.string() + " is not valid JSON (" + first_line(e.what()) +
                 "); the bundle is damaged, export it again");
  }
  Manifest m = Manifest::from_json(parse_manifest_text(text, listed.string()));
  for (const auto& f : m.files) bundle_path(bundle, f.path);
  return m;
}

namespace {

// A descriptor of the listed file and its stat (see VerifiedFile).
Fd open_listed(const fs::path& bundle, const FileEntry& entry, struct stat& st) {
  const fs::path path = bundle_path(bundle, entry.path);
  std::error_code ec;
  if (!fs::exists(path, ec)) bundle_error("bundle file " + entry.path + " is missing from " + bundle.string());
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    const int err = errno;
    bundle_error("bundle file " + quote_str(entry.path) + " cannot be opened (" + std::strerror(err) + ")");
  }
  if (::fstat(fd.get(), &st) != 0) bundle_error("bundle file " + entry.path + " could not be read");
  if (!S_ISREG(st.st_mode)) bundle_error("bundle file " + quote_str(entry.path) + " is not a regular file; refused");
  // the kernel's own name for what was opened: a folder swapped for a link after the path was resolved shows here
  std::array<char, 4096> name{};
  const std::string link = std::string(kFdDir) + "/" + std::to_string(fd.get());
  ssize_t n = ::readlink(link.c_str(), name.data(), name.size());
  std::string opened(name.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
  const std::string deleted = " (deleted)";  // what the kernel adds once something was renamed over it
  if (opened.size() > deleted.size() && opened.compare(opened.size() - deleted.size(), deleted.size(), deleted) == 0)
    opened.resize(opened.size() - deleted.size());
  if (n > 0 && opened != path.string())
    bundle_error("bundle file " + quote_str(entry.path) + " moved while it was opened; refused");
  return fd;
}

void check_size_and_digest(const FileEntry& entry, std::uint64_t found, const std::string& digest) {
  if (found != static_cast<std::uint64_t>(entry.size) || digest != entry.sha256)
    bundle_error("bundle file " + entry.path + " does not match the manifest's sha256/size (expected " +
                 std::to_string(entry.size) + " bytes, found " + std::to_string(found) +
                 "); it was changed after export");
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

}  // namespace

CheckedFile::CheckedFile(Fd fd, const struct stat& st, std::string name)
    : fd_(std::move(fd)), st_(st), name_(std::move(name)) {
  path_ = std::string(kFdDir) + "/" + std::to_string(fd_.get());
}

void CheckedFile::unchanged() const {
  struct stat now {};
  if (::fstat(fd_.get(), &now) != 0 || !same_file(now, st_))
    bundle_error("bundle file " + name_ + " was changed while it was loaded; refused");
}

std::string VerifiedFile::read() const {
  struct stat st {};
  Fd fd = open_listed(bundle, entry, st);
  // one byte more than listed shows a file that grew since its size was read
  std::string data(st.st_size == entry.size ? static_cast<std::size_t>(entry.size) + 1 : 0, '\0');
  std::size_t found = 0;
  while (found < data.size()) {
    ssize_t got = ::read(fd.get(), &data[found], data.size() - found);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) bundle_error("bundle file " + entry.path + " could not be read");
    if (got == 0) break;
    found += static_cast<std::size_t>(got);
  }
  data.resize(found);
  const std::uint64_t size = st.st_size == entry.size ? found : static_cast<std::uint64_t>(st.st_size);
  check_size_and_digest(entry, size, size == static_cast<std::uint64_t>(entry.size) ? sha256_hex(data) : "");
  return data;
}

CheckedFile VerifiedFile::opened() const {
  struct stat st {};
  Fd fd = open_listed(bundle, entry, st);
  auto found = static_cast<std::uint64_t>(st.st_size);
  std::string digest;
  if (st.st_size == entry.size) digest = sha256_fd(fd.get(), found);  // a file that grew or shrank since shows here
  check_size_and_digest(entry, found, digest);
  return CheckedFile(std::move(fd), st, entry.path);
}

const FileEntry* find_entry(const Manifest& m, const std::string& name) {
  auto key = variant(name).key();
  for (const auto& f : m.files)
    if (std::vector<std::string>{f.format, f.precision, f.target} == key) return &f;
  return nullptr;
}

std::optional<std::pair<std::vector<std::string>, std::string>> measured_order(const fs::path& bundle) {
  Json data;
  try {
    bundle_path(bundle, kReportsDir);
    fs::path path = bundle_path(bundle, std::string(kReportsDir) + "/auto.json");
    bool over = false;
    std::string text = read_capped(path, kMaxManifestBytes, over);
    if (over) return std::nullopt;
    data = Json::parse(text);
  } catch (const std::exception&) {  // missing, unreadable, a link out of the bundle: no hint
    return std::nullopt;
  }
  if (!data.is_object() || get_or(data, "schema", Json()) != Json("resnet-deploy/auto") ||
      !get_or(data, "machines", Json()).is_array())
    return std::nullopt;
  auto key = machine_key(cpu_facts());
  Json want = Json::object();
  for (const auto& [k, v] : key) want[k] = v;
  for (const auto& entry : data["machines"]) {
    if (!entry.is_object()) continue;
    if (!py_equal(get_or(entry, "machine", Json()), want) || get_or(entry, "device", Json()) != Json("cpu") ||
        !get_or(entry, "order", Json()).is_array())
      continue;
    std::vector<std::string> names;
    for (const auto& n : entry["order"]) names.push_back(n.is_string() ? n.get<std::string>() : n.dump());
    const Json& created = get_or(entry, "created", Json("?"));
    return std::make_pair(names, created.is_string() ? created.get<std::string>() : created.dump());
  }
  return std::nullopt;
}

}  // namespace rd
