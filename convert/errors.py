"""One root for the pipeline's errors, so the CLI can print them without a traceback."""


class ConvertError(Exception):
    """Something the user can fix: a wrong path, a bad checksum, a model that does not fit."""


class CorpusError(ConvertError):
    pass


class TokenizerError(ConvertError):
    pass


class TrainingError(ConvertError):
    pass


class ConversionError(ConvertError):
    pass


class TensorMismatchError(ConversionError):
    """A tensor's name or shape is not what the other format expects."""


class CheckpointError(ConvertError):
    """A checkpoint directory that cannot be imported, and why."""
