"""The lean runtime for edge apps: numpy, PIL, and onnxruntime or TensorRT + cuda-python; never torch or click.

    from resnet_deploy.runtime import Predictor
    predictor = Predictor.from_bundle("bundle/", backend="auto", device="cpu")
    for p in predictor.predict(["cat.jpg", "dog.png"], topk=5):
        print(p.label, p.score)

Everything here imports only from `resnet_deploy.runtime` (docs/architecture.md, "Floors").
"""

from resnet_deploy.runtime import variants
from resnet_deploy.runtime.backend import Backend, LoadOptions
from resnet_deploy.runtime.errors import BundleError, ResnetDeployError
from resnet_deploy.runtime.manifest import FileEntry, Manifest, read_manifest
from resnet_deploy.runtime.predictor import Prediction, Predictor, available_backends, choose_backend
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.runtime.signature import SignatureError
from resnet_deploy.runtime.verified import verify_files

__all__ = [
    "Backend", "BundleError", "FileEntry", "LoadOptions", "Manifest", "Prediction", "Predictor", "Preprocess",
    "ResnetDeployError", "SignatureError", "available_backends", "choose_backend", "read_manifest", "variants",
    "verify_files",
]
