"""`finllm-edge native clean` / scripts/bootstrap.sh: build folders of deleted checkouts are removed,
nothing else is (a full disk failed a CI run: ~1 GB of folders per deleted clone piled up)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from finllm_edge.native.cache_prune import prune, stale_build_dirs

HOUR = 3600.0


def _build_dir(native: Path, name: str, source: Path | None, age_h: float, payload: int = 1000) -> Path:
    d = native / name
    (d / "lib").mkdir(parents=True)
    (d / "lib" / "libfinllm_edge.so").write_bytes(b"x" * payload)
    stamps = [d, d / "lib", d / "lib" / "libfinllm_edge.so"]
    if source is not None:
        (d / "CMakeCache.txt").write_text(f"# cache\nCMAKE_BUILD_TYPE:STRING=Release\n"
                                          f"CMAKE_HOME_DIRECTORY:INTERNAL={source}\n")
        (d / ".ninja_log").write_text("# ninja log v5\n")
        stamps += [d / "CMakeCache.txt", d / ".ninja_log"]
    t = time.time() - age_h * HOUR
    for p in stamps:
        os.utime(p, (t, t))
    return d


def _checkout(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "CMakeLists.txt").write_text("project(x)\n")
    return root


def test_only_old_folders_of_missing_checkouts_are_removed(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FINLLM_EDGE_CACHE", str(cache))
    native = cache / "native"
    live = _checkout(tmp_path / "live")
    gone = tmp_path / "deleted-clone"
    not_ours = _checkout(tmp_path / "moved")
    (not_ours / "CMakeLists.txt").unlink()  # a folder is there, but no project in it
    keep_live = _build_dir(native, "host-aaaa", live, age_h=50)
    keep_live_sub = _build_dir(native, "validate-host-aaaa", live, age_h=50)
    (live / "native" / "validate").mkdir(parents=True)
    (live / "native" / "validate" / "CMakeLists.txt").write_text("project(v)\n")
    _build_dir(native, "validate-host-aaaa-fix", live / "native" / "validate", age_h=50)
    old_gone = _build_dir(native, "host-bbbb", gone, age_h=3, payload=5000)
    young_gone = _build_dir(native, "host-cccc", gone / "x", age_h=0.5)  # e.g. a CI clone we cannot see
    old_moved = _build_dir(native, "host-dddd", not_ours, age_h=3)
    old_partial = _build_dir(native, "host-eeee", None, age_h=3)
    young_partial = _build_dir(native, "host-ffff", None, age_h=0.1)
    (native / "link").symlink_to(old_gone)

    found = stale_build_dirs()
    assert [s.path.name for s in found] == ["host-bbbb", "host-dddd", "host-eeee"]
    assert found[0].source == str(gone) and found[0].bytes >= 5000 and 2.9 * HOUR < found[0].age_s < 3.2 * HOUR
    assert found[2].source == ""

    # a dry run removes nothing
    assert [s.path for s in prune(dry_run=True)] == [old_gone, old_moved, old_partial]
    assert old_gone.is_dir() and old_partial.is_dir()

    removed = prune()
    assert [s.path for s in removed] == [old_gone, old_moved, old_partial]
    for d in (old_gone, old_moved, old_partial):
        assert not d.exists()
    for d in (keep_live, keep_live_sub, young_gone, young_partial):
        assert d.is_dir()
    assert (native / "link").is_symlink()  # not followed, not removed
    assert (native / "validate-host-aaaa-fix").is_dir()

    # a younger age bound takes the young folder of the missing checkout too; live ones stay
    assert [s.path.name for s in prune(min_age_s=0.2 * HOUR)] == ["host-cccc"]
    assert keep_live.is_dir() and young_partial.is_dir()


def test_prune_waits_for_no_build_and_skips_when_told(tmp_path, monkeypatch):
    import fcntl

    cache = tmp_path / "cache"
    monkeypatch.setenv("FINLLM_EDGE_CACHE", str(cache))
    old = _build_dir(cache / "native", "host-bbbb", tmp_path / "gone", age_h=5)
    with open(cache / "heavy.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a build is running
        # bootstrap's call does not wait for it and removes nothing
        proc = subprocess.run([sys.executable, "-m", "finllm_edge.native.cache_prune"],
                              env=dict(os.environ, FINLLM_EDGE_CACHE=str(cache)),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert old.is_dir()
    proc = subprocess.run([sys.executable, "-m", "finllm_edge.native.cache_prune"],
                          env=dict(os.environ, FINLLM_EDGE_CACHE=str(cache)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not old.exists()
    assert "removed 1 stale build folder(s)" in proc.stderr and "host-bbbb" in proc.stderr


def test_cli_clean(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, FINLLM_EDGE_CACHE=str(cache))
    old = _build_dir(cache / "native", "host-bbbb", tmp_path / "gone", age_h=5)
    cli = [sys.executable, "-m", "finllm_edge.lab.cli", "native", "clean"]
    dry = subprocess.run([*cli, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 1 stale build folder(s)") and old.is_dir()
    bad = subprocess.run([*cli, "--min-age-hours", "-1"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--min-age-hours must be >= 0" in bad.stderr and old.is_dir()
    young = subprocess.run([*cli, "--min-age-hours", "6"], env=env, capture_output=True, text=True, timeout=60)
    assert young.returncode == 0 and young.stdout.startswith("removed 0") and old.is_dir()
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("removed 1") and not old.exists()


def test_cli_clean_waits_for_a_running_build(tmp_path, monkeypatch):
    import fcntl
    import threading

    cache = tmp_path / "cache"
    monkeypatch.setenv("FINLLM_EDGE_CACHE", str(cache))
    old = _build_dir(cache / "native", "host-bbbb", tmp_path / "gone", age_h=5)
    fh = open(cache / "heavy.lock", "a")
    fcntl.flock(fh, fcntl.LOCK_EX)
    released = threading.Event()

    def finish_build():
        time.sleep(0.5)
        released.set()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()

    threading.Thread(target=finish_build).start()
    removed = prune()  # waits for the lock, then prunes
    assert released.is_set()
    assert [s.path for s in removed] == [old] and not old.exists()
