"""A real IPMI BMC for tests: OpenIPMI's `ipmi_sim` on loopback with a Supermicro-like sensor set.

docs/TESTING.md §3 traps handled here: SDRs compiled with `sdrcomp -8` into a fresh state folder, the
manufacturer id of Supermicro (0x2A7C) with `persist_sdr`, stdin a pipe (a bad emulator line stops the
rest of the file silently, so the log is checked for `**`), and a UDP relay adding ~3 ms so pyghmi does
not sleep its whole retry timeout on every loopback request. Readings change while it runs through
the simulator's console (`Bmc.console()`).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MC = "0x20"
DISCRETE = (0x07, 0x08)  # sensor-specific discrete sensors the simulator can hold: processor, power supply


@dataclass(frozen=True)
class SimSensor:
    number: int
    name: str
    sensor_type: int  # IPMI sensor type: 0x01 temperature, 0x02 voltage, 0x04 fan, 0x08 PSU, 0x0b other
    sdr: str  # the sdrcomp body (without header/footer)
    raw: int  # initial raw reading (or discrete bits for PSU status)
    scale: float = 1.0  # engineering value = raw * scale
    thresholds: tuple = ()  # ((name, engineering value), ...) with names lnc/lc/lnr/unc/uc/unr


def _analog(name, number, sensor_type, base_unit, m, r_exp, thresholds, entity="system_board", inst=1):
    """A threshold sensor; `thresholds` maps lnc/lc/unc/uc/unr to engineering values (value = m*raw*10^r)."""
    lines = [
        "sensor_owner_id 0x20",
        "sensor_owner_lun 0",
        "channel_number 0",
        f"sensor_number {number}",
        f"entity_id {entity}",
        f"entity_instance {inst}",
        "init_scanning true",
        "init_events true",
        "init_thresholds true",
        "init_sensor_type true",
        "default_event_gen_on true",
        "default_sensor_scan_on true",
        "sensor_auto_rearm true",
        "sensor_threshold_access readable",
        "sensor_event_msg_ctrl per_state",
        f"sensor_type {sensor_type}",
        "event_reading_type_code 1",
        "analog_data_format unsigned",
        "rate_unit none",
        "modifier_unit none",
        "percentage false",
        f"base_unit {base_unit}",
        "modifier_unit_code unspecified",
        "linearization linear",
        f"m {m}",
        "tolerance 0",
        "b 0",
        "accuracy 1",
        "accuracy_exp 0",
        "sensor_direction input",
        f"r_exp {r_exp}",
        "b_exp 0",
        "sensor_maximum 255",
        "sensor_minimum 0",
    ]
    for key in thresholds:
        lines.append(f"return_{key} true")
        kind = {"lnc": "lncgl", "lc": "lcgl", "unc": "uncgh", "uc": "ucgh", "unr": "unrgh"}[key]
        lines += [f"assert_{kind} true", f"deassert_{kind} true"]
    for key, value in thresholds.items():
        lines.append(f"{key}_fthresh {value}")
    lines.append(f'id_string "{name}"')
    return "\n".join(lines)


def _psu_status(name, number, inst, entity="power_supply", sensor_type="Power_Supply"):
    lines = [
        "sensor_owner_id 0x20",
        "sensor_owner_lun 0",
        "channel_number 0",
        f"sensor_number {number}",
        f"entity_id {entity}",
        f"entity_instance {inst}",
        "init_scanning true",
        "init_events true",
        "init_sensor_type true",
        "default_event_gen_on true",
        "default_sensor_scan_on true",
        "sensor_auto_rearm true",
        f"sensor_type {sensor_type}",
        "event_reading_type_code 0x6f",
    ]
    for bit in range(7):
        lines += [f"assert_event{bit} true", f"deassert_event{bit} true", f"event{bit}_state_ret true"]
    lines.append(f'id_string "{name}"')
    return "\n".join(lines)


def _sensor(number, name, sensor_type, sdr_type, base_unit, raw, thresholds, m=1, r_exp=0, **where):
    sdr = _analog(name, number, sdr_type, base_unit, m, r_exp, thresholds, **where)
    return SimSensor(number, name, sensor_type, sdr, raw, m * 10**r_exp, tuple(thresholds.items()))


def supermicro_sensors() -> list[SimSensor]:
    """CPU/system/peripheral temperatures, two fans, 12 V, PSU input power and two PSU status sensors."""
    temp = {"unc": 85, "uc": 90, "unr": 95}
    fan = {"lnc": 500, "lc": 300}
    return [
        _sensor(1, "CPU Temp", 0x01, "Temperature", "degrees_C", 45, temp),
        _sensor(2, "System Temp", 0x01, "Temperature", "degrees_C", 31, {"unc": 77, "uc": 80, "unr": 85}),
        _sensor(3, "GPU1 Temp", 0x01, "Temperature", "degrees_C", 52, temp),
        _sensor(4, "FAN1", 0x04, "Fan", "RPM", 42, fan, m=100, entity="fan_cooling_device"),
        _sensor(5, "FAN2", 0x04, "Fan", "RPM", 44, fan, m=100, entity="fan_cooling_device", inst=2),
        _sensor(
            6,
            "12V",
            0x02,
            "Voltage",
            "Volts",
            200,
            {"lc": 10.74, "lnc": 11.1, "unc": 12.9, "uc": 13.26},
            m=6,
            r_exp=-2,
        ),
        _sensor(
            7,
            "PSU1 Input Power",
            0x0B,
            "Other_Units_Based_Sensor",
            "Watts",
            62,
            {"unc": 2000},
            m=10,
            entity="power_supply",
        ),
        SimSensor(8, "PSU1 Status", 0x08, _psu_status("PSU1 Status", 8, 1), 0x01),
        SimSensor(9, "PSU2 Status", 0x08, _psu_status("PSU2 Status", 9, 2), 0x01),
    ]


def board_56() -> list[SimSensor]:
    """A 56-sensor board shaped like a Supermicro X11 dual-socket board's `ipmitool sensor` list
    (simulated, shaped like the real listings in tests/fixtures/ipmi/): temperatures, ten fans,
    voltages, PSU input power and two PSU status sensors, plus two sensors both named "Temp" on the two
    processors, with different limits (as Dell names them)."""
    temp = {"unc": 85, "uc": 90, "unr": 95}
    dimm = {"unc": 80, "uc": 85, "unr": 90}
    fan = {"lnc": 500, "lc": 300}
    out = [
        _sensor(1, "CPU1 Temp", 0x01, "Temperature", "degrees_C", 45, temp, entity="processor", inst=1),
        _sensor(2, "CPU2 Temp", 0x01, "Temperature", "degrees_C", 47, temp, entity="processor", inst=2),
        _sensor(3, "PCH Temp", 0x01, "Temperature", "degrees_C", 50, temp),
        _sensor(4, "System Temp", 0x01, "Temperature", "degrees_C", 31, {"unc": 77, "uc": 80, "unr": 85}),
        _sensor(5, "Peripheral Temp", 0x01, "Temperature", "degrees_C", 38, {"unc": 77, "uc": 80, "unr": 85}),
        _sensor(6, "Temp", 0x01, "Temperature", "degrees_C", 40, {"uc": 88}, entity="processor", inst=1),
        _sensor(7, "Temp", 0x01, "Temperature", "degrees_C", 41, {"uc": 99}, entity="processor", inst=2),
    ]
    number = 8
    for i in range(1, 5):
        out.append(_sensor(number, f"VRMCpu{i} Temp", 0x01, "Temperature", "degrees_C", 40, temp))
        number += 1
    for bank in "ABCDEFGH":
        for cpu in (1, 2):
            if len(out) < 28:
                out.append(
                    _sensor(number, f"P{cpu}-DIMM{bank}1 Temp", 0x01, "Temperature", "degrees_C", 33, dimm)
                )
                number += 1
    for i, label in enumerate(("1", "2", "3", "4", "5", "6", "7", "8", "A", "B"), start=1):
        out.append(
            _sensor(
                number,
                f"FAN{label}",
                0x04,
                "Fan",
                "RPM",
                40 + i,
                fan,
                m=100,
                entity="fan_cooling_device",
                inst=i,
            )
        )
        number += 1
    volts = (("12V", 200, 6, -2), ("5VCC", 200, 25, -3), ("3.3VCC", 200, 165, -4), ("VBAT", 200, 15, -3),
             ("Vcpu1", 180, 1, -2), ("Vcpu2", 180, 1, -2), ("VDIMMABC", 120, 1, -2), ("VDIMMDEF", 120, 1, -2),
             ("5VSB", 200, 25, -3), ("3.3VSB", 200, 165, -4), ("1.8V PCH", 180, 1, -2), ("PVNN", 100, 1, -2),
             ("1.05V PCH", 105, 1, -2), ("VSOC", 90, 1, -2), ("VCCIO", 100, 1, -2))  # fmt: skip
    for name, raw, m, r_exp in volts:
        value = raw * m * 10**r_exp
        limits = {"lc": round(value * 0.9, 3), "uc": round(value * 1.1, 3)}
        out.append(_sensor(number, name, 0x02, "Voltage", "Volts", raw, limits, m=m, r_exp=r_exp))
        number += 1
    out.append(_sensor(number, "MB_10G Temp", 0x01, "Temperature", "degrees_C", 56, temp))
    number += 1
    power = {"unc": 2000}
    out.append(
        _sensor(number, "PSU1 Input Power", 0x0B, "Other_Units_Based_Sensor", "Watts", 62, power, m=10)
    )
    number += 1
    out += [
        SimSensor(number, "PSU1 Status", 0x08, _psu_status("PSU1 Status", number, 1), 0x01),
        SimSensor(number + 1, "PSU2 Status", 0x08, _psu_status("PSU2 Status", number + 1, 2), 0x01),
    ]
    return out


def processor_status(number: int = 0x60, inst: int = 1) -> SimSensor:
    """A processor status sensor (type 0x07: bit 0 IERR, 1 Thermal Trip, 7 presence), present."""
    name = f"CPU{inst} Status"
    return SimSensor(number, name, 0x07, _psu_status(name, number, inst, "processor", "Processor"), 0x80)


def _sdr_file(sensors: list[SimSensor]) -> str:
    parts = [
        "sdr type 18\n device_slave_address 0x20\n device_channel_number 0\n chassis true\n"
        " ipmb_event_gen true\n ipmb_event_recv true\n fru_inventory true\n sel true\n sdr true\n"
        ' sensor true\n entity_id system_board\n entity_instance 1\n id_string "BMC"\nendsdr\n'
    ]
    parts += [f"sdr type {2 if s.sensor_type in DISCRETE else 1}\n{s.sdr}\nendsdr\n" for s in sensors]
    return "\n".join(parts)


def _emu_file(sensors: list[SimSensor], sel: list[tuple[int, int, int]]) -> str:
    lines = [
        f"mc_setbmc {MC}",
        # Supermicro's manufacturer id (0x2A7C = 10876), a X12-like product id.
        f"mc_add {MC} 0 no-device-sdrs 0x23 9 8 0x9f 0x002a7c 0x1b2c persist_sdr",
        f"sel_enable {MC} 1000 0x0a",
        f"sensor_add {MC} 0 0 35 0x6f event-only",
    ]
    for s in sensors:
        reading_type = "0x6f" if s.sensor_type in DISCRETE else "0x01"
        lines.append(f"sensor_add {MC} 0 {s.number} {s.sensor_type:#04x} {reading_type}")
        if s.sensor_type in DISCRETE:
            for bit in range(7):
                lines.append(f"sensor_set_bit {MC} 0 {s.number} {bit} {(s.raw >> bit) & 1} 0")
            lines.append(
                f"sensor_set_event_support {MC} 0 {s.number} enable scanning per-state "
                "000000001111111 000000001111111 000000001111111 000000001111111"
            )
        else:
            if s.thresholds:
                # order of the bit string and the values: unr uc unc lnr lc lnc
                given = dict(s.thresholds)
                order = ("unr", "uc", "unc", "lnr", "lc", "lnc")
                bits = "".join("1" if k in given else "0" for k in order)
                raws = " ".join(str(round(given[k] / s.scale)) if k in given else "0" for k in order)
                lines.append(f"sensor_set_threshold {MC} 0 {s.number} settable {bits} {raws}")
            lines.append(f"sensor_set_value {MC} 0 {s.number} {s.raw} 0")
            lines.append(
                f"sensor_set_event_support {MC} 0 {s.number} enable scanning per-state "
                "000111111111111 000111111111111 000111111111111 000111111111111"
            )
    stamp = " ".join(f"{b:#04x}" for b in int(time.time() - 3600).to_bytes(4, "little"))
    for sensor_type, number, event_type, offset in sel:
        # a platform event: timestamp, generator 0x20, evm rev 4, sensor type/number, assertion, event data
        lines.append(
            f"sel_add {MC} 0x02 {stamp} 0x20 0x00 0x04 {sensor_type:#04x} {number:#04x} "
            f"{event_type:#04x} {offset:#04x} 0xff 0xff"
        )
    lines.append(f"mc_enable {MC}")
    return "\n".join(lines) + "\n"


def _udp_bound(port: int) -> bool:
    needle = f":{port:04X} "
    return any(needle in line.split()[1] + " " for line in Path("/proc/net/udp").read_text().splitlines()[1:])


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UdpRelay:
    """Forward UDP between clients and the simulator, adding `delay` seconds each way (see module doc)."""

    def __init__(self, target_port: int, delay: float = 0.003):
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.backs: dict[tuple, socket.socket] = {}
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopped:
            socks = [self.front, *self.backs.values()]
            ready, _, _ = select.select(socks, [], [], 0.2)
            for sock in ready:
                try:
                    data, addr = sock.recvfrom(65535)
                except OSError:
                    continue
                time.sleep(self.delay)
                if sock is self.front:
                    back = self.backs.get(addr)
                    if back is None:
                        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back.bind(("127.0.0.1", 0))
                        self.backs[addr] = back
                    back.sendto(data, self.target)
                else:
                    client = next(a for a, b in self.backs.items() if b is sock)
                    self.front.sendto(data, client)

    def close(self):
        self.stopped = True
        self.thread.join(timeout=2)
        for s in [self.front, *self.backs.values()]:
            s.close()


class Bmc:
    """One running ipmi_sim. `port` is the relayed LAN port clients use; `direct_port` skips the relay."""

    def __init__(
        self,
        workdir: Path,
        user: str = "ADMIN",
        password: str = "",
        sel=None,
        sensors: list[SimSensor] | None = None,
        delay: float = 0.003,
    ):
        self.workdir = workdir
        self.delay = delay  # seconds the relay adds each way (a real BMC answers in tens of ms)
        self.user, self.password = user, password
        self.sensors = sensors or supermicro_sensors()
        # (sensor type, number, event type, offset): PSU1 and PSU2 "presence detected" at power-on
        self.sel = sel if sel is not None else [(0x08, 8, 0x6F, 0x00), (0x08, 9, 0x6F, 0x00)]
        self.direct_port = free_port(socket.SOCK_DGRAM)
        self.console_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.relay: UdpRelay | None = None

    @property
    def port(self) -> int:
        return self.relay.port

    def start(self, timeout: float = 10.0) -> Bmc:
        state = self.workdir / "state"
        shutil.rmtree(state, ignore_errors=True)
        sdr_dir = state / "ipmi_sim" / "toolkit-bmc"
        sdr_dir.mkdir(parents=True)
        (self.workdir / "main.sdrs").write_text(_sdr_file(self.sensors))
        subprocess.run(
            ["sdrcomp", "-8", "-o", str(sdr_dir / "sdr.20.main"), str(self.workdir / "main.sdrs")],
            check=True,
            capture_output=True,
            text=True,
        )
        (self.workdir / "lan.conf").write_text(
            'name "toolkit-bmc"\n'
            "set_working_mc 0x20\n"
            "  startlan 1\n"
            f"    addr 127.0.0.1 {self.direct_port}\n"
            "    priv_limit admin\n"
            "    allowed_auths_callback none md2 md5 straight\n"
            "    allowed_auths_user none md2 md5 straight\n"
            "    allowed_auths_operator none md2 md5 straight\n"
            "    allowed_auths_admin none md2 md5 straight\n"
            "    guid a123456789abcdefa123456789abcdef\n"
            "  endlan\n"
            f'  user 2 true "{self.user}" "{self.password}" admin 10 none md2 md5 straight\n'
            f'  chassis_control "{self.workdir / "chassis.sh"}"\n'
            f"console 127.0.0.1 {self.console_port}\n"
        )
        # chassis power comes from a control program ipmi_sim calls as `chassis.sh get power`
        self.set_power(True)
        chassis = self.workdir / "chassis.sh"
        chassis.write_text(
            '#!/bin/sh\nif [ "$1" = get ]; then for x in "$@"; do\n'
            f'  [ "$x" = power ] && echo "power:$(cat {self.workdir / "power"})"\n'
            '  [ "$x" = boot ] && echo "boot:default"\ndone; fi\nexit 0\n'
        )
        chassis.chmod(0o755)
        (self.workdir / "bmc.emu").write_text(_emu_file(self.sensors, self.sel))
        self.log = open(self.workdir / "ipmi_sim.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                "ipmi_sim",
                "-c",
                str(self.workdir / "lan.conf"),
                "-f",
                str(self.workdir / "bmc.emu"),
                "-s",
                str(state),
            ],
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        self.relay = UdpRelay(self.direct_port, self.delay)
        # Wait for the LAN port to be bound. Never probe the console by connecting and closing:
        # ipmi_sim exits when a console connection closes, so one connection is kept for its lifetime.
        deadline = time.monotonic() + timeout
        while not _udp_bound(self.direct_port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ipmi_sim did not start: {self.read_log()}")
            time.sleep(0.02)
        while True:
            try:
                self._console = socket.create_connection(("127.0.0.1", self.console_port), 2)
                break
            except ConnectionRefusedError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._console.settimeout(0.3)
        self._drain()
        if "**" in self.read_log():
            raise RuntimeError(f"ipmi_sim rejected its emulator file: {self.read_log()}")
        return self

    def _drain(self) -> str:
        out = b""
        with contextlib.suppress(TimeoutError):
            while chunk := self._console.recv(4096):
                out += chunk
                if out.rstrip().endswith(b">"):
                    break
        return out.decode(errors="replace")

    def read_log(self) -> str:
        return (self.workdir / "ipmi_sim.log").read_text(errors="replace")

    def console(self, *commands: str) -> str:
        """Run emulator commands (the same syntax as the emulator file) on the running simulator."""
        text = ""
        for command in commands:
            self._console.sendall(command.encode() + b"\n")
            text += self._drain()
        if "**" in text or "Invalid" in text or "rror" in text:
            raise RuntimeError(f"console refused {commands}: {text}")
        return text

    def set_value(self, name: str, raw: int) -> None:
        s = next(s for s in self.sensors if s.name == name)
        self.console(f"sensor_set_value {MC} 0 {s.number} {raw} 1")

    def add_sel(self, name: str, event_type: int, offset: int) -> None:
        """Log an event now (as the BMC would when a sensor changes state)."""
        s = next(s for s in self.sensors if s.name == name)
        stamp = " ".join(f"{b:#04x}" for b in int(time.time()).to_bytes(4, "little"))
        self.console(
            f"sel_add {MC} 0x02 {stamp} 0x20 0x00 0x04 {s.sensor_type:#04x} {s.number:#04x} "
            f"{event_type:#04x} {offset:#04x} 0xff 0xff"
        )

    def set_clock(self, when: float) -> None:
        """Set the BMC's SEL clock (a Unix time) the way an admin does, with `ipmitool sel time set`
        over LAN; until then ipmi_sim stamps events relative to its start ("Pre-Init")."""
        stamp = time.strftime("%m/%d/%y %H:%M:%S", time.gmtime(when))
        env = {**os.environ, "IPMI_PASSWORD": self.password, "LC_ALL": "C", "TZ": "UTC0"}
        lan = ["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-E"]
        argv = ["ipmitool", *lan, "sel", "time", "set", stamp]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"sel time set failed: {proc.stdout} {proc.stderr}")

    def add_event(self, sensor_type: int, number: int, event_type: int, offset: int) -> None:
        """Log an event of a sensor the board does not list (a processor, a DIMM), now."""
        stamp = " ".join(f"{b:#04x}" for b in int(time.time()).to_bytes(4, "little"))
        self.console(
            f"sel_add {MC} 0x02 {stamp} 0x20 0x00 0x04 {sensor_type:#04x} {number:#04x} "
            f"{event_type:#04x} {offset:#04x} 0xff 0xff"
        )

    def set_power(self, on: bool) -> None:
        (self.workdir / "power").write_text("1\n" if on else "0\n")

    def set_bit(self, name: str, bit: int, value: int) -> None:
        s = next(s for s in self.sensors if s.name == name)
        self.console(f"sensor_set_bit {MC} 0 {s.number} {bit} {value} 1")

    def stop(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            self._console.close()
        if self.relay:
            self.relay.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdin:
            self.proc.stdin.close()
        with contextlib.suppress(AttributeError):
            self.log.close()


if __name__ == "__main__":  # manual poke: python tests/ipmi_sim.py
    import tempfile

    d = Path(tempfile.mkdtemp())
    bmc = Bmc(d, password=os.environ.get("PW", "sim-secret-1")).start()
    print("relay port", bmc.port, "direct", bmc.direct_port, "console", bmc.console_port, "dir", d)
    try:
        time.sleep(float(os.environ.get("HOLD", "3600")))
    finally:
        bmc.stop()
