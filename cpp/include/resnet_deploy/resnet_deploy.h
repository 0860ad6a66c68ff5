/*
 * resnet_deploy C API: open a bundle written by `resnet-deploy export`, preprocess images exactly as the Python
 * runtime does (runtime/preprocess.py), and classify them with the bundle's model on OpenVINO.
 *
 * Conventions (as MMDeploy's SDK):
 * - Handles are opaque; every `*_create` has its `*_destroy` (destroying NULL is harmless).
 * - Every function that can fail returns an rd_status; RD_OK is 0. On failure, rd_last_error() returns a one-line
 *   message for the calling thread, valid until that thread's next call into the library.
 * - No function throws or aborts on bad input: a C++ exception never crosses this boundary.
 * - Buffers are (pointer, length) pairs owned by the caller; lengths are in elements, not bytes.
 * - A predictor may be used from several threads at once (one compiled model; one inference request per concurrent
 *   call). A preprocessor is immutable and may be shared as well.
 */
#ifndef RESNET_DEPLOY_H
#define RESNET_DEPLOY_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(RD_BUILDING_LIBRARY)
#define RD_API __declspec(dllexport)
#else
#define RD_API __declspec(dllimport)
#endif
#else
#define RD_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rd_status {
  RD_OK = 0,
  RD_ERROR_ARGUMENT = 1, /* a NULL handle or buffer, a length that does not match, a bad option value */
  RD_ERROR_BUNDLE = 2,   /* missing, malformed or tampered bundle (manifest field, digest, path outside it) */
  RD_ERROR_IMAGE = 3,    /* not a readable image, over the size limits, wrong channel count */
  RD_ERROR_BACKEND = 4,  /* the variant cannot run here (file missing, no bf16, no OpenVINO) or inference failed */
  RD_ERROR_MEMORY = 5,   /* an allocation failed */
  RD_ERROR_INTERNAL = 6  /* anything else: a bug, please report it with the message */
} rd_status;

/* The message of the calling thread's last failed call ("" when none). */
RD_API const char* rd_last_error(void);
/* The library's version, e.g. "0.1.0". */
RD_API const char* rd_version(void);
/* The C++ SDK's variant registry and CPU facts as JSON (for tests that compare them with Python's registry). */
RD_API const char* rd_registry_json(void);

/* ---- preprocessing (no model needed) ---- */

typedef struct rd_preprocessor rd_preprocessor;

/* A preprocessor from the manifest's "preprocess" object (JSON text), checked as the manifest reader checks it. */
RD_API rd_status rd_preprocessor_create(const char* preprocess_json, rd_preprocessor** out);
RD_API void rd_preprocessor_destroy(rd_preprocessor* pre);
/* The input tensor's shape (C, H, W); any pointer may be NULL. */
RD_API rd_status rd_preprocessor_shape(const rd_preprocessor* pre, int32_t* channels, int32_t* height, int32_t* width);
/* An encoded PNG or JPEG image -> float32 (C, H, W) into `out` (`out_len` must be C*H*W). */
RD_API rd_status rd_preprocess_encoded(const rd_preprocessor* pre, const uint8_t* data, size_t size, float* out,
                                       size_t out_len);
/* Raw uint8 pixels, rows of `width` pixels with `channels` (1 grey, 3 RGB, 4 RGBA) interleaved values each, `stride`
 * bytes apart (0: width * channels) -> float32 (C, H, W), as Preprocess does for a numpy HxW[xC] uint8 array. */
RD_API rd_status rd_preprocess_pixels(const rd_preprocessor* pre, const uint8_t* pixels, int32_t height, int32_t width,
                                      int32_t channels, size_t stride, float* out, size_t out_len);

/* ---- predictor ---- */

typedef struct rd_predictor rd_predictor;

