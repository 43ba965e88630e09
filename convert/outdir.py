"""The output folder belongs to the user: convert writes only into a folder it created (or an empty
one) or one carrying its own marker from an earlier run, and never deletes a file it did not write.

The marker `OUT/.finllm-edge-convert.json` lists, by relative path, every file and folder convert
writes there. It is written when a run starts (listing what the run plans to write, so a killed run
is still recognised) and rewritten when it ends (listing what exists).

    inspect()  read-only: is --out usable? (writable, not under a file, not someone else's folder);
               what would this run replace and remove. Runs in the `check` stage, before anything
               is touched, so a refused run leaves an earlier finished run exactly as it was.
    claim()    after every check passed: create the folder, remove the earlier run's files (all of
               them: a stale model-q4_0.gguf must not sit beside new results) and partial files of
               convert's own outputs, write the marker.
    finish()   record what this run wrote.

A non-empty folder without the marker is refused (OutputFolderError) unless --force; with --force
only the files at the paths convert writes are replaced, and they are listed. Files convert did not
write (e.g. `data/draft.partial-1.txt`) are never deleted, even if their name looks like a partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic
from .errors import OutputFolderError, OutputNotWritableError

MARKER = ".finllm-edge-convert.json"
TOOL = "finllm-edge convert"


@dataclass
class Plan:
    files: list[str]                  # relative paths of files the run writes
    dirs: list[str]                   # relative folders the run creates and fills (every file inside is its own)


@dataclass
class Inspection:
    out: Path
    exists: bool
    ours: bool                        # created by convert (marker) or new/empty
    replace: list[str] = field(default_factory=list)   # foreign files at paths this run writes (--force)
    remove: list[str] = field(default_factory=list)    # the earlier run's files, removed at claim
    partials: list[str] = field(default_factory=list)  # partial files of convert's own outputs
    foreign: list[str] = field(default_factory=list)   # files convert did not write (left alone)


def plan_for(opts, awq_targets: list[str], quant_names: list[str]) -> Plan:
    files = [f"model-{f}.gguf" for f in opts.floats] + [f"model-{n}.gguf" for n in quant_names]
    files += ["parity.json", "quality.json", "quality.md", "quality.png", "task_answers.json", "manifest.json",
              "drift-ref.fedrift", "drift-ref.json"]
    if getattr(opts, "adapter_gguf", False):
        from .adapter_gguf import base_artifact_names

        files += base_artifact_names(list(opts.quants))
    dirs = ["merged", ".work"] + [f"merged-awq-{t}" for t in awq_targets]
    if "onnx" in opts.formats:
        dirs.append("onnx-int4")
    return Plan(files, dirs)


def _files_under(root: Path) -> list[str]:
    out = []
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            out.append(str((Path(dirpath) / n).relative_to(root)))
    return sorted(out)


def read_marker(out: Path) -> dict | None:
    p = out / MARKER
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("tool") == TOOL else None


def _probe_dir(d: Path) -> None:
    """Raise OSError if a file cannot be created (and removed) in `d`."""
    if not os.access(d, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied")
    fd, name = tempfile.mkstemp(prefix=".finllm-probe-", dir=d)
    os.close(fd)
    os.unlink(name)


def _in_dirs(rel: str, dirs) -> bool:
    return any(rel == d or rel.startswith(d + "/") for d in dirs)


def _partial_base(rel: str) -> str | None:
    """'merged/model.safetensors.partial-123' -> 'merged/model.safetensors'; 'merged-awq-q4_0.partial-dir/x' ->
    'merged-awq-q4_0/x'; None if `rel` is no partial name."""
    parts = rel.split("/")
    for i, p in enumerate(parts):
        if atomic.PARTIAL_TAG in p:
            parts[i] = p.split(atomic.PARTIAL_TAG)[0]
            return "/".join(parts)
    return None


def inspect(out: Path, plan: Plan, force: bool = False) -> Inspection:
    """Check --out without touching it. Raises OutputNotWritableError / OutputFolderError."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputNotWritableError(f"--out {out} is a file, not a folder; choose a folder path")
    if not out.exists():
        anc = out.parent
        while not anc.exists():
            anc = anc.parent
        if not anc.is_dir():
            raise OutputNotWritableError(
                f"--out {out} cannot be created: {anc} is a file, not a folder; choose another --out")
        try:
            _probe_dir(anc)
        except OSError as exc:
            raise OutputNotWritableError(
                f"--out {out} cannot be created: {anc} is not writable ({exc.strerror or exc}); "
                "choose another --out or fix its permissions") from exc
        return Inspection(out, exists=False, ours=True)
    try:
        _probe_dir(out)
    except OSError as exc:
        raise OutputNotWritableError(
            f"output folder {out} is not writable ({exc.strerror or exc}); choose another --out or fix its "
            "permissions") from exc
    entries = [e for e in _files_under(out) if e != MARKER]
    marker = read_marker(out)
    if marker is None and not entries:
        return Inspection(out, exists=True, ours=True)
    mine_files = set(marker.get("files", [])) if marker else set()
    mine_dirs = set(marker.get("dirs", [])) if marker else set()
    was_foreign = set(marker.get("foreign", [])) if marker else set()
    planned = set(plan.files) | {MARKER}
    ours, partials, foreign = [], [], []
    for e in entries:
        base = _partial_base(e)
        if e in was_foreign:
            foreign.append(e)
        elif base is not None and marker is not None and (
                base in mine_files or base in planned or _in_dirs(base, mine_dirs | set(plan.dirs))):
            partials.append(e)
        elif e in mine_files or _in_dirs(e, mine_dirs):
            ours.append(e)
        else:
            foreign.append(e)
    replace = [e for e in foreign if e in planned or _in_dirs(e, plan.dirs)]
    replace += [d for d in plan.dirs if (out / d).exists() and not (out / d).is_dir()]
    insp = Inspection(out, True, marker is not None, replace, ours, partials, foreign)
    if force:
        return insp
    if marker is None:
        example = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"--out {out} is not empty ({len(foreign)} file(s): {example}) and was not made by finllm-edge convert "
            f"(no {MARKER}). Choose a new or empty folder, or pass --force to write into it: convert would then "
            + (f"replace {len(replace)} file(s) ({', '.join(replace[:8])}{', ...' if len(replace) > 8 else ''})"
               if replace else "replace nothing")
            + " and leave every other file alone")
    if replace:
        raise OutputFolderError(
            f"--out {out} holds file(s) convert did not write where this run writes: {', '.join(replace[:8])}"
            f"{', ...' if len(replace) > 8 else ''}. Move them away, choose another --out, or pass --force to "
            "replace them")
    return insp


