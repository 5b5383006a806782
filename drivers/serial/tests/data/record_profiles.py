"""Regenerate the sample streams of the example profiles.

Run ``python3 -m drivers.serial.tests.data.record_profiles`` from the repository root.

The streams imitate what the instruments of ``config/examples/serial-*.toml`` send, including the trouble a
real line has: a capture that starts mid-frame, noise bursts, a frame with a flipped byte, a truncated frame,
status codes. Beside each stream, ``<name>.expected.json`` lists the samples the driver must produce, written
from what was *sent* (not from what our parser reads), as ``[tag, value, quality, reason]``.

Deterministic (fixed seed): rerunning it rewrites identical files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from drivers.serial.checksum import ChecksumSpec

HERE = Path(__file__).parent
GOOD, UNCERTAIN, BAD = 0, 1, 2


def _noise(rng: random.Random, n: int, exclude: bytes) -> bytes:
    return bytes(b for b in rng.randbytes(n * 2) if b not in exclude)[:n]


def methane(rng: random.Random) -> tuple[bytes, list[list[object]]]:
    cs = ChecksumSpec("sum8", "hex", separator=b";", cover_from=0)
    out = bytearray()
    expected: list[list[object]] = []
    # The capture starts in the middle of a line: its tail fails the checksum.
    out += cs.append(b"CH4,0.98,%LEL,21.3,C,00")[6:] + b"\r\n"
    ch4, temp = 1.0, 21.3
    for i in range(60):
        ch4 = round(min(5.0, max(0.0, ch4 + rng.uniform(-0.2, 0.2))), 2)
        temp = round(temp + rng.uniform(-0.1, 0.1), 1)
        status = {30: "01", 31: "80"}.get(i, "00")
        line = cs.append(f"CH4,{ch4:.2f},%LEL,{temp:.1f},C,{status}".encode()) + b"\r\n"
        if i == 20:
            # One byte hit by noise: the checksum no longer matches and the whole line is skipped.
            line = line[:5] + bytes([line[5] ^ 0x04]) + line[6:]
            out += line
            continue
        if i == 40:
            # A burst of noise long enough to exceed max_length, ended by a line break of its own.
            out += _noise(rng, 100, b"\r\n") + b"\r\n"
        out += line
        if status == "00":
            expected.append(["methane.ch4", ch4, GOOD, None])
        elif status == "01":
            expected.append(["methane.ch4", ch4, UNCERTAIN, "status 01"])
        else:
            expected.append(["methane.ch4", None, BAD, "status 80"])
        expected.append(["methane.temperature", temp, GOOD, None])
    return bytes(out), expected


def weather(rng: random.Random) -> tuple[bytes, list[list[object]]]:
    cs = ChecksumSpec("xor8", "hex", separator=b"*", cover_from=1)
    out = bytearray()
    expected: list[list[object]] = []
    for i in range(30):
        angle = round(rng.uniform(0, 359.9), 1)
        speed = round(rng.uniform(0, 12), 1)
        valid = "V" if i == 12 else "A"
        mwv = cs.append(f"$WIMWV,{angle:.1f},R,{speed:.1f},M,{valid}".encode()) + b"\r\n"
        temp = round(rng.uniform(-5, 30), 1)
        bar = round(rng.uniform(0.98, 1.04), 4)
        rh = round(rng.uniform(20, 99), 1)
        xdr = cs.append(f"$WIXDR,C,{temp:.1f},C,TEMP,P,{bar:.4f},B,BARO,H,{rh:.1f},P,RH".encode()) + b"\r\n"
        if i == 5:
            out += mwv[:12]  # cut short: the next '$' starts over
        if i == 9:
            out += _noise(rng, 30, b"$")  # noise without a start marker, glued before the sentence
        if i == 17:
            bad = bytearray(mwv)
            bad[8] = ord("7") if bad[8] != ord("7") else ord("8")
            out += bad  # a digit changed in transit: the XOR no longer matches
        else:
            out += mwv
            if valid == "A":
                expected += [
                    ["weather.wind_direction", angle, GOOD, None],
                    ["weather.wind_speed", speed, GOOD, None],
                ]
            else:
                expected += [["weather.wind_direction", None, BAD, "status V"]]
                expected += [["weather.wind_speed", None, BAD, "status V"]]
        out += xdr
        expected += [
            ["weather.air_temperature", temp, GOOD, None],
            ["weather.pressure", bar * 1000.0, GOOD, None],
            ["weather.humidity", rh, GOOD, None],
        ]
    return bytes(out), expected


def dust(rng: random.Random) -> tuple[str, list[list[object]]]:
    """Answers per command as ``<address> <hex>`` lines (empty hex: the monitor stays silent)."""
    cs = ChecksumSpec("crc16-modbus", "binary", byte_order="little", cover_from=2)

    def frame(address: int, status: int, pm1: int, pm25: int, pm10: int, temp10: int) -> bytes:
        body = bytes([0x0A, address, status]) + b"".join(
            v.to_bytes(2, "big", signed=True) for v in (pm1, pm25, pm10, temp10)
        )
        return cs.append(b"\xaa\x55" + body)

    lines: list[str] = []
    expected: list[list[object]] = []
    for poll in range(6):
        for address in (1, 2):
            pm1, pm25, pm10 = rng.randint(5, 60), rng.randint(20, 150), rng.randint(50, 400)
            temp10 = rng.randint(150, 320)
            status = 0
            answer = frame(address, status, pm1, pm25, pm10, temp10)
            outcome = "ok"
            if (poll, address) == (1, 1):
                answer = _noise(rng, 9, b"\xaa") + answer  # line noise before the answer
            elif (poll, address) == (2, 1):
                answer = answer[:6] + bytes([answer[6] ^ 0xFF]) + answer[7:]
                outcome = "bad answer: bad checksum"
            elif (poll, address) == (3, 1):
                answer = b""
                outcome = "timeout"
            elif (poll, address) == (4, 1):
                status = 1
                answer = frame(address, status, pm1, pm25, pm10, temp10)
            elif (poll, address) == (2, 2):
                answer = frame(3, 0, pm1, pm25, pm10, temp10)  # another monitor answers
                outcome = "answer from another address"
            elif (poll, address) == (5, 2):
                status = 5
                answer = frame(address, status, pm1, pm25, pm10, temp10)
            lines.append(f"{address} {answer.hex()}")
            tags = ["face_pm10", "face_pm25", "face_temp"] if address == 1 else ["return_pm10"]
            for tag in tags:
                full = f"dust.{tag}"
                value: float = {"face_pm10": pm10, "face_pm25": pm25, "face_temp": temp10 * 0.1}.get(
                    tag, pm10
                )
                if outcome != "ok":
                    expected.append([full, None, BAD, outcome])
                elif tag == "face_temp" or status == 0:
                    expected.append([full, value, GOOD, None])
                elif status == 1:
                    expected.append([full, value, UNCERTAIN, "status 1"])
                else:
                    expected.append([full, None, BAD, f"status {status}"])
    return "\n".join(lines) + "\n", expected


def main() -> None:
    rng = random.Random(20261123)
    data, expected = methane(rng)
    (HERE / "serial-methane.bin").write_bytes(data)
    (HERE / "serial-methane.expected.json").write_text(json.dumps(expected, indent=0) + "\n")
    data, expected = weather(rng)
    (HERE / "serial-weather.bin").write_bytes(data)
    (HERE / "serial-weather.expected.json").write_text(json.dumps(expected, indent=0) + "\n")
    text, expected = dust(rng)
    (HERE / "serial-dust.answers").write_text(text)
    (HERE / "serial-dust.expected.json").write_text(json.dumps(expected, indent=0) + "\n")


if __name__ == "__main__":
    main()
