"""`resnet-deploy loadtest`: concurrent KServe v2 requests against a Triton server, bounded in count and time.

For each concurrency level, that many client threads (one tritonclient connection each) send single-image requests
back to back for a warm-up, then for `duration_s` or until `max_requests` were sent, recording every request's
latency. The latency statistics are `validate.latency.summarize`'s (the same as `bench`); throughput is answered
requests over the wall-clock time of the level, since with several clients at once the latencies overlap.

Requests carry random float32 tensors shaped as the model's input, or, with `images`, the JPEG/PNG files of a folder
as encoded BYTES (`image` input). tritonclient is imported inside the functions (the `serve` extra).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from resnet_deploy.runtime import limits
from resnet_deploy.runtime.errors import ResnetDeployError, first_line, quote
from resnet_deploy.validate.latency import summarize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
POOL = 64  # distinct request payloads, reused round-robin
MAX_IMAGE_BYTES = 32 << 20  # what the served model takes (serve/repository.py); a larger file is not sent


def _client_module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise ResnetDeployError("tritonclient is not installed; install it with "
                                "pip install 'resnet-deploy[serve]'") from None
    return module


def parse_url(url: str) -> tuple[str, str]:
    """("http" | "grpc", "host:port") from "http://host:port", "grpc://host:port" or "host:port" (HTTP)."""
    expected = f"expected a URL like http://127.0.0.1:8000 or grpc://127.0.0.1:8001, found {quote(url)}"
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port  # a ValueError for a port out of 0..65535 or not a number
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ResnetDeployError(f"{expected} ({e})") from None
    if parts.scheme not in ("http", "grpc") or not parts.hostname or port is None or port == 0:
        raise ResnetDeployError(expected)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{parts.port}"


def _model_inputs(client: Any, model: str, protocol: str) -> dict[str, dict[str, Any]]:
    module = _client_module(protocol)
    try:
        config = client.get_model_config(model, as_json=True) if protocol == "grpc" else client.get_model_config(model)
    except module.InferenceServerException as e:
        raise ResnetDeployError(f"cannot read model {model!r}'s config from the server: {e.message()}") from None
    except OSError as e:
        raise ResnetDeployError(f"cannot reach the server: {e}") from None
    config = config.get("config", config)
    return {i["name"]: i for i in config.get("input", [])}


def load_payloads(client: Any, model: str, protocol: str,
                  images: str | Path | None) -> tuple[str, str, list[np.ndarray]]:
    """(input name, Triton datatype, one batch-1 array per request) for `model`."""
    inputs = _model_inputs(client, model, protocol)
    if images is not None:
        if "image" not in inputs:
            raise ResnetDeployError(f"model {model!r} has no 'image' input for encoded images (its inputs: "
                                    f"{', '.join(inputs)}); serve it with the python backend or use its ensemble")
        return "image", "BYTES", [np.array([[data]], dtype=np.object_) for data in read_images(images)]
    tensors = [i for i in inputs.values() if i.get("data_type") == "TYPE_FP32"]
    if not tensors:
        raise ResnetDeployError(f"model {model!r} takes no float32 tensor (its inputs: {', '.join(inputs)}); "
                                "pass --images DIR")
    dims = [int(d) for d in tensors[0]["dims"]]
    rng = np.random.default_rng(0)
    return tensors[0]["name"], "FP32", [rng.standard_normal((1, *dims), dtype=np.float32) for _ in range(POOL)]


def read_images(folder: str | Path, limit: int = POOL) -> list[bytes]:
    """The bytes of up to `limit` image files of `folder` (by name), read without waiting on anything that is not a
    regular file: directories named like images, FIFOs, devices, links that loop or lead nowhere and files over
    MAX_IMAGE_BYTES are passed over; ResnetDeployError (with the reasons) when no file is left."""
    folder = Path(folder)
    try:
        names = sorted(e.name for e in os.scandir(folder) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise ResnetDeployError(f"cannot list --images {folder} ({e.strerror})") from None
    found, passed = [], []
    for name in names:
        if len(found) == limit:
            break
        try:
            # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
            fd = os.open(folder / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            passed.append(f"{name}: {e.strerror}")
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                passed.append(f"{name}: not a regular file")
            elif st.st_size > MAX_IMAGE_BYTES:
                passed.append(f"{name}: {st.st_size:,} bytes, over {MAX_IMAGE_BYTES:,}")
            else:
                with open(fd, "rb", closefd=False) as f:
                    found.append(f.read(MAX_IMAGE_BYTES + 1))
        finally:
            os.close(fd)
    if not found:
        why = f" ({'; '.join(passed[:3])}{' ...' if len(passed) > 3 else ''})" if passed else ""
        raise ResnetDeployError(f"no {', '.join(IMAGE_SUFFIXES)} files to send in {folder}{why}")
    return found


class _Budget:
    """At most `total` requests, shared by every client thread."""

    def __init__(self, total: int) -> None:
        self.left, self.lock = total, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left >= 0


def _client_loop(make_client: Callable[[], tuple[Any, Callable[[int], None]]], stop_at: float, budget: _Budget,
                 offset: int, latencies: list[float], errors: list[str]) -> None:
    client, send = make_client()
    i = offset
    try:
        while time.perf_counter() < stop_at and budget.take():
            t0 = time.perf_counter()
            try:
                send(i)
                latencies.append(time.perf_counter() - t0)  # list.append is atomic: threads share the list
            except Exception as e:  # tritonclient raises its own exception types, and OSError for connections
                errors.append(first_line(e))
            i += 1
    finally:
        client.close()


def _run_level(make_client: Callable[[], tuple[Any, Callable[[int], None]]], concurrency: int, duration_s: float,
               max_requests: int) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + duration_s
    budget = _Budget(max_requests)
    threads = [threading.Thread(target=_client_loop, daemon=True,
                                args=(make_client, stop_at, budget, k * 7, latencies, errors))
               for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def run_loadtest(url: str, model: str, *, concurrency: Sequence[int] = (1, 4, 16), duration_s: float = 10.0,
                 warmup_s: float = 1.0, max_requests: int = 100_000, images: str | Path | None = None,
                 outputs: Sequence[str] | None = None, timeout_s: float = 30.0,
                 keep_samples: bool = False) -> dict[str, Any]:
    """Load a Triton server's model at each concurrency level.

    Args:
        url: http://host:port (HTTP/REST) or grpc://host:port.
        model: the model's name on the server.
        concurrency: numbers of clients sending at once, one level after the other.
        duration_s: timed seconds per level (a level also ends after `max_requests`).
        warmup_s: untimed seconds at each level first.
        max_requests: most requests per level (warm-up not counted).
        images: a folder of JPEG/PNG files to send as encoded images (default: random float32 tensors).
        outputs: the outputs to ask for (default: every output the model has).
        timeout_s: per-request network timeout.
        keep_samples: also return every answered request's latency in seconds ("samples_s"), to pool runs.

    Returns:
        {"url", "model", "protocol", "payload", "duration_s", "results": [one dict per level: concurrency,
        requests, errors, error_samples, wall_s, throughput_ips, latency_ms {min, mean, p50, p90, p95, p99, max}]}.
    """
    if not concurrency:
        raise ResnetDeployError("give at least one concurrency level")
    for c in concurrency:
        limits.check("concurrency", c, "concurrency levels")
    limits.check("requests", max_requests, "max requests")
    for what, value in (("duration", duration_s), ("warm-up", warmup_s), ("timeout", timeout_s)):
        limits.check("seconds", value, f"{what} in seconds", integer=False)
    if duration_s <= 0 or timeout_s <= 0:
        raise ResnetDeployError("duration and timeout must be above 0 seconds")
    protocol, address = parse_url(url)
    module = _client_module(protocol)
    timeout = {"network_timeout": timeout_s, "connection_timeout": timeout_s} if protocol == "http" else {}

    probe = module.InferenceServerClient(address, **timeout)
    try:
        name, datatype, payloads = load_payloads(probe, model, protocol, images)
    finally:
        probe.close()
    kwargs: dict[str, Any] = {"client_timeout": timeout_s} if protocol == "grpc" else {}
    if outputs:
        kwargs["outputs"] = [module.InferRequestedOutput(o) for o in outputs]

    def make_client() -> tuple[Any, Callable[[int], None]]:
        """One connection, and a function that sends payload i on it (inputs built once, reused)."""
        client = module.InferenceServerClient(address, **timeout)
        inputs = []
        for x in payloads:
            inputs.append(module.InferInput(name, list(x.shape), datatype))
            inputs[-1].set_data_from_numpy(x)
        return client, lambda i: client.infer(model, [inputs[i % len(inputs)]], **kwargs)

    results = []
    for c in concurrency:
        if warmup_s > 0:
            _run_level(make_client, c, warmup_s, max_requests)
        latencies, errors, wall = _run_level(make_client, c, duration_s, max_requests)
        results.append(_level_result(c, latencies, errors, wall) | ({"samples_s": latencies} if keep_samples else {}))
    return {"url": url, "model": model, "protocol": protocol, "payload": "images" if images else "tensors",
            "duration_s": duration_s, "results": results}


def _level_result(concurrency: int, latencies: list[float], errors: list[str], wall: float) -> dict[str, Any]:
    row: dict[str, Any] = {"concurrency": concurrency, "requests": len(latencies) + len(errors),
                           "errors": len(errors), "error_samples": sorted(set(errors))[:3], "wall_s": wall}
    if not latencies:
        return {**row, "throughput_ips": 0.0, "latency_ms": None}
    # summarize's throughput divides by the summed latencies; concurrent requests overlap, so use the wall clock.
    return {**row, "throughput_ips": len(latencies) / wall, "latency_ms": summarize(latencies).stats_ms()}


def loadtest_summary(result: dict[str, Any]) -> list[str]:
    """Terminal lines: one per concurrency level, as `bench` prints one per batch size."""
    lines = [f"{result['model']} at {result['url']} ({result['protocol']}, {result['payload']}, "
             f"{result['duration_s']:g} s per level)"]
    for r in result["results"]:
        lat = r["latency_ms"]
        errors = f"  {r['errors']} errors ({'; '.join(r['error_samples'])})" if r["errors"] else ""
        if lat is None:
            lines.append(f"concurrency {r['concurrency']:>3}  no answers{errors}")
            continue
        lines.append(f"concurrency {r['concurrency']:>3}  min {lat['min']:.3f}  p50 {lat['p50']:.3f}  "
                     f"p90 {lat['p90']:.3f}  p95 {lat['p95']:.3f}  p99 {lat['p99']:.3f} ms  "
                     f"{r['throughput_ips']:.1f} img/s  {r['requests']} requests{errors}")
    return lines
