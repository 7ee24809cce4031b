"""Training curves as CSV files (``log.csv``, ``predictor_log.csv``): one row per logged step,
the header from the first row's keys."""

from __future__ import annotations

import csv
from pathlib import Path


def append(path: Path, row: dict) -> None:
    """Append ``row`` to the curve at ``path``, writing the header first when the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def trim(path: Path, step: int, stage: str | None = None) -> int:
    """Drop the rows past ``step`` (of ``stage`` only, when given) from the curve at ``path``:
    a run stopped after logging them but before its next checkpoint; resumed at ``step``, it
    logs those steps again. Returns the number of rows dropped (0 when the file does not exist)."""
    if not path.exists():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    keep = [r for r in rows if not ((stage is None or r["stage"] == stage) and int(r["step"]) > step)]
    if len(keep) < len(rows):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(keep)
    return len(rows) - len(keep)
