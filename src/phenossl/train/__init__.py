"""Self-supervised training: devices, batches, checkpoints and the training loop."""

from phenossl.train.devices import DeviceOption, available_devices, resolve_device
from phenossl.train.trainer import (
    SETUP_PHASES,
    EpochDone,
    SetUp,
    StepProgress,
    TrainResult,
    iter_training,
    save_untrained,
    train,
)

__all__ = [
    "SETUP_PHASES",
    "DeviceOption",
    "EpochDone",
    "SetUp",
    "StepProgress",
    "TrainResult",
    "available_devices",
    "iter_training",
    "resolve_device",
    "save_untrained",
    "train",
]
