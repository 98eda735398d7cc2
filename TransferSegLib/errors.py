"""Typed errors whose messages a clinician can act on.

The command line and the Slicer panel print ``str(error)`` (never a bare traceback),
so every message names the file, node or model concerned and says what to do.
"""


class TransferSegError(Exception):
    """Base class: any error TransferSeg expects and can explain."""

    #: Exit code the command line returns for this kind of error.
    exit_code = 2


class CaseError(TransferSegError):
    """An image, labelmap or dataset manifest cannot be used as given."""


class ModelError(TransferSegError):
    """A base or fine-tuned model cannot be found, loaded or adapted."""


class DownloadError(TransferSegError):
    """A model download failed or did not match its published checksum."""


class ConfigError(TransferSegError):
    """A setting (strategy, training budget, patch size...) is not one TransferSeg can run with."""


class JobError(TransferSegError):
    """A background job cannot be started, attached to, resumed or cancelled."""


class TrainingCancelled(TransferSegError):
    """Training stopped because the user asked it to (not a failure)."""

    exit_code = 3


class OutputError(TransferSegError):
    """A result cannot be written where the user asked (disk full, read-only, no permission, not a folder).

    Raised only after the previous file at that place was left untouched.
    """
