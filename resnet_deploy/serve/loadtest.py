"""`resnet-deploy loadtest`: KServe v2 requests against a Triton server over HTTP or gRPC, bounded in count and time.

Two modes, as Triton's perf_analyzer has them. Closed loop (`concurrency`): for each level, that many client threads
(one tritonclient connection each) send single-image requests back to back. Open loop (`rate`): requests are due at a
constant rate, whether or not earlier ones were answered, and `max_threads` client threads send them as they fall due;
a request's latency counts from when it was due, so a server (or client) that falls behind shows it in the latencies
rather than in a slower schedule, and the level reports the rate it achieved and how late requests were sent. Each
level has an untimed warm-up, then runs for `duration_s` or until `max_requests` were sent.

The latency statistics are `validate.latency.summarize`'s (the same as `bench`); throughput is answered requests over
the wall-clock time of the level, since with several requests in flight the latencies overlap. Each level also
records this client's CPU time (every thread of the process) per request and in cores: a client that uses a core or
more, or about as much CPU per request as the server, measures itself as much as the server.

Requests carry random float32 tensors shaped as the model's input, or, with `images`, the JPEG/PNG files of a folder
as encoded BYTES (`image` input). tritonclient is imported inside the functions (the `serve` extra).
"""

from __future__ import annotations

import os
import queue
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


def parse_rates(text: str) -> list[float]:
    """Request rates from "100/s", "50,100/s" or "25/s,50/s" (per second; the "/s" may be left off)."""
    rates = []
    for part in text.split(","):
        number = part.strip().removesuffix("/s").strip()
        try:
            rates.append(limits.check("rate", float(number), "--rate", integer=False))
        except ValueError:
            raise ResnetDeployError(f"--rate must be comma-separated requests per second like 100/s or 50,100/s, "
                                    f"found {quote(text)}") from None
    return rates


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


Sender = Callable[[], tuple[Any, Callable[[int], None]]]


class _Budget:
    """At most `total` requests, shared by every client thread."""

    def __init__(self, total: int) -> None:
        self.left, self.lock = total, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left >= 0


def _client_loop(make_client: Sender, stop_at: float, budget: _Budget, offset: int, latencies: list[float],
                 errors: list[str]) -> None:
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


