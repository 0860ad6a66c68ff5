"""Cold start of a signed bundle with signature verification (`trusted_keys`) against the same load without it,
interleaved in one run, in fresh processes; and, for comparison, what model-signing's own verifier would add.

A copy of BUNDLE is signed with a fresh P-256 key (made here with `cryptography`). Each figure is one fresh process:
the runtime's import, `Predictor.from_bundle` and the first batch-1 run ("whole"), and the same without the import
("load"); the median of `--repeats` processes each. "model-signing" is the library's full `verify` of the bundle (it
imports sigstore and hashes every file) timed in its own fresh processes.

    .venv/bin/python benchmarks/cold_start_signed.py --bundle R50_BUNDLE [--repeats 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from resnet_deploy.runtime import Predictor
import numpy as np
t1 = time.perf_counter()
bundle, backend, threads, key = sys.argv[1:5]
p = Predictor.from_bundle(bundle, backend=backend, threads=int(threads), trusted_keys=[key] if key else None)
p.run(np.zeros((1, *p.manifest.input_shape), np.float32))
t2 = time.perf_counter()
print(json.dumps({"whole_ms": (t2 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3}))
"""

MODEL_SIGNING = """
import json, sys, time
t0 = time.perf_counter()
import model_signing
model_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[2]).verify(sys.argv[1],
                                                                                          sys.argv[1] + "/model.sig")
print(json.dumps({"whole_ms": (time.perf_counter() - t0) * 1e3}))
"""


def child(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from resnet_deploy.export.signing import sign_bundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--backends", default="onnx,int8")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="signed-") as tmp:
        bundle = Path(shutil.copytree(args.bundle, Path(tmp) / "bundle", ignore=shutil.ignore_patterns("reports")))
        key = ec.generate_private_key(ec.SECP256R1())
        (Path(tmp) / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        public = Path(tmp) / "k.pub.pem"
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        sign_bundle(bundle, Path(tmp) / "k.pem")
        size = sum(f.stat().st_size for f in bundle.iterdir()) / 1e6
        print(f"bundle {args.bundle} ({size:.0f} MB signed), {args.threads} threads, median of {args.repeats} fresh "
              f"processes; load average {os.getloadavg()[0]:.2f} at the start\n")
        print("| backend | without keys: load / whole (ms) | with trusted_keys: load / whole (ms) | ratio load, "
              "whole | paired ratio (whole) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for backend in args.backends.split(","):
            got: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
            for _ in range(args.repeats):  # interleaved: the same load on the machine for both
                got["off"].append(child(CHILD, str(bundle), backend, str(args.threads), ""))
                got["on"].append(child(CHILD, str(bundle), backend, str(args.threads), str(public)))
            med = {k: {m: float(np.median([r[m] for r in v])) for m in ("load_ms", "whole_ms")} for k, v in got.items()}
            paired = float(np.median([b["whole_ms"] / a["whole_ms"] for a, b in zip(got["off"], got["on"],
                                                                                       strict=True)]))
            print(f"| {backend} | {med['off']['load_ms']:.0f} / {med['off']['whole_ms']:.0f} | "
                  f"{med['on']['load_ms']:.0f} / {med['on']['whole_ms']:.0f} | "
                  f"{med['on']['load_ms'] / med['off']['load_ms']:.2f}, "
                  f"{med['on']['whole_ms'] / med['off']['whole_ms']:.2f} | {paired:.2f} |", flush=True)
        ms = [child(MODEL_SIGNING, str(bundle), str(public))["whole_ms"] for _ in range(max(3, args.repeats // 3))]
        print(f"\nmodel-signing's own verify of the same bundle (import + hashing every file), fresh processes: "
              f"median {np.median(ms):.0f} ms (range {min(ms):.0f}-{max(ms):.0f}); load average "
              f"{os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
