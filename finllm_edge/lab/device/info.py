"""What a phone is: ABI, SoC, CPU features, clusters, memory, free space, thermal zones.

Everything is read with one `adb shell` round trip (a POSIX script that mksh, toybox and dash
all run) and parsed here, so parsing is testable on plain text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .adb import Device

WORK_DIR = "/data/local/tmp/finllm-edge"
PROPS = (
    "ro.product.cpu.abi",
    "ro.product.cpu.abilist",
    "ro.soc.manufacturer",
    "ro.soc.model",
    "ro.board.platform",
    "ro.hardware",
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.build.version.release",
    "ro.build.version.sdk",
    "ro.kernel.qemu",       # "1" on the Android Emulator (older images)
    "ro.boot.qemu",         # "1" on the Android Emulator (newer images)
)
# Snapdragon 865 / 865+ / 870 are all SM8250 ("kona"): the figures of the SD865 estimate apply.
SD865_SOC = re.compile(r"^SM8250", re.I)
SD865_PLATFORM = {"kona"}

_SNAPSHOT_SCRIPT = (
    "for z in /sys/class/thermal/thermal_zone*; do "
    "[ -r \"$z/temp\" ] && echo \"@T ${z##*/} $(cat \"$z/type\" 2>/dev/null) $(cat \"$z/temp\" 2>/dev/null)\"; "
    "done; "
    "for c in /sys/devices/system/cpu/cpu[0-9]*; do "
    "echo \"@F ${c##*/cpu} $(cat \"$c/cpufreq/scaling_cur_freq\" 2>/dev/null || echo -) "
    "$(cat \"$c/cpufreq/scaling_max_freq\" 2>/dev/null || echo -) "
    "$(cat \"$c/cpufreq/cpuinfo_max_freq\" 2>/dev/null || echo -) "
    "$(cat \"$c/cpufreq/scaling_governor\" 2>/dev/null || echo -)\"; "
    "done"
)


def _info_script(work_dir: str) -> str:
    props = " ".join(PROPS)
    return (
        f"for p in {props}; do echo \"@P $p=$(getprop $p)\"; done; "
        "echo @CPUINFO; cat /proc/cpuinfo; echo @END; "
        "echo @MEMINFO; cat /proc/meminfo; echo @END; "
        f"mkdir -p {work_dir} 2>/dev/null; echo @DF; df -k {work_dir} 2>&1; echo @END; "
        + _SNAPSHOT_SCRIPT
    )


@dataclass
class CpuCore:
    cpu: int
    max_freq_khz: int | None
    cur_freq_khz: int | None
    scaling_max_freq_khz: int | None
    governor: str | None


@dataclass
class DeviceInfo:
    serial: str
    props: dict
    abi: str
    abilist: list
    soc: str
    model: str
    features: list
    cpu_parts: list
    cores: list                      # list[CpuCore] as dicts after asdict
    clusters: list                   # [{"max_freq_khz": f, "cpus": [...]}] fastest first
    big_cores: list
    mem_total_mb: float
    mem_available_mb: float
    work_dir: str
    free_bytes: int | None
    thermal_zones: dict              # "thermal_zoneN:type" -> C
    cpuinfo_text: str = field(repr=False, default="")

    @property
    def is_sd865(self) -> bool:
        return is_sd865(self.props, self.cpuinfo_text)

    @property
    def is_emulator(self) -> bool:
        """An Android Emulator / qemu guest: its timings are not a phone's."""
        return "1" in (self.props.get("ro.kernel.qemu"), self.props.get("ro.boot.qemu"))

    @property
    def cpu_model(self) -> str:
        return self.soc or self.model or "unknown ARM SoC"

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("cpuinfo_text")
        d["is_sd865"] = self.is_sd865
        d["is_emulator"] = self.is_emulator
        d["has_dotprod"] = "asimddp" in self.features
        d["has_fp16"] = "fphp" in self.features and "asimdhp" in self.features
        return d


def is_sd865(props: dict, cpuinfo_text: str = "") -> bool:
    if SD865_SOC.match(props.get("ro.soc.model", "")):
        return True
    if props.get("ro.board.platform", "").lower() in SD865_PLATFORM:
        return True
    hw = re.search(r"^Hardware\s*:\s*(.*)$", cpuinfo_text, re.M)
    return bool(hw and ("SM8250" in hw.group(1) or "kona" in hw.group(1).lower()))


