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

from resnet_deploy.runtime import variants

TARGETS = ("python", "onnxruntime", "tensorrt")


def precisions() -> tuple[str, ...]:
    """What `--precision` takes: "auto", then every precision of the variant registry."""
    return ("auto", *variants.precisions())
