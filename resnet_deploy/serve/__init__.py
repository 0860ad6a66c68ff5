"""Serving a bundle with NVIDIA's Triton Inference Server: model repositories, a local server, a load generator.

- `repository.write_repository`: a Triton model repository for a bundle (`resnet-deploy triton`): a Python-backend
  model that runs anywhere Triton runs, or the bundle's ONNX file / TensorRT engine for NVIDIA's containers.
- `server.TritonServer`, `server.serve_bundle`: the real `tritonserver` binary on such a repository
  (`resnet-deploy serve`), from PyPI's nvidia-pytriton wheel in the server environment.
- `environment.make_server_env`: that environment (`resnet-deploy server-env`): the wheel and the numpy<2 its Python
  backend needs, apart from the user's environment and its numpy.
- `loadtest.run_loadtest`: KServe v2 requests at concurrency levels or request rates, with latency percentiles and
  the client's CPU per request (`resnet-deploy loadtest`).

Nothing heavy is imported here (the variant registry is torch-free), so the command line stays quick to start.
"""

from dataclasses import dataclass

from resnet_deploy.runtime import variants


@dataclass(frozen=True)
class TritonBackend:
    """Triton's own backend for the files of one of the registry's runtimes (a variant's `loader`)."""

    platform: str  # config.pbtxt's `platform`
    model_file: str  # the name Triton loads from <name>/1/
    device: str  # the device `auto` ranks the variants for (NVIDIA's containers run these on GPUs)


TRITON_BACKENDS = {variants.ORT: TritonBackend("onnxruntime_onnx", "model.onnx", "cuda"),
                   variants.TRT: TritonBackend("tensorrt_plan", "model.plan", "cuda")}
# "python": the bundle itself, run by resnet_deploy.runtime inside Triton's Python backend (any runtime, CPU or GPU)
TARGETS = ("python", *TRITON_BACKENDS)


def precisions() -> tuple[str, ...]:
    """What `--precision` takes: "auto", then every precision of the variant registry."""
    return ("auto", *variants.precisions())
