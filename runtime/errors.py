"""Typed exceptions for everything a user can cause; the CLIs turn them into one line and an exit code."""


class OccNetError(Exception):
    """Base class: an error with a message meant for the user, not a bug."""


class InputError(OccNetError):
    """A file or an option that cannot be used as given."""


class ModelError(OccNetError):
    """An ONNX model that is unreadable or does not fit the occnet contract."""


class DeviceError(OccNetError):
    """An execution device that was asked for but cannot be used."""


class ResourceError(OccNetError):
    """Work that would need more memory than the machine has."""


class EmptySurfaceError(OccNetError):
    """A field with no surface at the threshold inside the box: there is no mesh to write."""


class OutputError(OccNetError):
    """An output that cannot or must not be written: a full disk, a folder, the command's own input."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), cut to ``limit`` characters: third-party
    errors are often pages long, and a user gets one line."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
