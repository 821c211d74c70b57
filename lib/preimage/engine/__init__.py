"""The method (§2–3): the objective, the schedule, the descent loop and its results. Imports nothing
from ``representations``, ``paper`` or ``apps`` and holds none of the paper's constants."""
from .objective import Setting
from .optimise import Progress, RunOptions, invert, invert_at_layers
from .results import InversionResult, check_record, record
from .schedule import Schedule

__all__ = ["InversionResult", "Progress", "RunOptions", "Schedule", "Setting", "check_record", "invert",
           "invert_at_layers", "record"]
