"""`make board-fit`: which GPT-2 fits which Raspberry Pi, measured in the emulated Pi.

    board_fit.py ROOTFS WORK_DIR NAME=MODEL.gguf [NAME=MODEL.gguf ...]

Each model goes onto the card as NAME; the first is the one the whole
route is printed with.

The same card and rig as the boot check (rig.py), with the models copied
onto the FAT boot partition beside teletype.toml, as a user copies theirs.
For each board, the emulated Pi gets the memory Raspberry Pi OS leaves to
Linux on it (the GPU's share taken: gpu_mem 64 MB under 1 GB, 76 MB above),
boots, and with every unit running each model in turn is named in
teletype.toml's [model] path and the engine restarted, as a person does
over SSH. A model the engine takes must answer (the weights and the KV
cache then resident) without the kernel killing anything; one it refuses
must be refused at start with exit 78, never an out-of-memory kill. For
each: the engine's RSS and peak, and MemAvailable with everything running.

Then the whole route with a GPT-2-sized model on the smallest board: a
chat line into the history, the button pressed, the reply on paper.

The figures go to WORK_DIR/board-fit.json and a table on stdout (the
README's "Which model on which board"). It ends with `N passed, M failed`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import rig  # the boot check's own rig: card, QEMU, agent, paper

# (name, MB of memory Linux gets): what Raspberry Pi OS leaves to Linux on
# each board after the GPU's share (gpu_mem: 64 MB on 512 MB boards, 76 MB on
# larger ones, the firmware's defaults).
BOARDS = (
    ("Zero 2 W, 3 A+ (512 MB)", 512 - 64),
    ("3 B, 3 B+, 4 (1 GB)", 1024 - 76),
    ("4, 5 (2 GB)", 2048 - 76),
)
ENGINE = "teletype-engine"


def meminfo(guest: rig.Guest) -> dict[str, int]:
    """/proc/meminfo in MB."""
    out = guest.out("cat /proc/meminfo")
    values = {}
    for line in out.splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0]) // 1024
    return values


def engine_memory(guest: rig.Guest) -> tuple[int, int]:
    """The engine's RSS and peak RSS in MB (0, 0 when it is not running)."""
    pid = guest.out(f"systemctl show -p MainPID --value {ENGINE}")
    if pid in ("", "0"):
        return 0, 0
    status = guest.out(f"cat /proc/{pid}/status 2>/dev/null")
    found = {
        line.split(":")[0]: int(line.split()[1]) // 1024
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


def engine_state(guest: rig.Guest) -> dict[str, str]:
    show = guest.out(
        f"systemctl show -p ActiveState,SubState,ExecMainStatus,Result,NRestarts {ENGINE}"
    )
    return dict(line.split("=", 1) for line in show.splitlines() if "=" in line)


def use_model(guest: rig.Guest, name: str) -> None:
    """Name the model in the card's teletype.toml and restart the engine, as a person would."""
    toml = guest.out("cat /boot/firmware/teletype.toml")
    toml = rig.set_setting(toml, "model", "path", json.dumps(name))
    guest.sh(f"printf %s {shlex.quote(toml)} > /boot/firmware/teletype.toml && sync")
    guest.sh(f"systemctl reset-failed {ENGINE}; systemctl restart --no-block {ENGINE}")


def settled(guest: rig.Guest) -> dict[str, str] | None:
    """The engine's state once it is READY or has stopped for good, else None."""
    state = engine_state(guest)
    if state.get("ActiveState") == "active" and state.get("SubState") == "running":
        return state
    if state.get("ActiveState") == "failed" or (
        state.get("ActiveState") == "inactive" and state.get("ExecMainStatus") not in ("", "0")
    ):
        return state
    return None


def oom_kills(guest: rig.Guest) -> int:
    return int(guest.out("journalctl -k -b --no-pager | grep -ci 'out of memory' || true") or 0)


def try_model(guest: rig.Guest, name: str, size_mb: int) -> dict:
    before = oom_kills(guest)
    use_model(guest, name)
    started = time.monotonic()
    rig.wait_for(lambda: settled(guest) is not None, 900, every=3)
    state = settled(guest) or engine_state(guest)
    row: dict = {"model": name, "file_mb": size_mb, "state": state}
    row["start_s"] = round(time.monotonic() - started)
    if state.get("ActiveState") == "active":
        # A reply touches every weight and fills the KV cache for its tokens.
        status, body = guest.api(
            "POST", "/v1/generate", {"max_chars": 40, "print": False, "seed": 1}, timeout=900
        )
        row["reply"] = status == 200 and isinstance(body, dict) and bool(body.get("text"))
        row["rss_mb"], row["peak_mb"] = engine_memory(guest)
        row["outcome"] = "runs" if row["reply"] else f"no reply ({status})"
    else:
        refusal = guest.out(
            f"journalctl -b -u {ENGINE} --no-pager -n 5 -o cat | grep needs || true"
        )
        row["outcome"] = "refused" if state.get("ExecMainStatus") == "78" else "failed"
        row["refusal"] = refusal.splitlines()[-1] if refusal else ""
    info = meminfo(guest)
    row["mem_available_mb"] = info.get("MemAvailable", 0)
    row["oom_kills"] = oom_kills(guest) - before
    return row


def whole_route(guest: rig.Guest, r: rig.Results, name: str) -> None:
    """A chat line, the button, and the reply on paper, with a GPT-2-sized model."""
    use_model(guest, name)
    ready = rig.wait_for(lambda: rig.engine_ready(guest), 900, every=3)
    if not r.check(f"the engine runs {name} on this board", ready, rig.journal_tail(guest, ENGINE)):
        return
    status, _ = guest.api(
        "POST", "/v1/history", {"name": "ada", "text": "How do I oil the typing unit?"}
    )
    r.check("a chat line reaches the history", status in (200, 201), str(status))
    data = rig.reply_on_paper(guest, guest.press_button, timeout=900)
    words = rig.printed_words(data)
    problems = rig.paper_problems(data)
    r.check(
        f"the button prints a reply from {name} on paper",
        len(words) >= 3 and not problems,
        "\n".join(problems[:10]) + f"\n{data[:300]!r}",
    )


def card_with_models(rootfs: Path, work: Path, named: list[str]) -> tuple[list[Path], rig.Card]:
    """The emulated card with each NAME=MODEL.gguf on its FAT beside teletype.toml.

    Returns the models (as named on the card) and the card.
    """
    work.mkdir(parents=True, exist_ok=True)
    extra = work / "models"
    extra.mkdir(exist_ok=True)
    for old in extra.iterdir():
        old.unlink()
    models = []
    for arg in named:
        name, _, source = arg.partition("=")
        # make-disk.sh copies what the links point to onto the FAT.
        (extra / name).symlink_to(Path(source).resolve())
        models.append(extra / name)
    boot_mib = 64 + sum(m.stat().st_size for m in models) // 2**20 + 64
    template = (rootfs / "boot/firmware/teletype.toml").read_text()
    env = {
        "PATH": "/usr/sbin:/sbin:/usr/bin:/bin",
        "BOOT_MIB": str(boot_mib),
        "BOOT_EXTRA": str(extra),
    }
    return models, rig.make_card(rootfs, work, rig.board_settings(template), env)


def main() -> int:
    rootfs, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    models, card = card_with_models(rootfs, work, sys.argv[3:])
    r = rig.Results()
    results = []
    for board, memory_mb in BOARDS:
        print(f"\n== {board}: {memory_mb} MB for Linux", flush=True)
        guest = card.with_memory(memory_mb).boot(f"console-{memory_mb}.log")
        if not r.check(f"{board}: boots", guest.wait_agent(), rig.tail(guest.console)):
            guest.shutdown()
            continue
        rig.wait_for(lambda g=guest: rig.engine_ready(g), 600)
        info = meminfo(guest)
        rss, _ = engine_memory(guest)
        base = {"MemTotal": info.get("MemTotal"), "MemAvailable": info.get("MemAvailable")}
        print(f"   MemTotal {base['MemTotal']} MB; with the embedded model: MemAvailable "
              f"{base['MemAvailable']} MB, engine RSS {rss} MB", flush=True)  # fmt: skip
        rows = []
        for model in models:
            row = try_model(guest, model.name, model.stat().st_size // 10**6)
            rows.append(row)
            print(f"   {model.name}: {row['outcome']}, engine RSS {row.get('rss_mb', '-')} MB "
                  f"(peak {row.get('peak_mb', '-')}), MemAvailable {row['mem_available_mb']} MB"
                  + (f"; {row['refusal']}" if row.get("refusal") else ""), flush=True)  # fmt: skip
            r.check(
                f"{board}: {model.name} runs, or is refused at start (exit 78), never killed",
                row["oom_kills"] == 0 and (row["outcome"] == "runs" or row["outcome"] == "refused"),
                json.dumps(row),
            )
        if memory_mb == BOARDS[0][1]:
            whole_route(guest, r, models[0].name)
        results.append({"board": board, "memory_mb": memory_mb, "base": base, "rows": rows,
                        "engine_rss_embedded_mb": rss})  # fmt: skip
        guest.shutdown()
    (work / "board-fit.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| model | file | " + " | ".join(b for b, _ in BOARDS) + " |")
    print("|---|---:|" + "---|" * len(BOARDS))
    for i, model in enumerate(models):
        cells = []
        for board in results:
            row = board["rows"][i]
            if row["outcome"] == "runs":
                cells.append(f"runs: RSS {row['rss_mb']} MB, {row['mem_available_mb']} MB left")
            else:
                cells.append(row["outcome"])
        print(f"| {model.name} | {model.stat().st_size / 1e6:.0f} MB | " + " | ".join(cells) + " |")
    print(f"\n{r.passed} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
