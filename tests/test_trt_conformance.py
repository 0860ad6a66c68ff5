"""Conformance with the real TensorRT 10.x and 11.x Python API: tests/trt_conformance_cases.py, run once per version
in a process that imports that version's real bindings (fetched from PyPI into a cache by tests/trt_real.py; skipped
with the reason where they cannot be fetched, e.g. offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trt_real

REPO = Path(__file__).resolve().parents[1]
CASES = Path(__file__).with_name("trt_conformance_cases.py")


@pytest.mark.parametrize("major", sorted(trt_real.VERSIONS))
def test_export_and_runtime_conform_to_the_real_tensorrt_api(major: str) -> None:
    version = trt_real.VERSIONS[major].version
    try:
        env = trt_real.environment(major, REPO)
    except trt_real.Unavailable as e:
        pytest.skip(f"TensorRT {version} bindings not available: {e}")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
                        str(CASES)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    report = (p.stdout + p.stderr)[-12000:]
    assert p.returncode == 0, f"TensorRT {version}: the code does not fit the real API\n{report}"
    summary = p.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
