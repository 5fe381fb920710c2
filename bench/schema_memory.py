"""What a schema library costs in memory: msgspec (used) against pydantic (considered).

    python bench/schema_memory.py [--out bench/schema-memory.md]

Each candidate is imported in a fresh interpreter, with one request type
defined and one body decoded through it, and the process's resident set
(VmRSS) read after that; a bare interpreter is the baseline. Both run side
by side in one session, several times each, and the medians are reported.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CANDIDATES = {
    "bare interpreter": "",
    "msgspec": """
import msgspec
class Ask(msgspec.Struct):
    prompt: str = ""
    max_chars: int | None = None
msgspec.json.decode(b'{"prompt": "hello", "max_chars": 100}', type=Ask)
msgspec.json.schema(Ask)
""",
    "pydantic": """
import pydantic
class Ask(pydantic.BaseModel):
    prompt: str = ""
    max_chars: int | None = None
Ask.model_validate_json(b'{"prompt": "hello", "max_chars": 100}')
Ask.model_json_schema()
""",
}
READ_RSS = """
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]))
"""


def rss_kib(code: str) -> int | None:
    run = subprocess.run(
        [sys.executable, "-c", code + READ_RSS], capture_output=True, text=True, check=False
    )
    return int(run.stdout) if run.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "schema-memory.md")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    samples: dict[str, list[int]] = {name: [] for name in CANDIDATES}
    for _ in range(args.runs):  # interleaved: the machine's noise hits all alike
        for name, code in CANDIDATES.items():
            value = rss_kib(code)
            if value is not None:
                samples[name].append(value)
    base = statistics.median(samples["bare interpreter"])
    lines = [
        "# Schema libraries: memory on import and first use",
        "",
        f"{platform.machine()}, Python {platform.python_version()}, {args.runs} runs each, "
        "interleaved; median VmRSS. Written by `bench/schema_memory.py`.",
        "",
        "| | VmRSS (MiB) | over a bare interpreter (MiB) |",
        "|---|---|---|",
    ]
    for name, values in samples.items():
        if not values:
            lines.append(f"| {name} | not installed here | |")
            continue
        mid = statistics.median(values)
        lines.append(f"| {name} | {mid / 1024:.1f} | {(mid - base) / 1024:+.1f} |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