def _run_level(make_client: Sender, concurrency: int, duration_s: float,
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


def _sender_loop(make_client: Sender, due: queue.SimpleQueue, latencies: list[float], lags: list[float],
                 errors: list[str]) -> None:
    client, send = make_client()
    try:
        while (item := due.get()) is not None:
            i, due_at = item
            lags.append(time.perf_counter() - due_at)
            try:
                send(i)
                latencies.append(time.perf_counter() - due_at)  # from when it was due: waiting for a thread counts
            except Exception as e:  # as in _client_loop
                errors.append(first_line(e))
    finally:
        client.close()


def _run_rate(make_client: Sender, rate: float, max_threads: int, duration_s: float,
              max_requests: int) -> tuple[list[float], list[str], float, list[float]]:
    """Open loop: request k is due at start + k / rate; `max_threads` threads send them in order as they fall due."""
    latencies: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    due: queue.SimpleQueue = queue.SimpleQueue()
    threads = [threading.Thread(target=_sender_loop, daemon=True, args=(make_client, due, latencies, lags, errors))
               for _ in range(max_threads)]
    for t in threads:
        t.start()
    total = min(max_requests, max(1, int(duration_s * rate)))
    t0 = time.perf_counter()
    for k in range(total):
        due_at = t0 + k / rate
        if (wait := due_at - time.perf_counter()) > 0:
            time.sleep(wait)
        due.put((k, due_at))
    for _ in threads:
        due.put(None)
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0, lags


def run_loadtest(url: str, model: str, *, concurrency: Sequence[int] = (1, 4, 16), rate: Sequence[float] = (),
                 max_threads: int = 16, duration_s: float = 10.0, warmup_s: float = 1.0, max_requests: int = 100_000,
                 images: str | Path | None = None, outputs: Sequence[str] | None = None, timeout_s: float = 30.0,
                 keep_samples: bool = False) -> dict[str, Any]:
    """Load a Triton server's model at each concurrency level (closed loop), or at each request rate (open loop).

    Args:
        url: http://host:port (HTTP/REST) or grpc://host:port.
        model: the model's name on the server.
        concurrency: numbers of clients sending back to back, one level after the other (ignored with `rate`).
        rate: requests per second, one level after the other: open loop instead of `concurrency`.
        max_threads: with `rate`, the client threads (and connections) that send: at most this many in flight.
        duration_s: timed seconds per level (a level also ends after `max_requests`).
        warmup_s: untimed seconds at each level first.
        max_requests: most requests per level (warm-up not counted).
        images: a folder of JPEG/PNG files to send as encoded images (default: random float32 tensors).
        outputs: the outputs to ask for (default: every output the model has).
        timeout_s: per-request network timeout.
        keep_samples: also return every answered request's latency in seconds ("samples_s"), to pool runs.

    Returns:
        {"url", "model", "protocol", "payload", "mode" ("concurrency" | "rate"), "duration_s", "results": [one dict
        per level: concurrency (or rate, achieved_rate_rps, max_threads and send_lag_ms {p50, p99, max}), requests,
        errors, error_samples, wall_s, throughput_ips, latency_ms {min, mean, p50, p90, p95, p99, max},
        client_cpu_s, client_cpu_ms_per_request, client_cpu_cores]}.
    """
    if not concurrency and not rate:
        raise ResnetDeployError("give at least one concurrency level or rate")
    for c in concurrency:
        limits.check("concurrency", c, "concurrency levels")
    for r in rate:
        limits.check("rate", r, "request rates", integer=False)
    limits.check("concurrency", max_threads, "max threads")
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
    for level in rate or concurrency:
        if rate:
            if warmup_s > 0:
                _run_rate(make_client, level, max_threads, warmup_s, max_requests)
            cpu0 = time.process_time()
            latencies, errors, wall, lags = _run_rate(make_client, level, max_threads, duration_s, max_requests)
            row = {"rate": level, "max_threads": max_threads, "achieved_rate_rps": len(latencies) / wall,
                   "send_lag_ms": _lag_ms(lags)}
        else:
            if warmup_s > 0:
                _run_level(make_client, level, warmup_s, max_requests)
            cpu0 = time.process_time()
            latencies, errors, wall = _run_level(make_client, level, duration_s, max_requests)
            row = {"concurrency": level}
        cpu = time.process_time() - cpu0
        row |= _level_result(latencies, errors, wall, cpu)
        results.append(row | ({"samples_s": latencies} if keep_samples else {}))
    return {"url": url, "model": model, "protocol": protocol, "payload": "images" if images else "tensors",
            "mode": "rate" if rate else "concurrency", "duration_s": duration_s, "results": results}


def _lag_ms(lags: list[float]) -> dict[str, float] | None:
    if not lags:
        return None
    ms = np.array(lags) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


def _level_result(latencies: list[float], errors: list[str], wall: float, cpu_s: float) -> dict[str, Any]:
    requests = len(latencies) + len(errors)
    row: dict[str, Any] = {"requests": requests, "errors": len(errors), "error_samples": sorted(set(errors))[:3],
                           "wall_s": wall, "client_cpu_s": cpu_s,
                           "client_cpu_ms_per_request": cpu_s * 1e3 / requests if requests else None,
                           "client_cpu_cores": cpu_s / wall if wall > 0 else None}
    if not latencies:
        return {**row, "throughput_ips": 0.0, "latency_ms": None}
    # summarize's throughput divides by the summed latencies; concurrent requests overlap, so use the wall clock.
    return {**row, "throughput_ips": len(latencies) / wall, "latency_ms": summarize(latencies).stats_ms()}


def level_name(row: dict[str, Any]) -> str:
    """"concurrency 4" or "rate 100/s": what a level of `run_loadtest`'s results was."""
    return f"rate {row['rate']:g}/s" if "rate" in row else f"concurrency {row['concurrency']}"


def loadtest_summary(result: dict[str, Any]) -> list[str]:
    """Terminal lines: one per level, as `bench` prints one per batch size."""
    lines = [f"{result['model']} at {result['url']} ({result['protocol']}, {result['payload']}, "
             f"{result['duration_s']:g} s per level)"]
    for r in result["results"]:
        lat = r["latency_ms"]
        errors = f"  {r['errors']} errors ({'; '.join(r['error_samples'])})" if r["errors"] else ""
        name = f"concurrency {r['concurrency']:>3}" if "concurrency" in r else f"rate {r['rate']:>7g}/s"
        if lat is None:
            lines.append(f"{name}  no answers{errors}")
            continue
        achieved = f"  achieved {r['achieved_rate_rps']:.1f}/s" if "rate" in r else ""
        cpu = r.get("client_cpu_ms_per_request")
        client = f"  client CPU {cpu:.3f} ms/request ({r['client_cpu_cores']:.2f} cores)" if cpu is not None else ""
        lines.append(f"{name}  min {lat['min']:.3f}  p50 {lat['p50']:.3f}  "
                     f"p90 {lat['p90']:.3f}  p95 {lat['p95']:.3f}  p99 {lat['p99']:.3f} ms  "
                     f"{r['throughput_ips']:.1f} img/s{achieved}  {r['requests']} requests{client}{errors}")
    return lines
