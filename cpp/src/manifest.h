// The bundle contract read from C++: BUNDLE/manifest.json checked field by field as runtime/manifest.py checks it
// (docs/manifest.schema.json describes the document), paths kept inside the bundle, and each file's size and sha256
// verified before a library opens it. Refusals are Error(Status::bundle) with Python's words.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

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
// VerifiedFile.path(): the file's real path once its size and sha256 match the entry (BundleError otherwise).
fs::path verified_path(const fs::path& bundle, const FileEntry& entry);

// A bundle file handed to a loader, which gets at it only through the check (runtime/manifest.py's VerifiedFile).
struct VerifiedFile {
  fs::path bundle;
  FileEntry entry;
  // The file's real path, once its size and sha256 match the manifest (checked at each call).
  fs::path path() const { return verified_path(bundle, entry); }
  // "sha256-<digest>": names the content, e.g. for compiled-model caches.
  std::string content_id() const { return "sha256-" + entry.sha256; }
};
// The manifest's file that variant `name` runs, or nullptr.
const FileEntry* find_entry(const Manifest& m, const std::string& name);
// autotune.measured_order for device "cpu": the names in this machine's entry of BUNDLE/reports/auto.json and the
// entry's "created" text; nothing when the file, the entry or the machine is missing (never an error).
std::optional<std::pair<std::vector<std::string>, std::string>> measured_order(const fs::path& bundle);

}  // namespace rd
