"""Training (the paper's recipes) and evaluation: `train(config, out_dir)`, `evaluate(checkpoint, data_spec)`."""

from resnet_deploy.train.evaluate import evaluate, evaluation_line
from resnet_deploy.train.loop import Trainer, TrainingDiverged, summary_line, train
from resnet_deploy.train.schedule import LRSchedule

__all__ = ["LRSchedule", "Trainer", "TrainingDiverged", "evaluate", "evaluation_line", "summary_line", "train"]
