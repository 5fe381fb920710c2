"""`make pi-warm-prompt`: the warm prompt's gain on the smallest board, in the emulated Pi.

    warm_prompt.py ROOTFS WORK_DIR MODEL.gguf [RUNS]

The same card and rig as `make board-fit`: MODEL.gguf (a 124M-shaped GPT-2
with GPT-2's own vocabulary, which bench/models.py builds) goes onto the FAT
beside teletype.toml and is named in it, and the Pi boots as a Zero 2 W
(448 MB for Linux). Five chat lines go into the history. Then, RUNS times:

- cold: a chat line arrives (the five-line window shifts, so none of the new
  prompt has been evaluated) and a reply is asked for at once;
- warm: the same reply asked for again once the engine has gone idle, that
  is, once it has evaluated the next prompt on its own.

Each time is from the request to the reply's first text, measured inside the
guest on loopback, so QEMU's network is not in it. An emulated Cortex-A53 is
many times slower than a real one, and unevenly so: the absolute times mean
nothing, the ratio of cold to warm does (the same work is saved on the Pi).
Idle is a state, not a clock: the engine's CPU time has stopped growing.

The figures go to WORK_DIR/warm-prompt.json and a table on stdout. It ends
with `N passed, M failed`: the engine runs the model, every reply has text,
the same text warm and cold, and warm is faster than cold.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
from pathlib import Path

import board_fit
import rig

# The chat the bench's warm-prompt rows use (bench/run.py): five lines, about
# 85 tokens of prompt.
CHAT = (
    ("ada", "the clutch on my model 33 slips when the motor warms up"),
    ("bob", "how often should I oil the typing unit"),
    ("cy", "my tape reader skips every other character"),
    ("dee", "what does the selector magnet do"),
    ("eve", "is 20 mA enough for two machines on one loop"),
)

# Runs inside the guest with its own Python: the chat lines, then cold and warm
# replies, timed to their first streamed text. Prints one JSON line.
GUEST_SCRIPT = r"""
import json, sys, time, urllib.request

API = "http://127.0.0.1:5599"
chat, runs, engine_pid = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def call(method, path, body=None, stream=False):
    req = urllib.request.Request(API + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=1800)


def first_text(seed):
    started = time.monotonic()
    with call("POST", "/v1/generate",
              {"print": False, "stream": True, "max_chars": 40, "seed": seed}) as r:
        first = r.read(1)
        took = time.monotonic() - started
        rest = r.read()
    return took, (first + rest).decode("utf-8", "replace")


def cpu_seconds():
    fields = open(f"/proc/{engine_pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in ticks of 10 ms


def idle(window=2.0, bound=900.0):
    # The engine has evaluated the next prompt when its CPU time nearly stops
    # growing: under a tenth of a core over a window (an evaluation takes every
    # core; the event loop, the watchdog and the button's polls take a little).
    started = time.monotonic()
    while time.monotonic() - started < bound:
        before = cpu_seconds()
        time.sleep(window)
        if cpu_seconds() - before < 0.1 * window:
            return
    raise SystemExit("the engine never went idle")


for name, text in chat:
    call("POST", "/v1/history", {"name": name, "text": text}).read()
idle()
rows = []
for run in range(runs + 1):
    name, text = chat[run % len(chat)]
    call("POST", "/v1/history", {"name": name, "text": f"{text} again"}).read()
    cold, cold_text = first_text(run)
    idle()
    warm, warm_text = first_text(run)
    idle()
    rows.append({"cold_s": cold, "warm_s": warm, "cold_text": cold_text,
                 "warm_text": warm_text, "paging_in": run == 0})
print(json.dumps(rows))
"""


def main() -> int:
    rootfs, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    model = Path(sys.argv[3]).resolve()
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    name = "gpt2-124M.q8_0.gguf"
    _, card = board_fit.card_with_models(rootfs, work, [f"{name}={model}"])
    board, memory_mb = board_fit.BOARDS[0]
    r = rig.Results()
    print(f"\n== {board}: {memory_mb} MB for Linux, {name}", flush=True)
    guest = card.with_memory(memory_mb).boot("console-warm.log")
    try:
        if not r.check("boots", guest.wait_agent(), rig.tail(guest.console)):
            return 1
        # The unit allows systemd's 90 s to start. The emulated CPU on a shared
        # machine can take longer than that to load a 124M model (a real Pi
        # does not), and a start that times out restarts for ever: for this
        # measurement only, a run-time drop-in gives it half an hour.
        guest.sh(
            f"mkdir -p /run/systemd/system/{board_fit.ENGINE}.service.d && printf "
            f"'[Service]\\nTimeoutStartSec=1800\\n' > "
            f"/run/systemd/system/{board_fit.ENGINE}.service.d/emulated.conf && "
            "systemctl daemon-reload"
        )
        board_fit.use_model(guest, name)
        ready = rig.wait_for(lambda: rig.engine_ready(guest), 900, every=3)
        if not r.check(f"the engine runs {name}", ready, rig.journal_tail(guest, board_fit.ENGINE)):
            return 1
        pid = guest.out(f"systemctl show -p MainPID --value {board_fit.ENGINE}")
        chat = json.dumps([list(line) for line in CHAT])
        rc, out = guest.sh(
            f"python3 -c {shlex.quote(GUEST_SCRIPT)} {shlex.quote(chat)} {runs} {pid}",
            timeout=3600 * 2,
        )
        if not r.check("the guest's timing script ran", rc == 0, out[-2000:]):
            return 1
        rows = json.loads(out.strip().splitlines()[-1])
    finally:
        guest.shutdown()
    measured = [row for row in rows if not row["paging_in"]]
    cold = statistics.median(row["cold_s"] for row in measured)
    warm = statistics.median(row["warm_s"] for row in measured)
    r.check(
        "every reply has text",
        all(row["cold_text"].strip() and row["warm_text"].strip() for row in rows),
        json.dumps(rows),
    )
    # Warm or cold, the same history and seed must give the same reply.
    r.check(
        "the same text warm and cold",
        all(row["cold_text"] == row["warm_text"] for row in rows),
        json.dumps([(row["cold_text"], row["warm_text"]) for row in rows]),
    )
    r.check("warm is faster than cold", warm < cold, f"cold {cold:.2f} s, warm {warm:.2f} s")
    result = {"board": board, "memory_mb": memory_mb, "model": str(model.name), "runs": rows,
              "cold_median_s": cold, "warm_median_s": warm, "ratio": cold / warm}  # fmt: skip
    (work / "warm-prompt.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| board | model | cold (median) | warm (median) | cold ÷ warm |")
    print("|---|---|---:|---:|---:|")
    print(f"| {board} | 124M Q8_0, GPT-2's vocabulary | {cold:.2f} s | {warm:.2f} s | "
          f"**{cold / warm:.1f}×** |")  # fmt: skip
    print(
        "\nEach: "
        + "; ".join(f"cold {row['cold_s']:.2f} s / warm {row['warm_s']:.2f} s" for row in measured)
    )
    print(f"\n{r.passed} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
