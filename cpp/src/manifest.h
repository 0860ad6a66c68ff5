// The bundle contract read from C++: BUNDLE/manifest.json checked field by field as runtime/manifest.py checks it
// (docs/manifest.schema.json describes the document), paths kept inside the bundle, and each file's size and sha256
// verified before a library opens it. Refusals are Error(Status::bundle) with Python's words.
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "fd.h"
#include "json_fields.h"
#include "preprocess.h"

namespace rd {

namespace fs = std::filesystem;

constexpr int kFormatVersion = 1;
constexpr std::uintmax_t kMaxManifestBytes = 32u << 20;
constexpr std::size_t kMaxClasses = 100000, kMaxFiles = 64;
constexpr std::int64_t kMaxBatch = 4096;
inline const char* kManifestName = "manifest.json";
inline const char* kReportsDir = "reports";
inline const char* kFdDir = "/proc/self/fd";  // Linux: opening kFdDir/N opens the very file descriptor N has open

struct FileEntry {
  std::string path, sha256, precision, format, target;
  std::optional<std::string> blake3;
  std::int64_t size = 0;
  Json info;
};

struct Manifest {
  std::string arch;
  std::vector<std::string> classes;
  Preprocess preprocess;
  std::vector<FileEntry> files;
  std::array<std::int64_t, 3> batch{1, 8, 32};  // min, opt, max
  std::string input_name = "input", output_name = "logits";

  // Manifest.from_dict: the whole document checked; the first bad field is a BundleError ("manifest field ...").
  static Manifest from_json(const Json& d);
};

// check_relative: `path` when it is a plain relative path (no "..", not absolute), FieldError otherwise.
std::string check_relative(const Json& path, const std::string& field);
// The real path of bundle/rel, refused when it resolves outside the bundle (links followed). Opens nothing.
fs::path bundle_path(const fs::path& bundle, const std::string& rel);
// read_manifest: read, parse and check BUNDLE/manifest.json and that every listed file stays inside the bundle.
Manifest read_manifest(const fs::path& bundle);
// Parse manifest text (the JSON rules of read_manifest: no byte-order mark, bounded nesting).
Json parse_manifest_text(const std::string& text, const std::string& where);
// A bundle file opened once and checked through that descriptor (VerifiedFile::opened). `path()` opens that same file
// (/proc/self/fd/N) whatever is renamed over the bundle's path; `unchanged()` refuses (BundleError) a file whose size,
// inode or change times moved since it was opened: written in place while a library read it. What it cannot see is a
// process allowed to write the file storing into it through a shared mapping made earlier (no timestamp moves); a
// bundle should be writable only by whoever installs it.
class CheckedFile {
 public:
  CheckedFile(Fd fd, const struct stat& st, std::string name);
  const std::string& path() const noexcept { return path_; }
  void unchanged() const;

 private:
  Fd fd_;
  struct stat st_;
  std::string name_, path_;
};

// A bundle file handed to a loader, which gets at it only through the check (runtime/verified.py's VerifiedFile),
// never by its path, which could name another file by the time a library opened it. The file is opened without
// following a link in its last component (the path is already resolved inside the bundle), must be a regular file,
// and the file that path named.
struct VerifiedFile {
  fs::path bundle;
  FileEntry entry;
  // The file's bytes, once their size and sha256 match the manifest (BundleError otherwise).
  std::string read() const;
  // The file opened once and its size and sha256 checked through that descriptor (BundleError otherwise).
  CheckedFile opened() const;
  // "sha256-<digest>": names the content, e.g. for compiled-model caches.
  std::string content_id() const { return "sha256-" + entry.sha256; }
};
// The manifest's file that variant `name` runs, or nullptr.
const FileEntry* find_entry(const Manifest& m, const std::string& name);
// autotune.measured_order for device "cpu": the names in this machine's entry of BUNDLE/reports/auto.json and the
// entry's "created" text; nothing when the file, the entry or the machine is missing (never an error).
std::optional<std::pair<std::vector<std::string>, std::string>> measured_order(const fs::path& bundle);

}  // namespace rd
