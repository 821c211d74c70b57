"""Pre-images of deep image representations (Mahendran & Vedaldi, CVPR 2015)."""
__version__ = "0.1.0"

from . import images, presets, representations  # noqa: E402
from .errors import PreimageError, StopInversion  # noqa: E402
from .objective import Setting  # noqa: E402
from .optimise import Progress, invert  # noqa: E402
from .representations import Representation  # noqa: E402
from .results import InversionResult  # noqa: E402

__all__ = ["InversionResult", "PreimageError", "Progress", "Representation", "Setting",
           "StopInversion", "images", "invert", "presets", "representations", "__version__"]