def claim(insp: Inspection, plan: Plan) -> list[str]:
    """Make --out ready for this run (after every check passed); return notes."""
    out = insp.out
    notes = []
    out.mkdir(parents=True, exist_ok=True)
    for rel in insp.remove + insp.partials:
        p = out / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
    for rel in sorted({str(Path(r).parent) for r in insp.remove + insp.partials}, key=len, reverse=True):
        d = out / rel
        while d != out and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    for d in plan.dirs:                              # a file where a folder of ours goes (--force only)
        if (out / d).exists() and not (out / d).is_dir():
            (out / d).unlink()
    if insp.partials:
        notes.append(f"removed {len(insp.partials)} partial file(s) of an interrupted run")
    if insp.replace:
        notes.append(f"--force: replaced {len(insp.replace)} file(s) convert did not write: {', '.join(insp.replace)}")
    write_marker(out, plan, "running", foreign=[f for f in insp.foreign if f not in insp.replace])
    return notes


def write_marker(out: Path, plan: Plan, state: str, foreign: list[str] | None = None) -> None:
    prev = read_marker(out) or {}
    foreign = prev.get("foreign", []) if foreign is None else foreign
    if state == "running":
        files = sorted(set(plan.files))
    else:
        files = sorted(e for e in _files_under(out) if e != MARKER and e not in foreign
                       and (e in plan.files or _in_dirs(e, plan.dirs)))
    atomic.write_json(out / MARKER, {"tool": TOOL, "schema_version": 1, "state": state, "files": files,
                                     "dirs": sorted(plan.dirs), "foreign": sorted(foreign)})


def finish(out: Path, plan: Plan, state: str) -> None:
    write_marker(out, plan, state)


def tree_state(out: Path) -> dict[str, bytes]:
    """Every file under `out` with its bytes (tests: 'a refused run leaves the folder byte-identical')."""
    return {e: (out / e).read_bytes() for e in _files_under(out)}