def _sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    cur: str | None = None
    buf: list[str] = []
    for line in text.splitlines():
        if cur is None and line in ("@CPUINFO", "@MEMINFO", "@DF"):
            cur, buf = line[1:], []
        elif cur is not None and line == "@END":
            out[cur] = "\n".join(buf)
            cur = None
        elif cur is not None:
            buf.append(line)
    return out


def _int(s: str) -> int | None:
    s = s.strip()
    return int(s) if s.lstrip("-").isdigit() else None


def temp_c(raw: int) -> float:
    """Thermal zones report millidegrees (35000) on most kernels, degrees (35) on a few."""
    return raw / 1000.0 if abs(raw) >= 1000 else float(raw)


def parse_snapshot(text: str) -> dict:
    """Parse the @T/@F lines of a snapshot into {"temps_c": {...}, 'cur_freq_khz': {...}, ...}."""
    temps: dict[str, float] = {}
    cur: dict[str, int] = {}
    smax: dict[str, int] = {}
    cmax: dict[str, int] = {}
    gov: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "@T" and len(parts) >= 4:
            raw = _int(parts[-1])
            if raw is not None:
                temps[f"{parts[1]}:{' '.join(parts[2:-1])}"] = round(temp_c(raw), 1)
        elif parts[0] == "@F" and len(parts) >= 6:
            cpu = parts[1]
            for target, val in ((cur, parts[2]), (smax, parts[3]), (cmax, parts[4])):
                v = _int(val)
                if v is not None:
                    target[cpu] = v
            if parts[5] != "-":
                gov[cpu] = parts[5]
    return {"temps_c": temps, "cur_freq_khz": cur, "scaling_max_freq_khz": smax,
            "cpuinfo_max_freq_khz": cmax, "governor": gov}


def cpu_temp(snapshot: dict) -> float | None:
    """The hottest CPU zone (types with 'cpu'/'tsens'/'soc'), else the hottest zone at all."""
    temps = snapshot.get("temps_c", {})
    cpu = [t for k, t in temps.items() if re.search(r"cpu|tsens|soc", k.split(":", 1)[-1], re.I)]
    vals = cpu or list(temps.values())
    # Some zones report nonsense (-273, 0, 1000+); keep plausible silicon temperatures only.
    vals = [v for v in vals if -30.0 < v < 150.0]
    return max(vals) if vals else None


def parse_features(cpuinfo: str) -> tuple[list[str], list[str]]:
    feats: set[str] = set()
    parts: list[str] = []
    for line in cpuinfo.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k == "Features":
            feats.update(v.split())
        elif k == "CPU part" and v not in parts:
            parts.append(v)
    return sorted(feats), parts


def parse_meminfo(text: str) -> tuple[float, float]:
    vals = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            vals[m.group(1)] = int(m.group(2))
    return (round(vals.get("MemTotal", 0) / 1024, 1), round(vals.get("MemAvailable", 0) / 1024, 1))


