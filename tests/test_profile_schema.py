"""The typed LatencyProfile schema against its writers: fe-bench, fe_profile_json (ctypes), and
the keys the schema must refuse (the old Python thermal key `temp_c`, untyped nested blocks).

The library is the one writer (native/src/profile_json.cpp); this file checks what it writes
against finllm_edge/schemas/latency_profile.schema.json with finllm_edge.profile's validator.
"""

from __future__ import annotations

import copy
import ctypes as C
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from finllm_edge.models import default_model_path
from finllm_edge.native import build as nb
from finllm_edge.profile import ProfileSchemaError, _check, schema, validate_profile

pytestmark = [pytest.mark.native]


@pytest.fixture(scope="module")
def host() -> nb.BuildInfo:
    return nb.ensure_built("host")


@pytest.fixture(scope="module")
def model() -> Path:
    return default_model_path()


def fake_sysfs(root: Path) -> Path:
    """A Snapdragon-865-like /sys with two thermal zones (millidegrees and degrees)."""
    freqs = {0: 1804800, 1: 1804800, 2: 1804800, 3: 1804800, 4: 2419200, 5: 2419200, 6: 2419200, 7: 2841600}
    cpu = root / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text("0-7\n")
    for i, f in freqs.items():
        d = cpu / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "cpuinfo_max_freq").write_text(f"{f}\n")
        (d / "scaling_governor").write_text("schedutil\n")
        (d / "scaling_cur_freq").write_text(f"{f // 2}\n")
    for n, (kind, temp) in enumerate([("cpu-1-0-usr", "61500"), ("battery", "30")]):
        z = root / "class" / "thermal" / f"thermal_zone{n}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(temp + "\n")
    return root


# ---------------------------------------------------------------- fe-bench


