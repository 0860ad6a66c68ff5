"""Serving a bundle with NVIDIA's Triton Inference Server: model repositories, a local server, a load generator.

- `repository.write_repository`: a Triton model repository for a bundle (`resnet-deploy triton`): a Python-backend
  model that runs anywhere Triton runs, or the bundle's ONNX file / TensorRT engine for NVIDIA's containers.
- `server.TritonServer`, `server.serve_bundle`: the real `tritonserver` binary on such a repository
  (`resnet-deploy serve`), from PyPI's nvidia-pytriton wheel (the `serve` extra).
- `loadtest.run_loadtest`: concurrent KServe v2 requests with latency percentiles (`resnet-deploy loadtest`).

Nothing heavy is imported here (the variant registry is torch-free), so the command line stays quick to start.
"""

from resnet_deploy.runtime import variants

TARGETS = ("python", "onnxruntime", "tensorrt")


def precisions() -> tuple[str, ...]:
    """What `--precision` takes: "auto", then every precision of the variant registry."""
    return ("auto", *variants.precisions())
