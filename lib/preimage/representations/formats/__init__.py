"""Readers of the weights files the paper's network is published in (.caffemodel, MatConvNet .mat)."""
from __future__ import annotations

from pathlib import Path

from ...errors import WeightsError


def read_bytes(path: Path, what: str, fix: str) -> bytes:
    """The bytes of the ``what`` file at ``path``; a WeightsError ending in ``fix`` when it cannot
    be read or is empty."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read {what} {path}: {e.strerror or e}; {fix}") from None
    if not data:
        raise WeightsError(f"{what} {path} is empty; {fix}")
    return data
