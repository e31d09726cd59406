"""Errors users see: one line saying what is wrong, where, and what to do."""


class VLBenchError(Exception):
    """Base class for every error vlbench reports to a user as a one-line message."""


class DataError(VLBenchError):
    """A data file is missing, malformed or inconsistent (the message names file and line/key)."""


class ConfigError(VLBenchError):
    """A configuration key or value is unknown or of the wrong type."""


class TrainingError(VLBenchError):
    """A run that cannot go on (a non-finite loss, a crash inside the trainer): recorded as failed."""


class CheckpointError(VLBenchError):
    """A checkpoint is missing, unsafe to load, or does not fit the model."""
