"""Errors that name the problem and the fix.

Every error the library raises on bad input is a ``PreimageError``; the command line turns
them into one message and exit code 2 instead of a traceback.
"""


class PreimageError(Exception):
    """Bad input or a missing resource; the message says what to do."""


class ImageError(PreimageError):
    """An image that cannot be read, or is too small for the layer."""


class UnknownNameError(PreimageError):
    """An unknown model, layer or option; the message lists the valid ones."""


class WeightsError(PreimageError):
    """Weights that are missing, corrupt or do not fit the model."""


class SettingsError(PreimageError):
    """A regularisation or optimisation setting outside its valid range."""


class CodeError(PreimageError):
    """A feature code file that does not fit the model, layer or image size."""


class ResourceError(PreimageError):
    """Work that would need more memory than the limit; the message gives the estimate and the limit."""


class DivergenceError(PreimageError):
    """The optimisation produced NaN/Inf or its energy blew up."""


class StopInversion(Exception):
    """Raised by a progress callback to end an inversion early (the result keeps what was done)."""


def unknown(kind: str, name, valid, of: str | None = None) -> UnknownNameError:
    """'unknown layer 'conv6' of alexnet; did you mean conv5, conv4? valid layers of alexnet: ...'
    (the closest matches first, when there are any)."""
    import difflib

    valid = [str(v) for v in valid]
    where = f" of {of}" if of else ""
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}{where}{hint}; valid {kind}s{where}: {', '.join(valid)}")
