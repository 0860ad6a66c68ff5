// classify BUNDLE IMAGE... [--variant NAME] [--threads N] [--topk K] [--json]
// Classifies each image with a bundle written by `resnet-deploy export`, one at a time as a camera app would, and
// prints the top classes and the latency of each (read + decode + preprocess + inference), then the cold start (from
// main to the first prediction) and the per-image p50/p99 of the images after the first. With --json, one JSON object
// per image and line on stdout (image, class_id, label, score, topk, logits, latency_ms), the summary on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <resnet_deploy/resnet_deploy.hpp>

using Clock = std::chrono::steady_clock;
static double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

static std::string quoted(const std::string& s) {  // a JSON string
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += {'\\', static_cast<char>(c)};
    else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

static double percentile(std::vector<double> v, double q) {  // nearest rank, as examples/edge_app
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(q / 100 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int main(int argc, char** argv) {
  const auto start = Clock::now();
  resnet_deploy::Options options;
  std::size_t topk = 1;
  bool json = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--variant" && has_value) options.variant = argv[++i];
    else if (a == "--threads" && has_value) options.threads = std::atoi(argv[++i]);
    else if (a == "--topk" && has_value) topk = static_cast<std::size_t>(std::max(1, std::atoi(argv[++i])));
    else if (a == "--json") json = true;
    else if (a.rfind("--", 0) == 0) { std::fprintf(stderr, "Error: unknown option %s\n", a.c_str()); return 2; }
    else args.push_back(a);
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: classify BUNDLE IMAGE... [--variant NAME] [--threads N] [--topk K] [--json]\n");
    return 2;
  }
  try {
    resnet_deploy::Predictor predictor(args[0], options);
    const double load_ms = ms_since(start);
    std::vector<double> latencies;
    int failures = 0;
    for (std::size_t i = 1; i < args.size(); ++i) {
      const auto t = Clock::now();
      resnet_deploy::Result r;
      try {
        r = predictor.classify(resnet_deploy::read_file(args[i]), topk);
      } catch (const resnet_deploy::Error& e) {  // one bad file does not stop the app
        ++failures;
        std::fprintf(stderr, "%s: skipped (%s)\n", args[i].c_str(), e.what());
        continue;
      }
      latencies.push_back(ms_since(t));
      if (json) {
        std::string top, logits;
        for (const auto& c : r.topk)
          top += (top.empty() ? "" : ", ") + std::string("{\"class_id\": ") + std::to_string(c.class_id) +
                 ", \"label\": " + quoted(c.label) + ", \"score\": " + std::to_string(c.score) + "}";
        for (float v : r.logits) { char b[32]; std::snprintf(b, sizeof b, "%s%.9g", logits.empty() ? "" : ", ", v); logits += b; }
        std::printf("{\"image\": %s, \"class_id\": %d, \"label\": %s, \"score\": %.9g, \"topk\": [%s], \"logits\": [%s], "
                    "\"latency_ms\": %.4f}\n", quoted(args[i]).c_str(), r.class_id, quoted(r.label).c_str(), r.score,
                    top.c_str(), logits.c_str(), latencies.back());
      } else {
        std::string alts;
        for (std::size_t k = 1; k < r.topk.size(); ++k) alts += ", " + r.topk[k].label + " " + std::to_string(r.topk[k].score).substr(0, 5);
        std::printf("%s: %s %.3f%s  [%.2f ms]\n", args[i].c_str(), r.label.c_str(), r.score, alts.c_str(), latencies.back());
      }
      std::fflush(stdout);
    }
    if (latencies.empty()) throw resnet_deploy::Error(RD_ERROR_IMAGE, "none of the images could be read");
    std::vector<double> steady(latencies.size() > 1 ? latencies.begin() + 1 : latencies.begin(), latencies.end());
    const auto& info = predictor.info();
    const double cold = load_ms + latencies[0], p50 = percentile(steady, 50), p99 = percentile(steady, 99);
    if (json)
      std::fprintf(stderr, "{\"variant\": %s, \"why\": %s, \"images\": %zu, \"failures\": %d, \"load_ms\": %.3f, "
                   "\"cold_start_ms\": %.3f, \"latency_ms_p50\": %.4f, \"latency_ms_p99\": %.4f}\n",
                   quoted(info.variant).c_str(), quoted(info.why).c_str(), latencies.size(), failures, load_ms, cold, p50, p99);
    else
      std::printf("%zu images, variant %s (%s)\ncold start %.1f ms (load %.1f + first image %.2f); per image p50 %.3f ms, "
                  "p99 %.3f ms\n", latencies.size(), info.variant, info.why, cold, load_ms, latencies[0], p50, p99);
    return failures ? 1 : 0;
  } catch (const resnet_deploy::Error& e) {
    std::fprintf(stderr, "Error: %s\n", e.what());
    return 2;
  }
}