def run_fe_bench(host, model, *extra, env=None) -> dict:
    proc = subprocess.run([str(host.fe_bench), "-m", str(model), "-p", "8", "-n", "8", "-r", "1", "--json-only",
                           *extra], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_fe_bench_output_is_schema_valid(host, model):
    prof = validate_profile(run_fe_bench(host, model, "-t", "1"))
    assert prof["tool"] == "fe-bench" and (prof["n_prompt"], prof["n_gen"], prof["repetitions"]) == (8, 8, 1)
    assert len(prof["token_ms"]) == 7
    assert prof["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_fe_bench_thermal_block_is_typed(host, model, tmp_path):
    env = dict(os.environ, FE_SYSFS_ROOT=str(fake_sysfs(tmp_path / "sys")))
    prof = validate_profile(run_fe_bench(host, model, "-t", "1", env=env))
    th = prof["thermal"]
    assert set(th) == {"before", "after"}
    for side in ("before", "after"):
        assert th[side]["temps_c"] == {"thermal_zone0:cpu-1-0-usr": 61.5, "thermal_zone1:battery": 30.0}
        assert th[side]["cur_freq_khz"]["7"] == 2841600 // 2
    # the device block reads governors and max frequencies from the same tree
    allowed = [c for c in prof["device"]["affinity"] if c < 8]
    assert allowed and all(prof["device"]["governor"][str(c)] == "schedutil" for c in allowed)


# ---------------------------------------------------------------- fe_profile_json through ctypes


class RunTiming(C.Structure):
    _fields_ = [("ttft_ms", C.c_double), ("prefill_ms", C.c_double), ("e2e_ms", C.c_double),
                ("n_prompt", C.c_int32), ("n_gen", C.c_int32),
                ("token_ms", C.POINTER(C.c_double)), ("n_token_ms", C.c_size_t), ("n_prompt_reused", C.c_int32)]


class ProfileMeta(C.Structure):
    _fields_ = [("tool", C.c_char_p), ("model", C.c_void_p), ("model_path", C.c_char_p),
                ("model_sha256", C.c_char_p), ("model_type", C.c_char_p), ("model_size_bytes", C.c_uint64),
                ("bits_per_weight", C.c_double), ("runtime_version", C.c_char_p), ("variant", C.c_char_p),
                ("emulated", C.c_bool), ("n_threads", C.c_int32), ("n_ctx", C.c_int32), ("warmup", C.c_int32),
                ("load_ms", C.c_double), ("cores_used", C.POINTER(C.c_int32)), ("n_cores_used", C.c_size_t),
                ("thermal_before_json", C.c_char_p)]


@pytest.fixture(scope="module")
def lib(host):
    lib = C.CDLL(str(host.lib_shared))
    lib.fe_profile_default_meta.restype = ProfileMeta
    lib.fe_profile_json.restype = C.c_void_p
    lib.fe_profile_json.argtypes = [C.POINTER(RunTiming), C.c_size_t, C.POINTER(ProfileMeta)]
    lib.fe_thermal_json.restype = C.c_void_p
    lib.fe_free.argtypes = [C.c_void_p]
    lib.fe_last_error.restype = C.c_char_p
    lib.fe_version.restype = C.c_char_p
    lib.fe_llama_version.restype = C.c_char_p
    return lib


def take(lib, ptr) -> str:
    assert ptr, lib.fe_last_error().decode()
    try:
        return C.string_at(ptr).decode()
    finally:
        lib.fe_free(ptr)


def synthetic_profile(lib, tmp_path, **meta_fields) -> dict:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    token_lists = [[10.0, 10.0, 10.0], [5.0, 5.0, 5.0], [20.0, 20.0, 40.0]]
    arrays = [(C.c_double * len(t))(*t) for t in token_lists]
    runs = (RunTiming * 3)(*[RunTiming(100.0 + i, p, 200.0 + i, 10, 4, a, len(t))
                             for i, (p, a, t) in enumerate(zip((100.0, 50.0, 200.0), arrays, token_lists))])
    meta = lib.fe_profile_default_meta()
    meta.tool = b"finllm_edge.Engine"
    meta.model_path = str(model).encode()
    meta.model_type = b"llama ?B Q4_0"
    meta.bits_per_weight = 4.5
    meta.n_threads, meta.n_ctx, meta.warmup, meta.load_ms = 2, 128, 1, 12.5
    for k, v in meta_fields.items():
        setattr(meta, k, v)
    return json.loads(take(lib, lib.fe_profile_json(runs, 3, C.byref(meta))))


def test_fe_profile_json_on_synthetic_runs_is_schema_valid(lib, tmp_path):
    p = validate_profile(synthetic_profile(lib, tmp_path))
    assert p["tool"] == "finllm_edge.Engine"
    assert p["tool_version"] == lib.fe_version().decode()
    assert p["llama_cpp_version"] == lib.fe_llama_version().decode()
    assert p["model_sha256"] == hashlib.sha256(b"GGUF" + b"\0" * 60).hexdigest()
    assert (p["repetitions"], p["warmup"], p["n_prompt"], p["n_gen"], p["model_size_bytes"]) == (3, 1, 10, 4, 64)
    assert p["prefill_tok_s"] == pytest.approx(100.0)  # median of 100, 200, 50 tok/s
    assert p["decode_tok_s"] == pytest.approx(100.0)   # median of 100, 200, 37.5
    assert p["decode_tok_s_min"] == pytest.approx(37.5)
    assert p["token_ms"] == [20.0, 20.0, 40.0]
    assert p["ttft_ms"] == 101.0 and p["e2e_ms"] == 201.0


def test_fe_profile_json_thermal_from_fake_sysfs_is_schema_valid(lib, tmp_path, monkeypatch):
    monkeypatch.setenv("FE_SYSFS_ROOT", str(fake_sysfs(tmp_path / "sys")))
    before = take(lib, lib.fe_thermal_json())
    _check(json.loads(before), schema()["$defs"]["thermal_sample"], "fe_thermal_json")
    p = validate_profile(synthetic_profile(lib, tmp_path, thermal_before_json=before.encode()))
    assert p["thermal"]["before"] == json.loads(before)
    assert p["thermal"]["after"]["temps_c"]["thermal_zone0:cpu-1-0-usr"] == 61.5


def test_fe_profile_json_refuses_a_thermal_sample_that_is_not_json(lib, tmp_path):
    meta = lib.fe_profile_default_meta()
    meta.model_path, meta.n_ctx = str(tmp_path).encode(), 8
    runs = (RunTiming * 1)(RunTiming(1.0, 1.0, 2.0, 1, 1, None, 0))
    meta.model_sha256 = b"00"
    meta.thermal_before_json = b'{"temps_c": {'
    assert not lib.fe_profile_json(runs, 1, C.byref(meta))
    assert "not a JSON object" in lib.fe_last_error().decode()


# ---------------------------------------------------------------- what the schema refuses


@pytest.fixture
def good(lib, tmp_path) -> dict:
    return synthetic_profile(lib, tmp_path)


def test_old_python_thermal_key_is_rejected(good):
    sample = {"temp_c": {"thermal_zone0:cpu": 41.5}, "cur_freq_khz": {"0": 1804800}}
    for thermal in ({"after": sample}, {"before": None, "after": sample}):
        bad = dict(good, thermal=thermal)
        with pytest.raises(ProfileSchemaError, match="before|temp_c|temps_c"):
            validate_profile(bad)
    bad = dict(good, thermal={"before": None, "after": sample})
    with pytest.raises(ProfileSchemaError, match=r"thermal\.after.*(temps_c|temp_c)"):
        validate_profile(bad)


@pytest.mark.parametrize("mutate", [
    lambda t: t["after"]["temps_c"].update(z="hot"),                 # temperatures are numbers
    lambda t: t["after"]["cur_freq_khz"].update({"0": 1.5}),         # frequencies are integers
    lambda t: t["after"]["cur_freq_khz"].update(cpu0=1),             # keyed by CPU index
    lambda t: t.update(extra=1),                                     # no untyped additions
    lambda t: t["after"].update(extra=1),
    lambda t: t.update(fe_bench={"after": None}),                    # a nested pair needs both sides
], ids=["temp-str", "freq-float", "cpu-key", "thermal-extra", "sample-extra", "fe-bench-pair"])
def test_typed_thermal_rejects(good, mutate):
    p = copy.deepcopy(good)
    p["thermal"] = {"before": None, "after": {"temps_c": {"z": 40.0}, "cur_freq_khz": {"0": 1}}}
    validate_profile(p)
    mutate(p["thermal"])
    with pytest.raises(ProfileSchemaError):
        validate_profile(p)


def test_device_maps_are_typed(good):
    for key, val in (("governor", {"0": 3}), ("max_freq_khz", {"0": "fast"}), ("max_freq_khz", {"big": 1})):
        p = copy.deepcopy(good)
        p["device"][key] = val
        with pytest.raises(ProfileSchemaError):
            validate_profile(p)


def test_adb_device_bench_thermal_shape_is_valid(good):
    """What finllm_edge.lab.device.bench.annotate writes around fe-bench on a phone."""
    snap = {"temps_c": {"thermal_zone0:cpu-1-0-usr": 40.0}, "cur_freq_khz": {"1": 2841600},
            "scaling_max_freq_khz": {"1": 2841600}, "cpuinfo_max_freq_khz": {"1": 2841600},
            "governor": {"1": "schedutil"}, "cpu_temp_c": 40.0}
    p = copy.deepcopy(good)
    p["thermal"] = {"source": "adb (sysfs read around the fe-bench process)", "before": snap, "after": snap,
                    "cpu_temp_rise_c": 0.0, "throttled": True,
                    "throttled_cpus": {"1": {"cpuinfo_max_freq_khz": 2841600, "scaling_max_freq_khz": 1996800}},
                    "taskset_mask": "f0", "cooldown": {"waited_s": 0.0, "reached": True, "reason": "first run",
                                                       "start_c": 40.0},
                    "fe_bench": {"before": {"temps_c": {}, "cur_freq_khz": {}}, "after": None}}
    validate_profile(p)


def test_validator_refuses_keywords_it_does_not_implement():
    with pytest.raises(ProfileSchemaError, match="unsupported keywords"):
        _check({"a": 1}, {"type": "object", "oneOf": [{"required": ["a"]}]}, "x")
    with pytest.raises(ProfileSchemaError, match="unsupported \\$ref"):
        _check(1, {"$ref": "other.json#/x"}, "x")
