"""Training engine: the paper's optimiser and schedule, resumable checkpoints, the training loop."""

from ddrn.engine.checkpoint import load_checkpoint, save_checkpoint
from ddrn.engine.optim import build_optimizer, build_schedule
from ddrn.engine.trainer import TrainResult, amp_dtype, fit, seed_everything, train_one_epoch

__all__ = ["TrainResult", "amp_dtype", "build_optimizer", "build_schedule", "fit",
           "load_checkpoint", "save_checkpoint", "seed_everything",
           "train_one_epoch"]