typedef struct rd_options {
  const char* variant;   /* "auto" (NULL means auto) or a variant name: "ov-fp32", "ov-int8", "ov-bf16" */
  int32_t threads;       /* inference threads; 0 lets OpenVINO use one per core */
  const char* cache_dir; /* compiled-model cache root; NULL: $RESNET_DEPLOY_CACHE or ~/.cache/resnet-deploy;
                            "" turns the cache off */
} rd_options;

/* Read BUNDLE/manifest.json (every field checked), choose the variant, verify its file's size and sha256, compile it.
 * `options` may be NULL (auto, default threads, default cache). */
RD_API rd_status rd_predictor_create(const char* bundle_dir, const rd_options* options, rd_predictor** out);
RD_API void rd_predictor_destroy(rd_predictor* predictor);

typedef struct rd_info {
  const char* variant; /* the variant that runs, e.g. "ov-int8" */
  const char* why;     /* why it was chosen */
  const char* arch;    /* the manifest's arch */
  int32_t num_classes;
  int32_t channels, height, width; /* the input tensor of one image */
  int32_t max_batch; /* the largest batch one rd_predictor_run call takes in one piece (larger ones are split) */
} rd_info;

/* Facts about a predictor; the strings live as long as the predictor. */
RD_API rd_status rd_predictor_info(const rd_predictor* predictor, rd_info* out);
/* The label of class `class_id` (NULL when out of range); lives as long as the predictor. */
RD_API const char* rd_predictor_label(const rd_predictor* predictor, int32_t class_id);
/* What runs the model, one fact by `key` (NULL for an unknown key or a NULL predictor):
 *   "runtime", "version", "inference_precision";
 *   "cache": the compiled-model cache folder in use, or "off";
 *   "cache_use": one line saying whether the cache was used and, when not, why: "imported", "compiled: no entry
 *     yet; written", "compiled: cache entry ... not used (its digest does not match ...); written", "off: ... is
 *     writable by group or others (mode 0777)", ...;
 *   "cache_warning": one line when a cache folder or entry was refused (another user's, open to others, a link,
 *     damaged), else "".
 * `key` NULL: all of them as one JSON object. Lives as long as the predictor. */
RD_API const char* rd_predictor_describe(const rd_predictor* predictor, const char* key);
/* The predictor's preprocessing (borrowed: do not destroy; lives as long as the predictor). */
RD_API const rd_preprocessor* rd_predictor_preprocessor(const rd_predictor* predictor);

/* Logits for a preprocessed batch: float32 (N, C, H, W) -> float32 (N, num_classes). NaN or Inf input is refused. */
RD_API rd_status rd_predictor_run(rd_predictor* predictor, const float* input, size_t input_len, size_t batch,
                                  float* logits, size_t logits_len);

typedef struct rd_class_score {
  int32_t class_id;
  float score; /* softmax probability */
} rd_class_score;

/* Classify one encoded image (PNG, JPEG): the `k` best classes, best first, into `top` (k >= 1; fewer are written
 * when the model has fewer classes: `written` says how many, may be NULL), and the full logits into `logits` when
 * it is not NULL (`logits_len` must then be num_classes). */
RD_API rd_status rd_classify_encoded(rd_predictor* predictor, const uint8_t* data, size_t size, rd_class_score* top,
                                     size_t k, size_t* written, float* logits, size_t logits_len);
/* The same for raw uint8 pixels (see rd_preprocess_pixels). */
RD_API rd_status rd_classify_pixels(rd_predictor* predictor, const uint8_t* pixels, int32_t height, int32_t width,
                                    int32_t channels, size_t stride, rd_class_score* top, size_t k, size_t* written,
                                    float* logits, size_t logits_len);

/* ---- manifest only (for tools and tests) ---- */

/* Read and check BUNDLE/manifest.json as rd_predictor_create does, without verifying digests or loading a model. */
RD_API rd_status rd_manifest_check(const char* bundle_dir);
/* Check a manifest document given as JSON text (no bundle directory: file paths are checked as text only). */
RD_API rd_status rd_manifest_check_json(const char* manifest_json, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* RESNET_DEPLOY_H */
