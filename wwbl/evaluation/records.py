"""The resumable store of an evaluation run: ``run.json`` (the settings) and ``records.jsonl``.

``records.jsonl`` holds one JSON record per processed image, appended (and fsync'ed) batch by batch,
so a killed run loses at most the batch in flight. A rerun keeps what can be trusted and redoes the
rest, so that no image is counted twice and no stale record is scored:

* a last line cut short by a kill is cut off the file before anything is appended after it; any
  other line that is not a JSON object with a ``"key"`` (damaged bytes) is ignored and reported;
* each record carries ``"inputs"``, a fingerprint of the annotations it was computed for (the
  image's samples: ids, phrases or class names, GT boxes); a record whose fingerprint no longer
  matches its image's current samples is stale and the image is redone;
* a key recorded twice counts once: the last line that matches is used;
* records of images no longer in the benchmark are kept in the file but never scored.

Records written before fingerprints existed are used when they cover exactly the image's items.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from wwbl.atomic_files import write_text_atomic
from wwbl.evaluation.tasks import Unit

log = logging.getLogger(__name__)
RECORDS = "records.jsonl"
RUN = "run.json"
# WWbL caption settings that leave every caption unchanged (exact): left out of the resume check, also
# from a run.json written before they were left out.
_EXACT_CAPTION = ("chunk_size", "share_identical_crops")
_NOT_INPUTS = ("image_path", "size_hw")  # where the image lies and its recorded size change no record


def results_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` without the settings that cannot change a result (``_EXACT_CAPTION``)."""
    caption = (identity.get("pipeline") or {}).get("caption")
    if not isinstance(caption, dict):
        return identity
    kept = {k: v for k, v in caption.items() if k not in _EXACT_CAPTION}
    return {**identity, "pipeline": {**identity["pipeline"], "caption": kept}}


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def unit_fingerprint(unit: Unit) -> str:
    """A short hash of what an image's record depends on: its samples' fields but their paths and sizes."""
    samples = [{f.name: _plain(getattr(s, f.name)) for f in dataclasses.fields(s) if f.name not in _NOT_INPUTS}
               for s in unit.samples]
    return hashlib.sha1(json.dumps(samples, sort_keys=True).encode()).hexdigest()[:16]


def record_fits(record: dict, unit: Unit) -> bool:
    """Whether ``record`` was computed for ``unit``'s current samples (module docstring)."""
    if "inputs" in record:
        return record["inputs"] == unit_fingerprint(unit)
    items = record.get("items")  # a record from before fingerprints
    return items is None or (isinstance(items, dict) and set(items) == {s.item_id for s in unit.samples})


def scored_unit(unit: Unit, record: dict) -> Unit:
    """``unit`` with the samples its record covers (an item rejected at evaluation time is not scored)."""
    items = record.get("items")
    if items is None:
        return unit
    return Unit(unit.key, unit.image_path, [s for s in unit.samples if s.item_id in items])


def _read_run_file(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"'{path}' is damaged ({err}); it holds the settings of the records beside it: "
                         "restore it or use a fresh --out directory") from err
    if not isinstance(stored, dict):
        raise ValueError(f"'{path}' is damaged (not a JSON object); restore it or use a fresh --out directory")
    return stored


def _parse_line(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    return record if isinstance(record, dict) and isinstance(record.get("key"), str) else None


class RecordCache:
    """``records.jsonl`` plus ``run.json`` of one run directory (module docstring)."""

    def __init__(self, out: Path, identity: dict[str, Any]) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / RECORDS
        run_file = out / RUN
        if run_file.is_file():
            stored = results_identity(_read_run_file(run_file))
            if stored != identity:
                changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
                raise ValueError(f"'{out}' holds results of a run with different settings ({', '.join(changed)}); "
                                 "use a fresh --out directory")
        elif self.path.is_file():
            raise ValueError(f"'{self.path}' has no '{RUN}' beside it, so the settings its records were made "
                             "with are unknown; use a fresh --out directory")
        else:
            write_text_atomic(run_file, json.dumps(identity, indent=2))
        self.by_key: dict[str, list[dict]] = {}
        self.damaged = 0
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self._end_last_line(data[complete:], complete)
            data = self.path.read_bytes()
        for line in data.splitlines():
            if not line.strip():
                continue
            record = _parse_line(line)
            if record is None:
                self.damaged += 1
                continue
            self.by_key.setdefault(record["key"], []).append(record)
        if self.damaged:
            log.warning("%s: ignored %d damaged line(s); their images are redone", self.path, self.damaged)

    def _end_last_line(self, tail: bytes, complete: int) -> None:
        """A last line without its newline: ended when it is a whole record (a kill just before the
        newline), else, cut short by a kill, cut off, so that the next record starts a line of its own."""
        if _parse_line(tail) is not None:
            with self.path.open("ab") as f:
                f.write(b"\n")
            return
        log.warning("%s: dropped a last line cut short by an interrupted run (%d bytes)", self.path, len(tail))
        os.truncate(self.path, complete)

    def fitting(self, unit: Unit) -> dict | None:
        """The last record of ``unit`` that matches its current samples, or None."""
        for record in reversed(self.by_key.get(unit.key, [])):
            if record_fits(record, unit):
                return record
        return None

    def add(self, records: Sequence[dict]) -> None:
        """Append ``records`` and make them durable (flush + fsync) before returning."""
        if not records:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(record) + "\n" for record in records))
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self.by_key.setdefault(record["key"], []).append(record)
