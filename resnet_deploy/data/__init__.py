"""Data sets, the paper's augmentations, and evaluation arrays (see docs/architecture.md, "Floors": data/ sits above
runtime/, whose `Preprocess` is the one evaluation transform).

Fashion-MNIST is used at its own 28x28, not padded to 32: the CIFAR networks of §4.2 are fully convolutional with a
global average pool, so 28x28 gives feature maps of 28/14/7 and the same parameters, at 77% of the compute of 32x32
(the quick demo recipe must train on a 2-core CPU), and the model then takes the data set's images as they are.
"""

from resnet_deploy.data.evaluation import iter_eval_batches, load_eval_arrays, select_indices, ten_crop
from resnet_deploy.data.sources import ArraySet, load_arrays, read_idx
from resnet_deploy.data.spec import DataSpec, locate, parse_spec

__all__ = ["ArraySet", "DataSpec", "iter_eval_batches", "load_arrays", "load_eval_arrays", "locate", "parse_spec",
           "read_idx", "select_indices", "ten_crop"]
