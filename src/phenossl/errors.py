"""Errors a user can act on. Every message says what went wrong, where, and what to do next.

The napari widgets show these messages as notifications and the CLI prints them without a traceback,
so anything raised as a PhenosslError must read well on its own.
"""

from __future__ import annotations


class PhenosslError(Exception):
    """A problem with the input, the configuration or the run that the user can fix."""


class InputError(PhenosslError):
    """An unreadable, corrupt or malformed input file (wrong shape, dtype, mismatched channels...)."""


class ConfigError(PhenosslError):
    """A configuration that cannot be used: unknown keys, values out of range, contradictory settings."""


class MetadataJoinError(InputError):
    """A metadata table that matches none (or not enough) of the images or cells."""


class NoNucleiError(PhenosslError):
    """Segmentation found no nucleus in an image or in the whole image set."""


class TooFewCellsError(PhenosslError):
    """Fewer cells than a step needs (more clusters than cells, a batch larger than the data...)."""


class WeightsNotFoundError(PhenosslError):
    """Model weights that are not on this machine and cannot be downloaded (offline, firewall)."""


class TrainingError(PhenosslError):
    """Training stopped before the end; the last good checkpoint is kept."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""


class CollapseError(TrainingError):
    """All embeddings became (nearly) identical: the representation collapsed."""


class DeviceOutOfMemoryError(TrainingError):
    """The accelerator ran out of memory."""


class Cancelled(PhenosslError):
    """The user cancelled a long-running step; what was saved before is kept."""


class DiskFullError(PhenosslError):
    """The disk ran out of space while a result was written; what was saved before is kept."""


class RunFolderBusyError(PhenosslError):
    """Another process is writing into the same run folder."""


class OutputExistsError(PhenosslError):
    """Writing would replace an existing file or run directory and overwrite was not asked for."""
