// The SDK against numbers the Python runtime wrote (cpp/tests/make_fixtures.py, pointed to by $RD_FIXTURES): input
// tensors bit for bit, logits within 1e-5, 8 threads x 200 calls equal to one thread, and bad bundles, images and
// calls refused with one line. Without fixtures the tests that need them skip and say why.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cache.h"
#include "checksum.h"
#include "decode.h"
#include "error.h"
#include "json_fields.h"
#include "manifest.h"
#include "registry.h"
#include "resnet_deploy/resnet_deploy.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path fixtures() {
  const char* dir = std::getenv("RD_FIXTURES");
  return dir ? fs::path(dir) : fs::path();
}

json fixture_index() {
  std::ifstream in(fixtures() / "fixtures.json");
  return json::parse(in);
}

#define NEED_FIXTURES()                                                \
  if (fixtures().empty() || !fs::exists(fixtures() / "fixtures.json")) \
  GTEST_SKIP() << "no fixtures: run `python cpp/tests/make_fixtures.py DIR` and set RD_FIXTURES=DIR (make test does)"

#define NEED_OPENVINO() \
  if (!json::parse(rd_registry_json())["openvino"].get<bool>()) GTEST_SKIP() << "this build has no OpenVINO backend"

std::vector<std::uint8_t> bytes(const fs::path& p) { return resnet_deploy::read_file(p.string()); }

std::vector<float> floats(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(raw.size() / sizeof(float));
  std::memcpy(out.data(), raw.data(), out.size() * sizeof(float));
  return out;
}

std::string manifest_preprocess(const fs::path& bundle) {
  std::ifstream in(bundle / "manifest.json");
  return json::parse(in)["preprocess"].dump();
}

