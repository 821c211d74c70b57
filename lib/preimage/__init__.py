"""Pre-images of deep image representations (Mahendran & Vedaldi, CVPR 2015 and IJCV 2016).

The package has four layers, each importing only the ones below it: ``engine`` (the method),
``representations`` (networks, HOG, DSIFT, weights), ``paper`` (the paper's recipes, sweeps and
tables) and ``apps`` (command line, explorer). This module re-exports the public names.
"""
__version__ = "0.1.0"

from . import images, representations  # noqa: E402
from .engine import InversionResult, Progress, Schedule, Setting, check_record, record  # noqa: E402
from .errors import PreimageError, StopInversion  # noqa: E402
from .paper.natural import caricature, maximise  # noqa: E402
from .paper.recipes import Recipe, invert, recipe  # noqa: E402
from .representations import Representation  # noqa: E402

__all__ = ["InversionResult", "PreimageError", "Progress", "Recipe", "Representation", "Schedule", "Setting",
           "StopInversion", "caricature", "check_record", "images", "invert", "maximise", "recipe", "record",
           "representations", "__version__"]
