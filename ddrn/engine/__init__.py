"""Training engine: the paper's optimiser and schedule, resumable checkpoints, the training loop."""

from ddrn.engine.checkpoint import load_checkpoint, save_checkpoint
from ddrn.engine.optim import WarmupCosineSchedule, build_optimizer, lr_at_epoch
from ddrn.engine.trainer import TrainResult, amp_dtype, fit, seed_everything, train_one_epoch

__all__ = ["TrainResult", "WarmupCosineSchedule", "amp_dtype", "build_optimizer", "fit",
           "load_checkpoint", "lr_at_epoch", "save_checkpoint", "seed_everything",
           "train_one_epoch"]
