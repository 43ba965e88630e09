"""A small client over the `adb` executable, with typed errors.

Only plain adb syntax is used (`adb devices -l`, `adb -s SERIAL shell CMD | push | pull |
get-state`) and only toybox/mksh-compatible shell commands are sent, so the same code drives
any Android phone and the fake adb of the tests (tests/fake_adb/adb).

Exit status: every `shell` command is sent as `CMD; echo __FE_RC__=$?` and the status is
read back from that last line, which works with old adb servers that lack the shell v2
protocol (those always exit 0) as well as new ones.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

from finllm_edge.errors import FinLLMEdgeError

RC_MARKER = "__FE_RC__="
ADB_ENV = "FINLLM_EDGE_ADB"  # path of the adb executable to use instead of the one on PATH


class DeviceError(FinLLMEdgeError, RuntimeError):
    """Base of every device/adb error. `serial` names the phone when one is concerned."""

    def __init__(self, message: str, serial: str | None = None):
        super().__init__(f"{serial}: {message}" if serial else message)
        self.serial = serial
        self.detail = message  # the message without the serial prefix


class AdbNotFoundError(DeviceError):
    pass


class NoDeviceError(DeviceError):
    pass


class DeviceUnauthorizedError(DeviceError):
    pass


class DeviceOfflineError(DeviceError):
    pass


class DeviceDisconnectedError(DeviceError):
    """The phone went away while we were talking to it."""


class WrongAbiError(DeviceError):
    pass


class NotEnoughSpaceError(DeviceError):
    pass


class PushFailedError(DeviceError):
    pass


class PullFailedError(DeviceError):
    pass


class BenchmarkCrashError(DeviceError):
    def __init__(self, message: str, serial: str | None = None, returncode: int | None = None,
                 variant: str | None = None):
        super().__init__(message, serial)
        self.returncode = returncode
        self.variant = variant


class AdbCommandError(DeviceError):
    """adb itself failed for a reason that has no more specific class."""


@dataclass(frozen=True)
class DeviceEntry:
    """One line of `adb devices -l`."""

    serial: str
    state: str                      # device | unauthorized | offline | recovery | ...
    details: dict = field(default_factory=dict)  # usb:, product:, model:, device:, transport_id:

    @property
    def model(self) -> str:
        return self.details.get("model", "")


@dataclass(frozen=True)
class ShellResult:
    returncode: int
    stdout: str
    stderr: str


def find_adb() -> str:
    """The adb executable: $FINLLM_EDGE_ADB, else `adb` on PATH, else AdbNotFoundError."""
    env = os.environ.get(ADB_ENV)
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise AdbNotFoundError(f"${ADB_ENV} points to {env!r}, which is not an executable file")
    found = shutil.which("adb")
    if not found:
        raise AdbNotFoundError(
            "`adb` is not on PATH. Install Android platform tools (Debian/Ubuntu: "
            "`sudo apt-get install adb`; macOS: `brew install android-platform-tools`; or the SDK "
            f"platform-tools zip) and make sure `adb devices` lists your phone, or set ${ADB_ENV}."
        )
    return found


_DISCONNECT_PATTERNS = (
    "not found", "no devices", "device offline", "closed", "no such device",
    "protocol fault", "connection reset", "device still connecting", "broken pipe",
)
_UNAUTHORIZED_HINT = (
    "the phone has not authorized this computer: unlock it and accept the "
    "\"Allow USB debugging?\" dialog (tick \"Always allow\"), then retry. If no dialog appears, "
    "revoke USB debugging authorizations in Developer options and reconnect the cable."
)
_OFFLINE_HINT = (
    "the phone is offline: reconnect the USB cable (or `adb reconnect`), unlock the phone, "
    "and retry; `adb kill-server` helps when it stays offline."
)


def parse_devices(text: str) -> list[DeviceEntry]:
    """Parse `adb devices -l` output (also accepts the short form without -l)."""
    out: list[DeviceEntry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("*", "List of devices", "adb server", "daemon")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, state = parts[0], parts[1]
        rest = parts[2:]
        if state == "no" and rest[:1] == ["permissions"]:  # "no permissions (user in plugdev...)"
            state = "no permissions"
        details = dict(p.split(":", 1) for p in rest if ":" in p)
        out.append(DeviceEntry(serial, state, details))
    return out


class Adb:
    """The adb client. `timeout` bounds every call except pushes/pulls and benchmark runs."""

    def __init__(self, adb_path: str | None = None, timeout: float = 60.0):
        self.path = adb_path or find_adb()
        self.timeout = timeout

    def _run(self, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.path, *args], capture_output=True, text=True,
                                  errors="replace", timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise AdbNotFoundError(f"adb executable {self.path!r} disappeared") from None
        except subprocess.TimeoutExpired:
            raise AdbCommandError(f"`adb {' '.join(args[:4])} ...` timed out after "
                                  f"{timeout or self.timeout:.0f} s") from None

    def devices(self) -> list[DeviceEntry]:
        proc = self._run(["devices", "-l"])
        if proc.returncode != 0:
            raise AdbCommandError(f"`adb devices -l` failed ({proc.returncode}): "
                                  f"{(proc.stderr or proc.stdout).strip()}")
        return parse_devices(proc.stdout)

    def resolve(self, serials: list[str] | None) -> list[DeviceEntry]:
        """The devices to work on: the given serials (checked) or every attached device.

        Raises NoDeviceError / DeviceUnauthorizedError / DeviceOfflineError for the first that
        cannot be used when serials are named; with no serials, NoDeviceError when none is
        attached. Unusable devices are returned too (callers report them per device).
        """
        found = self.devices()
        by_serial = {d.serial: d for d in found}
        if serials:
            missing = [s for s in serials if s not in by_serial]
            if missing:
                listed = ", ".join(f"{d.serial} ({d.state})" for d in found) or "none"
                raise NoDeviceError(
                    f"device {', '.join(missing)} not attached (adb devices lists: {listed}); "
                    "check the cable, USB debugging, and the serial spelling")
            return [by_serial[s] for s in serials]
        if not found:
            raise NoDeviceError(
                "no device attached: connect a phone with USB debugging enabled "
                "(Settings > About phone > tap Build number 7 times; then Developer options > "
                "USB debugging) and check `adb devices`")
        return found

    def device(self, entry_or_serial: DeviceEntry | str) -> "Device":
        if isinstance(entry_or_serial, DeviceEntry):
            check_state(entry_or_serial)
            return Device(self, entry_or_serial.serial)
        return Device(self, entry_or_serial)

    def get_state(self, serial: str) -> str | None:
        """'device', 'unauthorized', 'offline', ... or None when the device is gone."""
        proc = self._run(["-s", serial, "get-state"], timeout=20)
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0:
            return proc.stdout.strip() or None
        if "unauthorized" in text:
            return "unauthorized"
        if "offline" in text:
            return "offline"
        return None


def check_state(entry: DeviceEntry) -> None:
    if entry.state == "device":
        return
    if entry.state == "unauthorized":
        raise DeviceUnauthorizedError(_UNAUTHORIZED_HINT, entry.serial)
    if entry.state == "offline":
        raise DeviceOfflineError(_OFFLINE_HINT, entry.serial)
    if entry.state == "no permissions":
        raise DeviceUnauthorizedError(
            "adb has no permission to open the USB device: add a udev rule for the phone "
            "(Debian: `sudo apt-get install android-sdk-platform-tools-common`) and replug", entry.serial)
    raise DeviceOfflineError(f"device is in state {entry.state!r}, not 'device'; boot it normally "
                             "with USB debugging on", entry.serial)


class Device:
    """One phone, addressed with `adb -s SERIAL`."""

    def __init__(self, adb: Adb, serial: str):
        self.adb = adb
        self.serial = serial
        self.shell_calls = 0

    # --- errors -----------------------------------------------------------------------------
    def _gone_or(self, proc: subprocess.CompletedProcess, what: str, cls=AdbCommandError) -> DeviceError:
        """Map a failed adb call to DeviceDisconnectedError / Unauthorized / Offline / `cls`."""
        text = (proc.stderr + "\n" + proc.stdout).strip()
        low = text.lower()
        if "unauthorized" in low:
            return DeviceUnauthorizedError(_UNAUTHORIZED_HINT, self.serial)
        if any(p in low for p in _DISCONNECT_PATTERNS):
            state = self.adb.get_state(self.serial)
            if state == "unauthorized":
                return DeviceUnauthorizedError(_UNAUTHORIZED_HINT, self.serial)
            if state != "device":
                return DeviceDisconnectedError(
                    f"the device disconnected during {what} (adb: {text.splitlines()[-1] if text else '?'}); "
                    "reconnect it and rerun; results measured so far are kept", self.serial)
        return cls(f"{what} failed (adb exit {proc.returncode}): {text[-800:]}", self.serial)

    # --- commands ---------------------------------------------------------------------------
    def shell(self, command: str, timeout: float | None = None, check: bool = False,
              what: str | None = None) -> ShellResult:
        """Run `command` with the device's sh; return its exit status and output.

        `what` names the step in error messages (default: the start of the command).
        """
        self.shell_calls += 1
        wrapped = f"{command}; echo {RC_MARKER}$?"
        proc = self.adb._run(["-s", self.serial, "shell", wrapped], timeout=timeout)
        out = proc.stdout.replace("\r\n", "\n")
        idx = out.rfind(RC_MARKER)
        if idx < 0:
            raise self._gone_or(proc, what or f"`adb shell {command[:60]}`")
        tail = out[idx + len(RC_MARKER):].strip().split()
        rc = int(tail[0]) if tail and tail[0].lstrip("-").isdigit() else proc.returncode
        res = ShellResult(rc, out[:idx], proc.stderr)
        if check and rc != 0:
            raise AdbCommandError(f"`{command[:80]}` exited {rc} on the device: "
                                  f"{(res.stderr or res.stdout).strip()[-400:]}", self.serial)
        return res

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {shlex.quote(name)}").stdout.strip()

    def push(self, local: str, remote: str, timeout: float = 3600) -> None:
        proc = self.adb._run(["-s", self.serial, "push", local, remote], timeout=timeout)
        if proc.returncode != 0:
            raise self._gone_or(proc, f"push of {os.path.basename(local)} to {remote}", PushFailedError)

    def pull(self, remote: str, local: str, timeout: float = 600) -> None:
        proc = self.adb._run(["-s", self.serial, "pull", remote, local], timeout=timeout)
        if proc.returncode != 0:
            raise self._gone_or(proc, f"pull of {remote}", PullFailedError)

    def sha256(self, remote: str) -> str | None:
        """sha256 of a file on the device (toybox `sha256sum`), None when it does not exist."""
        res = self.shell(f"sha256sum {shlex.quote(remote)} 2>/dev/null")
        if res.returncode != 0:
            return None
        m = re.match(r"\s*([0-9a-fA-F]{64})\b", res.stdout)
        return m.group(1).lower() if m else None