def parse_df(text: str) -> int | None:
    """Free bytes from `df -k DIR` (toybox and coreutils: 1K-blocks Used Available ...)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    # A long filesystem name can wrap onto its own line; the numbers are on the last line.
    nums = [p for p in lines[-1].split() if p.isdigit()]
    if len(nums) >= 3:
        return int(nums[2]) * 1024
    return None


def clusters_of(cores: list[CpuCore]) -> list[dict]:
    by: dict[int, list[int]] = {}
    for c in cores:
        if c.max_freq_khz:
            by.setdefault(c.max_freq_khz, []).append(c.cpu)
    return [{"max_freq_khz": f, "cpus": sorted(cpus)} for f, cpus in sorted(by.items(), reverse=True)]


def big_cores_of(cores: list[CpuCore]) -> list[int]:
    """Cores above the slowest cluster (SD865: cpus 4-7); every core when all are equal."""
    from finllm_edge.threads import choose_threads_for  # the core's rule, as on the phone itself

    return sorted(choose_threads_for({c.cpu: c.max_freq_khz for c in cores}).cores)


def parse_info(serial: str, text: str, work_dir: str = WORK_DIR) -> DeviceInfo:
    props: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("@P "):
            k, _, v = line[3:].partition("=")
            props[k.strip()] = v.strip()
    sec = _sections(text)
    cpuinfo = sec.get("CPUINFO", "")
    feats, parts = parse_features(cpuinfo)
    snap = parse_snapshot(text)
    cpus = sorted({int(c) for c in (*snap["cpuinfo_max_freq_khz"], *snap["cur_freq_khz"], *snap["governor"])})
    if not cpus:
        cpus = list(range(sum(1 for ln in cpuinfo.splitlines() if ln.startswith("processor"))))
    cores = [
        CpuCore(cpu=c,
                max_freq_khz=snap["cpuinfo_max_freq_khz"].get(str(c)),
                cur_freq_khz=snap["cur_freq_khz"].get(str(c)),
                scaling_max_freq_khz=snap["scaling_max_freq_khz"].get(str(c)),
                governor=snap["governor"].get(str(c)))
        for c in cpus
    ]
    total, avail = parse_meminfo(sec.get("MEMINFO", ""))
    soc_bits = [props.get("ro.soc.manufacturer", ""), props.get("ro.soc.model", "")]
    soc = " ".join(b for b in soc_bits if b)
    if props.get("ro.board.platform"):
        soc = f"{soc} ({props['ro.board.platform']})" if soc else props["ro.board.platform"]
    return DeviceInfo(
        serial=serial,
        props=props,
        abi=props.get("ro.product.cpu.abi", ""),
        abilist=[a for a in props.get("ro.product.cpu.abilist", "").split(",") if a],
        soc=soc,
        model=" ".join(b for b in (props.get("ro.product.manufacturer", ""), props.get("ro.product.model", "")) if b),
        features=feats,
        cpu_parts=parts,
        cores=[asdict(c) for c in cores],
        clusters=clusters_of(cores),
        big_cores=big_cores_of(cores) if cores else [],
        mem_total_mb=total,
        mem_available_mb=avail,
        work_dir=work_dir,
        free_bytes=parse_df(sec.get("DF", "")),
        thermal_zones=snap["temps_c"],
        cpuinfo_text=cpuinfo,
    )


def read_info(dev: Device, work_dir: str = WORK_DIR) -> DeviceInfo:
    res = dev.shell(_info_script(work_dir), timeout=60, what="reading the device info")
    return parse_info(dev.serial, res.stdout, work_dir)


def read_snapshot(dev: Device) -> dict:
    """Temperatures and cpufreq right now (one shell round trip)."""
    snap = parse_snapshot(dev.shell(_SNAPSHOT_SCRIPT, timeout=30, what="reading temperatures and cpufreq").stdout)
    snap["cpu_temp_c"] = cpu_temp(snap)
    return snap


def format_info(info: DeviceInfo) -> str:
    d = info.to_json()
    lines = [
        f"{info.serial}: {info.model or '?'} — {info.cpu_model}",
        f"  ABI            {info.abi} ({', '.join(info.abilist) or '-'})",
        f"  Android        {info.props.get('ro.build.version.release', '?')} "
        f"(SDK {info.props.get('ro.build.version.sdk', '?')})",
        f"  CPU features   dotprod(asimddp)={'yes' if d['has_dotprod'] else 'no'}  "
        f"fp16(fphp+asimdhp)={'yes' if d['has_fp16'] else 'no'}  parts {', '.join(info.cpu_parts) or '?'}",
        "  clusters       " + ("; ".join(f"cpu{','.join(map(str, c['cpus']))} @ {c['max_freq_khz'] / 1e6:.2f} GHz"
                                       for c in info.clusters) or "cpufreq not readable"),
        f"  big cores      {','.join(map(str, info.big_cores)) or '-'}  "
        f"(taskset mask {core_mask(info.big_cores) or '-'})",
        f"  memory         {info.mem_total_mb:.0f} MB total, {info.mem_available_mb:.0f} MB available",
        f"  free space     {info.free_bytes / 2**20:.0f} MB in {info.work_dir}" if info.free_bytes is not None
        else f"  free space     unknown ({info.work_dir})",
        "  thermal        " + (", ".join(f"{k.split(':', 1)[-1]}={v:.1f}C"
                                         for k, v in sorted(info.thermal_zones.items()))
                               or "no readable thermal zones"),
        f"  SD865 class    {'yes (estimate available)' if info.is_sd865 else 'no'}",
        *(["  EMULATOR       ro.kernel.qemu/ro.boot.qemu=1: timings are emulated, not a phone's"]
          if info.is_emulator else []),
    ]
    return "\n".join(lines)


def core_mask(cpus: list[int]) -> str:
    """taskset hex mask for a CPU list ([4,5,6,7] -> 'f0')."""
    m = 0
    for c in cpus:
        m |= 1 << c
    return format(m, "x") if m else ""
