#!/bin/sh
# Prints what the C++ SDK's build lacks on this machine (nothing when it can build): the compiler, CMake >= 3.18,
# pkg-config, and the headers of nlohmann-json, libpng, libjpeg, OpenSSL, libxxhash and GoogleTest.
missing=""
command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
CXX=${CXX:-c++}
if ! command -v "$CXX" >/dev/null 2>&1; then
  missing="$missing a C++17 compiler (g++)"
else
  for h in nlohmann/json.hpp png.h jpeglib.h openssl/evp.h xxhash.h gtest/gtest.h; do
    printf '#include <cstdio>\n#include <%s>\n' "$h" | "$CXX" -std=c++17 -fsyntax-only -x c++ - >/dev/null 2>&1 \
      || missing="$missing <$h>"
  done
fi
if command -v cmake >/dev/null 2>&1; then
  v=$(cmake --version | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 3 ] || { [ "${1:-0}" -eq 3 ] && [ "${2:-0}" -ge 18 ]; } || missing="$missing cmake>=3.18"
fi
echo "${missing# }"
