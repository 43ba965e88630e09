"""Thread selection on big.LITTLE through the Python binding of the core's rule (fe_choose_threads),
against fake sysfs trees. The rule itself is tested in C (native/tests/test_device.c). No model needed."""

from pathlib import Path

import pytest

from finllm_edge.errors import InvalidArgumentError
from finllm_edge.threads import choose_threads, choose_threads_for

SD865 = {0: 1804800, 1: 1804800, 2: 1804800, 3: 1804800, 4: 2419200, 5: 2419200, 6: 2419200, 7: 2841600}


def fake_sysfs(root: Path, freqs: dict[int, int | None], online: str | None = None) -> Path:
    """A tree standing for /sys: returns its root (the core reads <root>/devices/system/cpu/...)."""
    cpu = root / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text((online or f"0-{max(freqs)}") + "\n")
    for i, f in freqs.items():
        d = cpu / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        if f is not None:
            (d / "cpuinfo_max_freq").write_text(f"{f}\n")
            (d / "scaling_governor").write_text("schedutil\n")
            (d / "scaling_cur_freq").write_text(f"{f // 2}\n")
    return root


def test_sd865_uses_the_four_big_cores(tmp_path):
    root = fake_sysfs(tmp_path, SD865)
    choice = choose_threads(None, root, affinity=tuple(range(8)))
    assert choice.n_threads == 4
    assert choice.cores == (4, 5, 6, 7)
    assert "1x2.84GHz" in choice.reason and "3x2.42GHz" in choice.reason


def test_three_clusters_keep_everything_but_the_little_cluster(tmp_path):
    freqs = {0: 2016000, 1: 2016000, 2: 2016000, 3: 2803200, 4: 2803200, 5: 2803200, 6: 2803200, 7: 3187200}
    choice = choose_threads(None, fake_sysfs(tmp_path, freqs), affinity=tuple(range(8)))
    assert choice.cores == (3, 4, 5, 6, 7)


def test_affinity_mask_limits_the_choice(tmp_path):
    root = fake_sysfs(tmp_path, SD865)
    choice = choose_threads(None, root, affinity=(0, 1, 2, 3, 4, 5))
    assert choice.cores == (4, 5)
    assert choice.affinity == (0, 1, 2, 3, 4, 5)


def test_offline_cores_are_ignored(tmp_path):
    root = fake_sysfs(tmp_path, SD865, online="0-6")
    assert choose_threads(None, root, affinity=tuple(range(8))).cores == (4, 5, 6)


def test_uniform_or_unreadable_frequencies_use_every_allowed_core(tmp_path):
    same = choose_threads(None, fake_sysfs(tmp_path / "a", {0: 3000000, 1: 3000000, 2: 3000000}), affinity=(0, 1, 2))
    assert same.cores == (0, 1, 2) and same.n_threads == 3
    vm = choose_threads(None, fake_sysfs(tmp_path / "b", {0: None, 1: None}), affinity=(0, 1))
    assert vm.cores == (0, 1) and "not readable" in vm.reason


def test_explicit_thread_count_reports_the_fastest_cores(tmp_path):
    choice = choose_threads(2, fake_sysfs(tmp_path, SD865), affinity=tuple(range(8)))
    assert choice.n_threads == 2 and choice.cores == (4, 7)  # the prime core, then the first gold core
    with pytest.raises(InvalidArgumentError):
        choose_threads(0, tmp_path, affinity=(0,))


def test_another_devices_frequencies_use_the_same_rule():
    assert choose_threads_for(SD865).cores == (4, 5, 6, 7)
    assert choose_threads_for({0: None, 1: None}).cores == (0, 1)