// A private copy of the fixture bundle that a test may damage; removed when it goes.
struct BundleCopy {
  fs::path dir;
  explicit BundleCopy(const std::string& name) {
    dir = fs::temp_directory_path() / ("rd-test-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::copy(fixtures() / "bundle", dir, fs::copy_options::recursive);
  }
  ~BundleCopy() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  json manifest() const {
    std::ifstream in(dir / "manifest.json");
    return json::parse(in);
  }
  void write(const json& m) const { std::ofstream(dir / "manifest.json") << m.dump(); }
};

// The status and one-line message of a predictor that must not load.
std::pair<rd_status, std::string> refused(const fs::path& bundle, const char* variant = "ov-fp32") {
  rd_options o{variant, 1, ""};
  rd_predictor* p = nullptr;
  rd_status s = rd_predictor_create(bundle.c_str(), &o, &p);
  EXPECT_EQ(p, nullptr);
  rd_predictor_destroy(p);
  std::string message = rd_last_error();
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  return {s, message};
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------- pixels
TEST(Pixels, EqualPythonsTensorBitForBit) {
  NEED_FIXTURES();
  json index = fixture_index();
  resnet_deploy::Preprocessor pre(manifest_preprocess(fixtures() / "bundle"));
  for (const auto& e : index["images"]) {
    std::vector<float> want = floats(fixtures() / e["tensor"].get<std::string>());
    std::vector<float> got = pre.encoded(bytes(fixtures() / e["image"].get<std::string>()));
    ASSERT_EQ(got.size(), want.size()) << e["image"];
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << e["image"];
  }
}

TEST(Pixels, RawPixelsOfEveryChannelCountAreConverted) {
  NEED_FIXTURES();
  resnet_deploy::Preprocessor pre(manifest_preprocess(fixtures() / "bundle"));
  std::mt19937 rng(std::random_device{}());
  std::vector<std::uint8_t> rgba(50 * 40 * 4);
  for (auto& v : rgba) v = static_cast<std::uint8_t>(rng());
  std::vector<std::uint8_t> rgb, grey;
  for (std::size_t i = 0; i < rgba.size(); i += 4) {
    rgb.insert(rgb.end(), {rgba[i], rgba[i + 1], rgba[i + 2]});
    grey.push_back(rgba[i]);
  }
  // RGBA loses its alpha, so it equals the RGB image; a padded stride reads the same pixels
  EXPECT_EQ(pre.pixels(rgba.data(), 50, 40, 4), pre.pixels(rgb.data(), 50, 40, 3));
  std::vector<std::uint8_t> padded;
  for (int y = 0; y < 50; ++y) {
    padded.insert(padded.end(), rgb.begin() + y * 120, rgb.begin() + (y + 1) * 120);
    padded.insert(padded.end(), 8, 0xEE);
  }
  EXPECT_EQ(pre.pixels(padded.data(), 50, 40, 3, 128), pre.pixels(rgb.data(), 50, 40, 3));
  // grey given to an RGB model: the channel repeated
  auto g = pre.pixels(grey.data(), 50, 40, 1);
  std::vector<std::uint8_t> repeated;
  for (auto v : grey) repeated.insert(repeated.end(), {v, v, v});
  EXPECT_EQ(g, pre.pixels(repeated.data(), 50, 40, 3));
}

// ---------------------------------------------------------------------------------------------------------- logits
TEST(Logits, WithinOneHundredThousandthOfPythonsOpenVino) {
  NEED_FIXTURES();
  NEED_OPENVINO();
  json index = fixture_index();
  for (const char* variant : {"ov-fp32", "ov-int8"}) {
    if (!index["images"][0]["logits"].contains(variant)) GTEST_SKIP() << "fixtures have no " << variant << " logits";
    resnet_deploy::Predictor p((fixtures() / "bundle").string(), {variant, 1});
    EXPECT_EQ(std::string(p.info().variant), variant);
    for (const auto& e : index["images"]) {
      auto r = p.classify(bytes(fixtures() / e["image"].get<std::string>()), 4);
      auto want = e["logits"][variant].get<std::vector<float>>();
      ASSERT_EQ(r.logits.size(), want.size());
      std::size_t best = 0;
      for (std::size_t i = 0; i < want.size(); ++i) {
        EXPECT_NEAR(r.logits[i], want[i], 1e-5) << variant << " " << e["image"] << " class " << i;
        if (want[i] > want[best]) best = i;
      }
      EXPECT_EQ(r.class_id, static_cast<int>(best)) << e["image"];
      EXPECT_EQ(r.label, p.label(r.class_id));
    }
  }
}

TEST(Threads, EightThreadsOfTwoHundredCallsEqualOneThread) {
  NEED_FIXTURES();
  NEED_OPENVINO();
  json index = fixture_index();
  std::vector<std::vector<std::uint8_t>> images;
  for (const auto& e : index["images"])
    if (e["image"].get<std::string>().find("large") == std::string::npos)
      images.push_back(bytes(fixtures() / e["image"].get<std::string>()));
  resnet_deploy::Predictor p((fixtures() / "bundle").string(), {"ov-int8", 2});
  std::vector<std::vector<float>> want;
  for (const auto& im : images) want.push_back(p.classify(im, 1).logits);
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::size_t k = static_cast<std::size_t>(t * 200 + i) % images.size();
        try {
          if (p.classify(images[k], 1).logits != want[k]) ++mismatches;
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(errors.load(), 0);
}

// ----------------------------------------------------------------------------------------------------- bad bundles
TEST(BadBundles, ATamperedFileIsRefusedBeforeOpenVinoReadsIt) {
  NEED_FIXTURES();
  BundleCopy b("tampered");
  {
    std::fstream f(b.dir / "model.onnx", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    f.seekp(100);
    c = static_cast<char>(c ^ 1);
    f.write(&c, 1);
  }
  auto size = fs::file_size(b.dir / "model.onnx");
  auto [status, message] = refused(b.dir);
  EXPECT_EQ(status, RD_ERROR_BUNDLE);
  EXPECT_EQ(message, "bundle file model.onnx does not match the manifest's sha256/size (expected " +
                         std::to_string(size) + " bytes, found " + std::to_string(size) +
                         "); it was changed after export");
  std::ofstream(b.dir / "model.onnx", std::ios::app) << "x";  // a longer file: the size says so
  EXPECT_NE(refused(b.dir).second.find("found " + std::to_string(size + 1) + ")"), std::string::npos);
}

// OpenVINO is given the checked file's own descriptor (/proc/self/fd/N): a file renamed over the path afterwards is
// not what it reads, and a rename over it or a write to it during the load is seen (runtime/verified.py's rule).
TEST(BadBundles, TheCheckedFileIsTheOneOpenedNotOneRenamedOverItOrWrittenInPlace) {
  NEED_FIXTURES();
  BundleCopy b("renamed");
  rd::Manifest m = rd::read_manifest(b.dir);
  auto entry = std::find_if(m.files.begin(), m.files.end(), [](const auto& f) { return f.path == "model.onnx"; });
  ASSERT_NE(entry, m.files.end());
  rd::VerifiedFile file{b.dir, *entry};
  const auto original = bytes(b.dir / "model.onnx");
  auto changed = [](const rd::CheckedFile& f) {
    try {
      f.unchanged();
      return std::string("unchanged");
    } catch (const rd::Error& e) {
      return std::string(e.what());
    }
  };
  const std::string refusal = "bundle file model.onnx was changed while it was loaded; refused";
  rd::CheckedFile checked = file.opened();
  EXPECT_EQ(changed(checked), "unchanged");
  std::ofstream(b.dir / "other.onnx") << "not the model";
  fs::rename(b.dir / "other.onnx", b.dir / "model.onnx");
  EXPECT_EQ(bytes(checked.path()), original);
  EXPECT_EQ(changed(checked), refusal);    // its link count and change time moved
  EXPECT_THROW(file.opened(), rd::Error);  // a new check sees the other file
  fs::remove(b.dir / "model.onnx");
  std::ofstream(b.dir / "model.onnx", std::ios::binary)
      .write(reinterpret_cast<const char*>(original.data()), static_cast<std::streamsize>(original.size()));
  rd::CheckedFile again = file.opened();
  std::ofstream(b.dir / "model.onnx", std::ios::binary | std::ios::app).write("x", 1);  // the same file, written
  EXPECT_EQ(changed(again), refusal);
}

TEST(BadBundles, PathsOutOfTheBundleAreRefused) {
  NEED_FIXTURES();
  BundleCopy b("escape");
  fs::remove(b.dir / "model.onnx");
  fs::create_symlink("/etc/passwd", b.dir / "model.onnx");
  auto [status, message] = refused(b.dir);
  EXPECT_EQ(status, RD_ERROR_BUNDLE);
  EXPECT_EQ(message,
            "bundle file 'model.onnx' resolves outside the bundle (a link that leads out of it); refused "
            "without opening it");
  json m = b.manifest();
  m["files"][0]["path"] = "../model.onnx";
  b.write(m);
  EXPECT_EQ(refused(b.dir).second,
            "manifest field files[0].path must be a relative path inside the bundle (no '..', not absolute), found "
            "'../model.onnx'");
}

TEST(BadBundles, FieldsOutOfRangeAreOneLineNamingTheField) {
  NEED_FIXTURES();
  BundleCopy b("fields");
  const json good = b.manifest();
  struct Case {
    std::function<void(json&)> change;
    std::string message;
  };
  std::vector<Case> cases{
      {[](json& m) { m["input"]["batch"]["max"] = 5000; },
       "manifest field input.batch.max must be an integer from 1 to 4096, found 5000"},
      {[](json& m) { m["arch"] = "../x"; },
       "manifest field arch must be letters, digits, '_', '.' or '-' of 1 to 64 characters "
       "([A-Za-z0-9][A-Za-z0-9_.-]{0,63}), found '../x'"},
      {[](json& m) {
         m["preprocess"]["mean"] = {0.5, 0.5};
       },
       "manifest field preprocess.mean must be 3 number(s) or a 3 x 32 x 32 mean image, found 'shape (2,)'"},
      {[](json& m) { m["preprocess"]["std"][1] = 0; },
       "manifest field preprocess.std[1] must be a finite number above 0, found 0"},
      {[](json& m) { m["format_version"] = 2; },
       "manifest format_version 2 is not supported; expected 1 (re-export the bundle with this version of "
       "resnet-deploy)"},
      {[](json& m) { m["files"][0]["size"] = -1; }, "manifest field files[0].size must be an integer >= 0, found -1"},
  };
  for (const auto& c : cases) {
    json m = good;
    c.change(m);
    b.write(m);
    auto [status, message] = refused(b.dir);
    EXPECT_EQ(status, RD_ERROR_BUNDLE);
    EXPECT_EQ(message, c.message);
    EXPECT_EQ(rd_manifest_check_json(m.dump().c_str(), m.dump().size()), RD_ERROR_BUNDLE);
  }
  std::ofstream(b.dir / "manifest.json") << "{\"format_version\": 1,";
  EXPECT_NE(refused(b.dir).second.find("manifest.json is not valid JSON ("), std::string::npos);
  std::ofstream(b.dir / "manifest.json") << std::string(100000, '[') << std::string(100000, ']');
  EXPECT_NE(refused(b.dir).second.find("is not valid JSON (nested too deeply)"), std::string::npos);
  fs::remove(b.dir / "manifest.json");
  EXPECT_EQ(refused(b.dir).second, b.dir.string() +
                                       " is not a bundle: it has no manifest.json (make one with "
                                       "`resnet-deploy export`)");
  EXPECT_EQ(refused(b.dir / "nowhere").second, "bundle directory not found: " + (b.dir / "nowhere").string());
}

TEST(BadBundles, AVariantTheBundleCannotRunSaysWhy) {
  NEED_FIXTURES();
  EXPECT_EQ(refused(fixtures() / "bundle", "ov-fp64").second.rfind("unknown backend 'ov-fp64'; choose one of: auto", 0),
            0u);
  EXPECT_EQ(refused(fixtures() / "bundle", "trt-fp16").first, RD_ERROR_BACKEND);
  BundleCopy b("variant");
  json m = b.manifest();
  json kept = json::array();
  for (const auto& f : m["files"])
    if (f["precision"] != "int8") kept.push_back(f);
  m["files"] = kept;
  b.write(m);
  auto [status, message] = refused(b.dir, "ov-int8");
  EXPECT_EQ(status, RD_ERROR_BACKEND);
  EXPECT_EQ(message,
            "backend 'ov-int8' cannot run on device=cpu: the bundle has no ov-int8 model (export it with "
            "`resnet-deploy export ... --int8`)");
}

// ------------------------------------------------------------------------------------------------------ bad images
TEST(BadImages, TruncatedGarbageOversizedAndWrongChannelsAreOneLine) {
  NEED_FIXTURES();
  json index = fixture_index();
  std::vector<std::uint8_t> png, jpeg;
  for (const auto& e : index["images"]) {
    auto name = e["image"].get<std::string>();
    if (name.find("rgb8_40x29.png") != std::string::npos) png = bytes(fixtures() / name);
    if (name.find("jpeg_420_40x29.jpg") != std::string::npos) jpeg = bytes(fixtures() / name);
  }
  ASSERT_FALSE(png.empty() || jpeg.empty());
  rd_preprocessor* pre = nullptr;
  ASSERT_EQ(rd_preprocessor_create(manifest_preprocess(fixtures() / "bundle").c_str(), &pre), RD_OK);
  std::vector<float> out(3 * 32 * 32);
  auto run = [&](const std::vector<std::uint8_t>& data) {
    rd_status s = rd_preprocess_encoded(pre, data.data(), data.size(), out.data(), out.size());
    std::string message = rd_last_error();
    EXPECT_EQ(message.find('\n'), std::string::npos);
    return std::make_pair(s, message);
  };
  std::mt19937 rng(std::random_device{}());
  std::vector<std::vector<std::uint8_t>> bad{{},
                                             std::vector<std::uint8_t>(png.begin(), png.begin() + 30),
                                             std::vector<std::uint8_t>(png.begin(), png.end() - 30),
                                             std::vector<std::uint8_t>(jpeg.begin(), jpeg.begin() + 200),
                                             std::vector<std::uint8_t>(jpeg.begin(), jpeg.end() - 100)};
  for (int i = 0; i < 200; ++i) {  // random damage: never a crash, a refusal or an image
    auto d = (i % 2 ? png : jpeg);
    for (int k = 0; k < 1 + i % 8; ++k) d[rng() % d.size()] = static_cast<std::uint8_t>(rng());
    auto [s, message] = run(d);
    EXPECT_TRUE(s == RD_OK || s == RD_ERROR_IMAGE) << message;
  }
  std::vector<std::uint8_t> garbage(1000);
  for (auto& v : garbage) v = static_cast<std::uint8_t>(rng() | 1);
  bad.push_back(garbage);
  for (const auto& d : bad) {
    auto [s, message] = run(d);
    EXPECT_EQ(s, RD_ERROR_IMAGE) << message;
    EXPECT_TRUE(message.rfind("not a readable image: image of", 0) == 0 || message == "empty image: 0 bytes")
        << message;
  }
  std::vector<std::uint8_t> px(10 * 10 * 5);
  EXPECT_EQ(rd_preprocess_pixels(pre, px.data(), 10, 10, 5, 0, out.data(), out.size()), RD_ERROR_IMAGE);
  EXPECT_EQ(std::string(rd_last_error()),
            "image array has shape (10, 10, 5); expected HxW, HxWx1, HxWx3 or HxWx4 (uint8)");
  EXPECT_EQ(rd_preprocess_pixels(pre, px.data(), 70000, 1, 1, 0, out.data(), out.size()), RD_ERROR_IMAGE);
  EXPECT_EQ(std::string(rd_last_error()),
            "image array is 1x70000 = 70,000 pixels, over the limit of 24,000,000 pixels "
            "and 65,535 per side; scale it down first");
  rd_preprocessor_destroy(pre);
}

// ------------------------------------------------------------------------------------------------- the C boundary
TEST(CApi, NullsAndWrongSizesAreArgumentErrors) {
  EXPECT_EQ(rd_preprocessor_create(nullptr, nullptr), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_preprocess_encoded(nullptr, nullptr, 0, nullptr, 0), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_predictor_create(nullptr, nullptr, nullptr), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_predictor_run(nullptr, nullptr, 0, 0, nullptr, 0), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_classify_encoded(nullptr, nullptr, 0, nullptr, 0, nullptr, nullptr, 0), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_predictor_info(nullptr, nullptr), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_predictor_label(nullptr, 0), nullptr);
  EXPECT_EQ(rd_predictor_preprocessor(nullptr), nullptr);
  rd_predictor_destroy(nullptr);
  rd_preprocessor_destroy(nullptr);
  rd_preprocessor* pre = nullptr;
  EXPECT_EQ(rd_preprocessor_create("{\"input_size\": [2, 2], \"channels\": 2, \"mean\": [0], \"std\": [1]}", &pre),
            RD_ERROR_BUNDLE);
  EXPECT_EQ(std::string(rd_last_error()), "preprocess.channels must be 1 or 3, found 2");
  EXPECT_EQ(rd_preprocessor_create("{\"input_size\": [2, 2], \"channels\": 1, \"mean\": [0], \"std\": [1]}", &pre),
            RD_OK);
  std::vector<float> out(4);
  std::uint8_t px[4] = {1, 2, 3, 4};
  EXPECT_EQ(rd_preprocess_pixels(pre, px, 2, 2, 1, 0, out.data(), 3), RD_ERROR_ARGUMENT);
  EXPECT_EQ(std::string(rd_last_error()), "out holds 3 floats; the input tensor has 4 (C x H x W)");
  EXPECT_EQ(rd_preprocess_pixels(pre, px, 2, 2, 1, 1, out.data(), 4), RD_ERROR_ARGUMENT);
  EXPECT_EQ(rd_preprocess_pixels(pre, nullptr, 2, 2, 1, 0, out.data(), 4), RD_ERROR_ARGUMENT);
  rd_preprocessor_destroy(pre);
}

TEST(CApi, RunChecksItsBuffersAndRefusesNaN) {
  NEED_FIXTURES();
  NEED_OPENVINO();
  resnet_deploy::Predictor p((fixtures() / "bundle").string(), {"ov-fp32", 1});
  std::vector<float> x(2 * 3 * 32 * 32, 0.25f);
  EXPECT_EQ(p.run(x, 2).size(), 8u);
  x[3 * 32 * 32 + 5] = std::nanf("");
  try {
    p.run(x, 2);
    ADD_FAILURE() << "NaN input ran";
  } catch (const resnet_deploy::Error& e) {
    EXPECT_EQ(e.status(), RD_ERROR_ARGUMENT);
    EXPECT_EQ(std::string(e.what()), "input image(s) 1 of 2 hold NaN or Inf");
  }
  EXPECT_THROW(p.run(x, 3), resnet_deploy::Error);  // 3 images need more input than given
  EXPECT_THROW(p.classify(std::vector<std::uint8_t>{1, 2, 3}, 0), resnet_deploy::Error);
}

// ----------------------------------------------------------------------------------------------------- the cache
namespace {

// A folder of its own under the temporary folder, removed when it goes.
struct TempDir {
  fs::path dir;
  explicit TempDir(const std::string& name) {
    dir = fs::temp_directory_path() / ("rd-test-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::string text_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::unique_ptr<rd::PrivateDir> private_dir(const fs::path& root, std::string& why) {
  bool warn = false;
  return rd::PrivateDir::open(root, {"openvino", "sha256-0"}, why, warn);
}

bool put(const rd::PrivateDir& d, const std::string& name, const std::string& binding, const std::string& data) {
  std::string why;
  return d.write(
      name, binding, [&](std::ostream& out) { out << data; }, why);
}

std::string got(const rd::PrivateDir& d, const std::string& name, const std::string& binding, std::string& why) {
  auto m = d.read(name, binding, why);
  return m ? std::string(reinterpret_cast<const char*>(m->data()), m->size()) : "<none>";
}

}  // namespace

TEST(Cache, FoldersAreMadePrivateAndAnEntryReadsBackOnlyForItsBinding) {
  TempDir t("cache-roundtrip");
  std::string why;
  auto d = private_dir(t.dir / "root", why);
  ASSERT_TRUE(d) << why;
  for (const fs::path& p : {t.dir / "root", t.dir / "root/openvino", t.dir / "root/openvino/sha256-0"})
    EXPECT_EQ(fs::status(p).permissions() & fs::perms::all, fs::perms::owner_all) << p;
  std::string data(3 << 20, '\0');  // over the writer's buffer, with every byte value
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
  ASSERT_TRUE(put(*d, "e.blob", "binding one", data));
  EXPECT_EQ(fs::status(d->path() / "e.blob").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(got(*d, "e.blob", "binding one", why), data);
  EXPECT_EQ(why, "");
  // runtime/cache.py's format: the header line, then the bytes; its digest (XXH3-128, cache.h says why) covers the
  // binding's length and text (tests/test_cpp_cache.py checks the digest against Python's xxhash)
  std::string file = text_of(d->path() / "e.blob");
  std::string binding = "binding one", length(8, '\0');
  length[0] = static_cast<char>(binding.size());
  rd::Xxh3_128 whole;
  const std::string hashed = length + binding + data;
  whole.update(hashed.data(), hashed.size());
  EXPECT_EQ(file, "resnet-deploy cache entry 1 xxh3-128 " + whole.hex() + "\n" + data);
  EXPECT_EQ(got(*d, "e.blob", "binding two", why), "<none>");
  EXPECT_EQ(why, "cache entry " + (d->path() / "e.blob").string() +
                     " not used (its digest does not match its bytes or what it was made from)");
  EXPECT_EQ(got(*d, "absent.blob", "binding one", why), "<none>");
  EXPECT_EQ(why, "");  // nothing there: nothing to warn about
  EXPECT_TRUE(std::none_of(fs::directory_iterator(d->path()), fs::directory_iterator(),
                           [](const fs::directory_entry& e) { return e.path().extension() == ".tmp"; }));
}

TEST(Cache, AFlippedByteIsRefused) {
  TempDir t("cache-flip");
  std::string why;
  auto d = private_dir(t.dir / "root", why);
  ASSERT_TRUE(d) << why;
  std::random_device rd;
  for (std::size_t at : {std::size_t{40}, std::size_t{100} + rd() % 5000}) {  // in the header's digest, in the bytes
    ASSERT_TRUE(put(*d, "e.blob", "b", std::string(5000, 'x')));
    {
      std::fstream f(d->path() / "e.blob", std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(at));
      char c = 0;
      f.read(&c, 1);
      f.seekp(static_cast<std::streamoff>(at));
      c = static_cast<char>(c ^ 1);
      f.write(&c, 1);
    }
    EXPECT_EQ(got(*d, "e.blob", "b", why), "<none>") << at;
    EXPECT_NE(why.find("its digest does not match"), std::string::npos) << why;
  }
}

TEST(Cache, ALinkAtAnEntrysNameIsNotFollowedAndIsReplaced) {
  TempDir t("cache-link");
  std::string why;
  auto d = private_dir(t.dir / "root", why);
  ASSERT_TRUE(d) << why;
  // a well-formed entry elsewhere, which a followed link would hand over
  auto other = private_dir(t.dir / "other", why);
  ASSERT_TRUE(other && put(*other, "e.blob", "b", "planted"));
  const fs::path target = other->path() / "e.blob";
  const std::string before = text_of(target);
  fs::create_symlink(target, d->path() / "e.blob");
  EXPECT_EQ(got(*d, "e.blob", "b", why), "<none>");
  EXPECT_EQ(why, "cache entry " + (d->path() / "e.blob").string() + " not used (a symbolic link)");
  ASSERT_TRUE(put(*d, "e.blob", "b", "mine"));
  EXPECT_FALSE(fs::is_symlink(d->path() / "e.blob"));
  EXPECT_EQ(text_of(target), before);  // written through nothing
  EXPECT_EQ(got(*d, "e.blob", "b", why), "mine");
}

TEST(Cache, FoldersOpenToOthersOrLinkedAreRefused) {
  TempDir t("cache-open");
  std::string why;
  fs::create_directories(t.dir / "root/openvino/sha256-0");
  fs::permissions(t.dir / "root/openvino/sha256-0", fs::perms::all);  // made beforehand by someone, mode 0777
  EXPECT_FALSE(private_dir(t.dir / "root", why));
  EXPECT_EQ(why, (t.dir / "root/openvino/sha256-0").string() + " is writable by group or others (mode 0777)");
  fs::permissions(t.dir / "root/openvino/sha256-0", fs::perms::owner_all);
  fs::permissions(t.dir / "root", fs::perms::owner_all | fs::perms::group_all);
  EXPECT_FALSE(private_dir(t.dir / "root", why));
  EXPECT_EQ(why, (t.dir / "root").string() + " is writable by group or others (mode 0770)");
  fs::permissions(t.dir / "root", fs::perms::owner_all);
  EXPECT_TRUE(private_dir(t.dir / "root", why)) << why;
  fs::create_directory_symlink(t.dir / "root", t.dir / "linked");  // the root, or a folder below it, as a link
  EXPECT_FALSE(private_dir(t.dir / "linked", why));
  EXPECT_EQ(why, "cannot use " + (t.dir / "linked").string() + " (a symbolic link)");
  fs::create_directories(t.dir / "root2/elsewhere");
  fs::create_directory_symlink(t.dir / "root2/elsewhere", t.dir / "root2/openvino");
  EXPECT_FALSE(private_dir(t.dir / "root2", why));
  EXPECT_EQ(why, "cannot use " + (t.dir / "root2/openvino").string() + " (a symbolic link)");
}

TEST(Cache, AFolderOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a folder to another user needs root (chown)";
  TempDir t("cache-owner");
  std::string why;
  fs::create_directories(t.dir / "root/openvino/sha256-0");
  ASSERT_EQ(::chown((t.dir / "root/openvino").c_str(), 4242, 4242), 0);
  EXPECT_FALSE(private_dir(t.dir / "root", why));
  EXPECT_EQ(why, (t.dir / "root/openvino").string() + " is owned by uid 4242, not by this user (uid 0)");
}

// ----------------------------------------------------------------------------------------------------- internals
TEST(Internals, QuotesAndNumbersAsPythonWritesThem) {
  EXPECT_EQ(rd::quote(json(1.0)), "1.0");
  EXPECT_EQ(rd::quote(json(1e-5)), "1e-05");
  EXPECT_EQ(rd::quote(json(0.1)), "0.1");
  EXPECT_EQ(rd::quote(json(1e16)), "1e+16");
  EXPECT_EQ(rd::quote(json(123456789.5)), "123456789.5");
  EXPECT_EQ(rd::quote(json("it's")), "\"it's\"");
  EXPECT_EQ(rd::quote(json::array({1, 2, 3, 4, 5, 6, 7, 8, 9})), "[1, 2, 3, 4, 5, 6, 7, 8, ...]");
  EXPECT_EQ(rd::quote_tuple(json::array({1})), "(1,)");
  EXPECT_EQ(rd::quote(json(nullptr)), "None");
  EXPECT_EQ(rd::quote(json::parse(R"({"b": [true, {"c": {"d": 1}}]})")), "{'b': [True, {'c': {...}}]}");
  EXPECT_EQ(rd::with_commas(24000000), "24,000,000");
  EXPECT_EQ(rd::format_g(1 / 255.0 - 1e-9), "0.00392157");
}

TEST(Internals, RelativePathsFollowPurePosixPath) {
  for (const char* ok : {"model.onnx", "a/b.onnx", "a..b", "..a", "é/x"})
    EXPECT_NO_THROW(rd::check_relative(json(ok), "path")) << ok;
  for (const char* bad : {"", "/x", "../x", "a/../x", "a/..", "./x", "a/./x", "a//x", "a/", ".", "C:x", "é:x", "a\\b"})
    EXPECT_THROW(rd::check_relative(json(bad), "path"), rd::FieldError) << bad;
  EXPECT_THROW(rd::check_relative(json(std::string("a\0b", 3)), "path"), rd::FieldError);
  EXPECT_THROW(rd::check_relative(json(std::string(256, 'a')), "path"), rd::FieldError);
}

int main(int argc, char** argv) {
#ifdef __SANITIZE_ADDRESS__
  // oneTBB (OpenVINO's thread pool) loads its topology library with RTLD_DEEPBIND, which AddressSanitizer refuses;
  // this is TBB's own switch to load it without. Read when OpenVINO first starts TBB, after main begins.
  setenv("TBB_ENABLE_SANITIZERS", "1", 0);
#endif
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
