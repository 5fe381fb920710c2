#!/usr/bin/python3
"""The boot check's hands inside the emulated Pi (never part of the image).

The host sends one JSON object a line on a virtio serial port,
{"id": N, "cmd": "shell command", "timeout": SECONDS}, and gets back
{"id": N, "rc": EXIT_STATUS, "out": "stdout and stderr"} a line. It runs as
root under its own unit, so the host can ask systemd, the journal and /proc
what a person with a shell on the Pi would ask; the appliance itself is
reached only the way its users reach it.
"""

import json
import os
import subprocess
import sys
import time

PORT = sys.argv[1] if len(sys.argv) > 1 else "/dev/virtio-ports/boot-check"


def run(request: dict) -> dict:
    try:
        done = subprocess.run(
            ["/bin/bash", "-c", request["cmd"]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=request.get("timeout", 60),
        )
        return {"rc": done.returncode, "out": done.stdout.decode("utf-8", "replace")}
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        return {"rc": 124, "out": out + "\n(timed out)"}


def main() -> None:
    while not os.path.exists(PORT):
        time.sleep(0.2)
    with open(PORT, "r+b", buffering=0) as port:
        buffered = b""
        while True:
            chunk = port.read(4096)
            if not chunk:
                # Nobody on the host end yet: a virtio port reads as closed.
                time.sleep(0.2)
                continue
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                if not line.strip():
                    continue
                request = json.loads(line)
                answer = {"id": request.get("id"), **run(request)}
                port.write(json.dumps(answer).encode() + b"\n")


if __name__ == "__main__":
    main()
