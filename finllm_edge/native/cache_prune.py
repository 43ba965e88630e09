"""Pruning the native build cache: the build folders of checkouts that no longer exist.

Every checkout builds into its own folders, <cache>/native/<target>-<key of the checkout's path>
(~1 GB for the ~11 targets a full test run builds), so each deleted clone leaves its folders
behind. A folder is stale when the source folder its CMakeCache.txt names is gone and nothing
has built in it for `min_age_s` (the age guards folders of checkouts this process cannot see,
e.g. a CI clone in another mount namespace sharing the cache). Folders without a CMakeCache.txt
(a configure that never finished) are stale after the same age.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_dir

DEFAULT_MIN_AGE_S = 2 * 3600
_HOME_KEY = "CMAKE_HOME_DIRECTORY:INTERNAL="
_MAX_CACHE_FILE = 4 << 20  # a CMakeCache.txt larger than this is not one of ours: not parsed


@dataclass(frozen=True)
class Stale:
    path: Path
    source: str   # the checkout folder it was configured from ("" if unknown)
    bytes: int
    age_s: float


def _source_of(build: Path) -> str:
    cache = build / "CMakeCache.txt"
    try:
        if cache.stat().st_size > _MAX_CACHE_FILE:
            return ""
        for line in cache.read_text(errors="replace").splitlines():
            if line.startswith(_HOME_KEY):
                return line[len(_HOME_KEY):].strip()
    except OSError:
        pass
    return ""


def _last_build(build: Path) -> float:
    stamps = [build, build / "CMakeCache.txt", build / ".ninja_log", build / "build.ninja"]
    return max((p.stat().st_mtime for p in stamps if p.exists()), default=0.0)


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def stale_build_dirs(root: Path | None = None, min_age_s: float = DEFAULT_MIN_AGE_S,
                     now: float | None = None) -> list[Stale]:
    """The stale folders under <cache>/native (sorted by path); nothing is removed."""
    root = root if root is not None else cache_dir() / "native"
    now = time.time() if now is None else now
    out = []
    if not root.is_dir():
        return out
    for build in sorted(root.iterdir()):
        if build.is_symlink() or not build.is_dir():
            continue
        age = now - _last_build(build)
        if age < min_age_s:
            continue
        source = _source_of(build)
        if source and (Path(source) / "CMakeLists.txt").is_file():
            continue  # its checkout is still there
        out.append(Stale(build, source, _size(build), age))
    return out


def prune(min_age_s: float = DEFAULT_MIN_AGE_S, dry_run: bool = False,
          wait: bool = True) -> list[Stale]:
    """Removes the stale build folders (under the heavy-build lock: never beside a build).

    wait=False returns [] at once when a build holds the lock. Returns what was (or, with
    dry_run, would be) removed.
    """
    lock = cache_dir() / "heavy.lock"
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return []
        try:
            found = stale_build_dirs(min_age_s=min_age_s)
            if not dry_run:
                for s in found:
                    shutil.rmtree(s.path, ignore_errors=True)
            return found
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def report(found: list[Stale], dry_run: bool) -> str:
    total = sum(s.bytes for s in found)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {len(found)} stale build folder(s), {total / 1e9:.2f} GB"]
    for s in found:
        src = s.source or "no CMakeCache.txt"
        lines.append(f"  {s.path.name}  {s.bytes / 1e6:8.1f} MB  from {src} (gone), "
                     f"last built {s.age_s / 3600:.1f} h ago")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m finllm_edge.native.cache_prune [--quiet]`: what scripts/bootstrap.sh runs."""
    argv = sys.argv[1:] if argv is None else argv
    found = prune(wait=False)
    if found and "--quiet" not in argv:
        print(report(found, dry_run=False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
