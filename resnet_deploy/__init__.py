"""resnet-deploy: train the ResNets of He et al. (2015), export them, validate them, and run them at the edge."""

__version__ = "0.1.0"
