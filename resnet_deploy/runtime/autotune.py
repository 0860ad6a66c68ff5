"""`auto` by measurement: which variant `bench` found fastest on which CPU, kept in the bundle for the runtime to read.

`resnet-deploy bench` times every variant side by side; `record_order` stores the variants that passed `validate`'s
gates, fastest first, in `BUNDLE/reports/auto.json`, one entry per machine. A machine is its CPU model and its
instruction-set key (`machine.isa_key`: a digest of the flags the libraries may use, and any cap on them): the same
model name with other flags (a VM that hides AVX-512 or AMX) or under ONEDNN_MAX_CPU_ISA=AVX2 is another machine.
`Predictor.from_bundle(backend="auto")` uses the entry of the machine it runs on and the registry's static order
otherwise (a bundle copied to another kind of box does not inherit a foreign ranking).

The file is a hint, not a bundle file: it is not in the manifest, and a name in it that is not a registered variant
is ignored; what `auto` loads is still checked against the manifest.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from resnet_deploy.runtime.errors import BundleError
from resnet_deploy.runtime.files import atomic_write_text
from resnet_deploy.runtime.machine import cpu_model, isa_key
from resnet_deploy.runtime.manifest import reports_path

AUTO_JSON = "auto.json"
AUTO_SCHEMA = "resnet-deploy/auto"
# How `auto` says that its order was not measured: what the CPU's instructions lead one to expect, and how to measure.
UNMEASURED = "expected, not measured (run `resnet-deploy bench` on the bundle to measure)"


def machine_key(flags: set[str] | None = None, model: str | None = None) -> dict[str, str]:
    """{"cpu": model name, "flags": sha256 of the sorted usable flags, 16 hex digits, "isa_caps" where the
    environment caps the instruction set} of this machine (or of those given; `machine.isa_key`)."""
    return {"cpu": cpu_model() if model is None else model, **isa_key(flags)}


def record_path(bundle: str | Path) -> Path:
    """Where a bundle keeps its measured orders; BundleError when reports/ or the file is a link out of the bundle
    (writing through it would overwrite a file elsewhere)."""
    return reports_path(bundle, AUTO_JSON)


def read_records(bundle: str | Path) -> list[dict[str, Any]]:
    """Every machine's entry of the bundle's auto.json; empty when it is missing, unreadable, of another schema, or
    a link out of the bundle (a hint is never read from elsewhere)."""
    try:
        data = json.loads(record_path(bundle).read_text())
    except (OSError, ValueError, BundleError):
        return []
    if not isinstance(data, dict) or data.get("schema") != AUTO_SCHEMA or not isinstance(data.get("machines"), list):
        return []
    return [m for m in data["machines"] if isinstance(m, dict)]


def measured_order(bundle: str | Path, device: str = "cpu",
                   key: dict[str, str] | None = None) -> tuple[list[str], dict[str, Any]] | None:
    """The variant names measured fastest first on this machine and `device`, and the entry; None without one."""
    key = machine_key() if key is None else key
    for entry in read_records(bundle):
        if entry.get("machine") == key and entry.get("device") == device and isinstance(entry.get("order"), list):
            return [str(n) for n in entry["order"]], entry
    return None


def copy_records(bundle: str | Path, to: str | Path) -> Path | None:
    """Give the bundle copy at `to` (a Triton repository's `1/bundle/`) the measured orders of `bundle`, so that
    `auto` there chooses what it chooses here; the path written, or None when `bundle` records none."""
    records = read_records(bundle)
    if not records:
        return None
    path = record_path(to)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps({"schema": AUTO_SCHEMA, "machines": records}, indent=2) + "\n")


def record_order(bundle: str | Path, order: list[str], *, device: str = "cpu", batch: int = 1,
                 threads: int | None = None, p50_ms: dict[str, float] | None = None,
                 excluded: dict[str, str] | None = None, key: dict[str, str] | None = None) -> Path:
    """Store (or replace) this machine's entry: `order` fastest first, with the figures it was decided on.

    Args:
        bundle: the bundle directory; the file is `reports/auto.json` in it.
        order: variant names, fastest first, every one within its accuracy gate.
        device, batch, threads: what was measured.
        p50_ms: the median latency of each variant at that batch.
        excluded: variants left out, with the reason (failed validate, could not run).
        key: the machine (default: this one).

    Returns:
        The path written (atomically: a reader never sees half a file).
    """
    key = machine_key() if key is None else key
    entry = {"machine": key, "device": device, "order": list(order), "batch": batch, "threads": threads,
             "p50_ms": dict(p50_ms or {}), "excluded": dict(excluded or {}),
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    others = [m for m in read_records(bundle) if (m.get("machine"), m.get("device")) != (key, device)]
    path = record_path(bundle)  # checked before anything is written
    return atomic_write_text(path, json.dumps({"schema": AUTO_SCHEMA, "machines": [*others, entry]}, indent=2) + "\n")
