"""The serving commands, `triton`, `server-env`, `serve` and `loadtest`, registered on the main group by `register`.

Thin, like every command: parse, call `resnet_deploy.serve`, print. Library errors (`ResnetDeployError`) become the
group's one-line `Error: ...` with exit code 2.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from typing import TYPE_CHECKING

import click

from resnet_deploy.cli_options import TRUSTED_KEY, bounded, echo, parse_numbers
from resnet_deploy.serve import TARGETS, precisions

if TYPE_CHECKING:
    from resnet_deploy.serve.server import TritonServer

PORT = bounded("port")
SERVER_ENV = click.option("--server-env", type=click.Path(file_okay=False, path_type=str),
                          help="The server environment tritonserver's Python backend runs (`resnet-deploy server-env` "
                               "makes it) [default: $RESNET_DEPLOY_SERVER_ENV, else resnet-deploy-server inside this "
                               "environment's prefix].")


def _model_options(f: click.decorators.FC) -> click.decorators.FC:
    """The options of a model in a repository, shared by `triton` and `serve`."""
    for option in reversed([
        click.option("--name", help="Model name in Triton (default: the bundle's architecture)."),
        click.option("--precision", type=click.Choice(precisions()), default="auto", show_default=True,
                     help="Which of the bundle's models to serve (auto: as `predict --backend auto`)."),
        click.option("--max-batch", type=bounded("batch"),
                     help="Triton's max_batch_size [default: the bundle's largest batch]."),
        click.option("--instances", type=bounded("instances"), default=1, show_default=True,
                     help="Model instances (each runs its own copy of the model)."),
        click.option("--max-queue-delay-us", type=bounded("queue_delay_us"), default=0, show_default=True,
                     help="How long the dynamic batcher may hold a request to form a larger batch."),
        click.option("--threads", type=bounded("threads"),
                     help="ONNX Runtime threads per python-model instance [default: one per core]; with several "
                          "--instances, cores / instances."),
        TRUSTED_KEY,
    ]):
        f = option(f)
    return f


@click.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="Model repository directory to write.")
@click.option("--backend", "target", type=click.Choice(TARGETS), default="python", show_default=True,
              help="python: runs wherever Triton runs; onnxruntime, tensorrt: for NVIDIA's Triton containers.")
@_model_options
@click.option("--topk", type=bounded("topk"), default=5, show_default=True,
              help="Classes in the python model's labels/scores/class_ids outputs.")
@click.option("--force", is_flag=True, help="Replace an existing repository at --out (once the new one is complete).")
def triton(bundle: str, out: str, target: str, force: bool, **options: object) -> None:
    """Write a Triton model repository for BUNDLE: config.pbtxt, the model, labels (and for onnxruntime/tensorrt a
    preprocessing model and an ensemble for encoded images)."""
    from resnet_deploy.serve.repository import MARKER, backend_line, write_repository

    repo = write_repository(bundle, out, target=target, force=force, **options)
    facts = json.loads((repo / MARKER).read_text())
    models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    echo(f"model repository written to {repo}: {', '.join(models)} ({facts['backend']}, "
               f"max_batch_size {facts['max_batch_size']})")
    if target == "python":
        echo(f"on this machine: {backend_line(repo)}")
        echo(f"serve it here with `resnet-deploy serve {bundle}`, or with any tritonserver whose Python can "
                   "import resnet_deploy")
    else:
        if facts["file_info"].get("tensorrt_version"):
            echo(f"the engine was built with TensorRT {facts['file_info']['tensorrt_version']} for "
                       f"{facts['file_info'].get('gpu', 'its GPU')}: serve it with a Triton release that ships that "
                       "TensorRT, on that GPU model")
        echo("for NVIDIA's Triton container on a GPU (not served here): docker run --gpus=1 -p 8000:8000 "
                   f"-v {repo.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver "
                   "--model-repository=/models")


@click.command("server-env")
@click.option("--path", type=click.Path(file_okay=False, path_type=str),
              help="Where to make it [default: $RESNET_DEPLOY_SERVER_ENV, else resnet-deploy-server inside this "
                   "environment's prefix].")
@click.option("--force", is_flag=True, help="Make it again even when it is up to date.")
def server_env(path: str | None, force: bool) -> None:
    """Make (or reuse) the server environment: nvidia-pytriton's tritonserver, numpy<2 for its Python backend, and
    what resnet_deploy.runtime needs, apart from this environment (which keeps its numpy)."""
    from resnet_deploy.serve.environment import make_server_env

    env = make_server_env(path, force=force, log=lambda line: echo(line, err=True))
    echo(f"server environment ready: {env.path} (Python {env.python}, numpy {env.numpy}, resnet-deploy "
         f"{env.resnet_deploy})")


@click.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 makes the server reachable from the network.")
@click.option("--port", type=PORT, default=8000, show_default=True, help="HTTP port (KServe v2 REST).")
@click.option("--grpc-port", type=PORT, default=8001, show_default=True, help="gRPC port (KServe v2).")
@click.option("--metrics-port", type=PORT, default=8002, show_default=True, help="Prometheus metrics port.")
@_model_options
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=str),
              help="Keep tritonserver's log here [default: a temporary file, removed on exit].")
@SERVER_ENV
def serve(bundle: str, host: str, port: int, grpc_port: int, metrics_port: int, log_file: str | None,
          server_env: str | None, **options: object) -> None:
    """Serve BUNDLE with Triton Inference Server (its Python backend) until Ctrl-C or SIGTERM."""

    from resnet_deploy.runtime.manifest import check_writable
    from resnet_deploy.serve.addresses import listen_address
    from resnet_deploy.serve.repository import backend_line
    from resnet_deploy.serve.server import serve_bundle

    def ready(server: TritonServer, name: str) -> None:
        echo(f"ready: {server.url} (model {name!r}, {backend_line(server.repository)}; gRPC {server.grpc_address}; "
             f"metrics {server.metrics_url}); Ctrl-C stops it")

    if not ipaddress.ip_address(listen_address(host).split("%")[0]).is_loopback:
        echo(f"warning: listening on {host}: anyone who can reach this machine can send requests (README, "
                   "'Untrusted input', says what serve does not protect)", err=True)
    if log_file:
        check_writable(log_file, "--log-file")
    code = serve_bundle(bundle, host=host, http_port=port, grpc_port=grpc_port, metrics_port=metrics_port,
                        log_file=log_file, on_ready=ready, server_env=server_env, **options)
    echo(f"stopped (tritonserver exit code {code})", err=True)


@click.command()
@click.argument("url")
@click.option("--model", required=True, help="Model name on the server.")
@click.option("--concurrency", default="1,4,16", show_default=True,
              help="Comma-separated numbers of clients sending back to back (closed loop).")
@click.option("--rate", help="Comma-separated request rates, e.g. 100/s or 50,100/s: requests sent when due, answered "
                             "or not (open loop); the latency counts from when each was due. Replaces --concurrency.")
@click.option("--max-threads", type=bounded("concurrency"), default=16, show_default=True,
              help="With --rate: client threads sending (at most this many requests in flight).")
@click.option("--duration-s", type=bounded("seconds", positive=True), default=10.0, show_default=True,
              help="Timed seconds per level.")
@click.option("--warmup-s", type=bounded("seconds"), default=1.0, show_default=True,
              help="Untimed seconds per level first.")
@click.option("--max-requests", type=bounded("requests"), default=100_000, show_default=True,
              help="Most requests per level.")
@click.option("--images", type=click.Path(path_type=str), help="Send these JPEG/PNG files (default: random tensors).")
@click.option("--output", "outputs", multiple=True, help="Ask only for this output (repeatable; default: all).")
@click.option("--timeout-s", type=bounded("seconds", positive=True), default=30.0, show_default=True,
              help="Per-request timeout.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=str),
              help="Also write the JSON result here (with this client's CPU per request, to tell client-bound runs).")
@click.pass_context
def loadtest(ctx: click.Context, url: str, model: str, concurrency: str, rate: str | None, max_threads: int,
             duration_s: float, warmup_s: float, max_requests: int, images: str | None, outputs: tuple[str, ...],
             timeout_s: float, json_file: str | None) -> None:
    """Send requests to MODEL at URL (http://host:port or grpc://host:port) at each concurrency level or request
    rate: throughput, latency percentiles and this client's CPU per request."""
    from resnet_deploy.runtime.errors import ResnetDeployError
    from resnet_deploy.runtime.files import atomic_write_text
    from resnet_deploy.runtime.manifest import check_writable
    from resnet_deploy.serve.loadtest import level_name, loadtest_summary, parse_rates, run_loadtest

    if rate is not None and ctx.get_parameter_source("concurrency") is click.core.ParameterSource.COMMANDLINE:
        raise ResnetDeployError("give --concurrency (closed loop) or --rate (open loop), not both")
    levels = parse_numbers(concurrency, "--concurrency", "concurrency") if rate is None else []
    rates = parse_rates(rate) if rate is not None else []
    if json_file:
        check_writable(json_file, "--json file")  # before the run, which may take minutes
    result = run_loadtest(url, model, concurrency=levels, rate=rates, max_threads=max_threads, duration_s=duration_s,
                          warmup_s=warmup_s, max_requests=max_requests, images=images, outputs=outputs,
                          timeout_s=timeout_s)
    echo(*loadtest_summary(result))
    text = json.dumps(result, indent=2) + "\n"
    if json_file:
        try:
            atomic_write_text(json_file, text)
        except OSError as e:  # it could be written when the run began: keep the run anyway, and say where
            fd, kept = tempfile.mkstemp(prefix="resnet-deploy-loadtest-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            raise ResnetDeployError(f"cannot write --json {json_file} ({e.strerror}); the results are in "
                                    f"{kept}") from None
    silent = [r for r in result["results"] if r["latency_ms"] is None]
    if silent:
        kind = "rate" if "rate" in silent[0] else "concurrency"
        which = ", ".join(level_name(r).removeprefix(kind + " ") for r in silent)
        echo(f"FAIL: no answers at {kind} {which} (see the errors above)", err=True)
        raise SystemExit(1)


def register(group: click.Group) -> None:
    """Add the serving commands to the `resnet-deploy` group."""
    for command in (triton, server_env, serve, loadtest):
        group.add_command(command)
