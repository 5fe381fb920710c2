"""bench/results.json -> bench/results.md and bench/results.png.

python bench/report.py   (bench/run.py calls it at the end)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PI_BANDWIDTH = {"Pi 4": 3.3e9, "Pi 5": 10e9}
QUANT_NAMES = {"f16": "F16", "q8_0": "Q8_0", "q6_k": "Q6_K", "q4_k_m": "Q4_K_M"}
PARAMS = {"small": "124M", "medium": "355M"}


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], digits: int = 1, scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    return f"{med(v):.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})"


def write_report(results: dict, md: Path, png: Path, notes: str = "") -> None:
    m = results["machine"]
    s = results["settings"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (bench/run.py) on {m['date']}: **{m['cpu']}, "
        f"{m['cores']} cores** ({m['threads']} threads for llama.cpp and torch), Python "
        f"{m['python']}. Each number is the median of {s['runs']} runs (min–max in brackets), "
        f"all measured in the same run on the same machine. Models: GPT-2 shapes with random "
        f"weights (bench/models.py), {s['tokens']} generated tokens after a five-line chat "
        f"prompt. The whole run took {results['wall_seconds'] / 60:.1f} minutes.",
        "",
        "## 1. Generation: the appliance against transformers",
        "",
        "Decode tokens a second after the first token; transformers runs fp32 with its KV "
        "cache and the same sampling settings.",
        "",
        "| model | engine | file | tokens/s | × transformers |",
        "|---|---|---:|---:|---:|",
    ]
    for name, shape in results["shapes"].items():
        hf = med(shape["transformers"]["rate"])
        lines.append(
            f"| {name} ({PARAMS[name]}) | transformers fp32 | | "
            f"{spread(shape['transformers']['rate'])} | 1.0 |"
        )
        for quant, q in shape["quants"].items():
            lines.append(
                f"| {name} ({PARAMS[name]}) | appliance {QUANT_NAMES[quant]} | "
                f"{q['file_bytes'] / 1e6:.0f} MB | {spread(q['rate'])} | "
                f"**{med(q['rate']) / hf:.1f}×** |"
            )
    lines += [
        "",
        "## 2. Python overhead: the appliance's generator against a bare llama.cpp loop",
        "",
        "The bare loop calls llama-cpp-python's low-level API and nothing else (decode, the "
        "same sampler chain, decode), in the same process. Overhead = how much slower the "
        "generator's tokens are.",
        "",
        "| model | generator tokens/s | bare loop tokens/s | overhead |",
        "|---|---:|---:|---:|",
    ]
    for name, shape in results["shapes"].items():
        for quant, q in shape["quants"].items():
            overhead = med(q["bare_rate"]) / med(q["rate"]) - 1
            lines.append(
                f"| {name} {QUANT_NAMES[quant]} | {spread(q['rate'])} | "
                f"{spread(q['bare_rate'])} | {overhead * 100:+.1f}% |"
            )
    fc = results["first_character_s"]
    lines += [
        "",
        "## 3. Time to the first character on the wire",
        "",
        f"`POST /v1/generate` with five chat lines in the history (about 120 prompt tokens, a "
        f"new line each time so no earlier prompt is reused) to the first letter written to "
        f"the pty, through a real engine, small Q8_0: **{spread(fc, 0, 1000)} ms** "
        f"({len(fc)} requests).",
        "",
        f"Before flash attention was turned on (`model.flash_attn = false`), measured in the "
        f"same run: {spread(results['first_character_before_s'], 0, 1000)} ms.",
        "",
        "First token inside the generator (the same prompt, no engine):",
        "",
        "| model | transformers | appliance Q8_0 | appliance Q4_K_M |",
        "|---|---:|---:|---:|",
    ]
    for name, shape in results["shapes"].items():
        lines.append(
            f"| {name} | {spread(shape['transformers']['first_token_s'], 0, 1000)} ms | "
            f"{spread(shape['quants']['q8_0']['first_token_s'], 0, 1000)} ms | "
            f"{spread(shape['quants']['q4_k_m']['first_token_s'], 0, 1000)} ms |"
        )
    lines += [
        "",
        "## 4 and 5. Memory and cold start",
        "",
        "The engine's resident memory after one reply, against the model file (mmap: the "
        "weights are the page cache's, counted once), and process start to READY=1 on a "
        "notify socket.",
        "",
        "| model | file | engine RSS | RSS − file | READY after |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, shape in results["shapes"].items():
        for quant, q in shape["quants"].items():
            rss = med(q["rss_bytes"])
            lines.append(
                f"| {name} {QUANT_NAMES[quant]} | {q['file_bytes'] / 1e6:.0f} MB | "
                f"{rss / 1e6:.0f} MB | {(rss - q['file_bytes']) / 1e6:+.0f} MB | "
                f"{spread(q['ready_s'], 2)} s |"
            )
    lines += [
        "",
        "### Tuning: what was tried (small Q8_0, the same prompt, measured in this run)",
        "",
        "| setting | tokens/s | first token |",
        "|---|---:|---:|",
    ]
    for label, t in results.get("tuning", {}).items():
        lines.append(
            f"| {label} | {spread(t['rate'])} | {spread(t['first_token_s'], 0, 1000)} ms |"
        )
    st = results["starvation"]
    lines += [
        "",
        "## 6 and 7. Printer starvation and pacing",
        "",
        f"One {st['text_chars']}-character reply (small Q8_0) printed on a pty at the "
        f"Teletype's own rate: {st['frames']} frames in {st['seconds']:.0f} s.",
        "",
        f"- Starvation (time after the first character when the printer had nothing to send, "
        f"any gap over 1.5 frame times): **{st['starved_seconds']:.2f} s, "
        f"{st['starved_fraction'] * 100:.2f}%**.",
        f"- Pacing: **{st['frames_per_second']:.3f} frames a second** against "
        f"{st['nominal_frames_per_second']:.3f} nominal "
        f"({st['frames_per_second'] / st['nominal_frames_per_second'] * 100:.1f}%); "
        f"{st['printable_per_second']:.2f} printable characters a second (the rest are CR, LF "
        f"and their fill characters).",
        "",
    ]
    lines += _warm_prompt_section(results.get("warm_prompt"))
    lines += [
        "## 8. Projection to a Raspberry Pi (a projection, not a measurement)",
        "",
        "Generating a token reads every weight once, so a CPU that keeps up with its memory "
        "makes at most (bandwidth ÷ bytes per token) tokens a second. Bytes per token here "
        "is the file size; the effective bandwidth is 3.3 GB/s for a Pi 4 and 10 GB/s for a "
        "Pi 5. The row 'this machine' shows the same ceiling against what was measured, as a "
        "check on the method.",
        "",
        "| model | this machine: measured (ceiling at its measured rate × size) | "
        "Pi 4 ceiling | Pi 5 ceiling | Pi 4 characters/s at ~4 a token |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, shape in results["shapes"].items():
        for quant in ("q8_0", "q4_k_m"):
            q = shape["quants"][quant]
            size = q["file_bytes"]
            rate = med(q["rate"])
            pi4 = PI_BANDWIDTH["Pi 4"] / size
            pi5 = PI_BANDWIDTH["Pi 5"] / size
            lines.append(
                f"| {name} {QUANT_NAMES[quant]} | {rate:.0f} tokens/s = "
                f"{rate * size / 1e9:.1f} GB/s read | {pi4:.0f} tokens/s | {pi5:.0f} tokens/s | "
                f"{pi4 * 4:.0f} |"
            )
    lines += [
        "",
        "The Teletype needs 10 characters a second, about 2.5 tokens: every row above is far "
        "beyond it, even on a Pi 4 and even if the real Pi reaches only a third of the "
        "ceiling.",
        "",
        f"![tokens a second]({png.name})",
        "",
    ]
    if notes:
        lines += [notes.rstrip(), ""]
    md.write_text("\n".join(lines))
    _plot(results, png)


def _warm_prompt_section(warm: dict | None) -> list[str]:
    """Section 9: the first character with the prompt evaluated while idle, and without."""
    if not warm:
        return []
    lines = [
        "## 9. The warm prompt: the next reply's prompt evaluated while idle",
        "",
        "`POST /v1/generate` (a press: the history's prompt) to the first letter on the pty, "
        "small Q8_0 with GPT-2's own vocabulary (bench/models.py: build_gpt2_vocab), "
        "through a real engine with its history full. Cold: right after a chat "
        "line arrived, so the window had shifted and no token of the prompt was evaluated "
        "(the idle evaluation had only begun; the press takes it over at its next chunk). "
        "Warm: the same press after 3 s of idle time. "
        "Measured alternately in the same engine.",
        "",
        "| history | prompt tokens | cold | warm | cold ÷ warm |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (("five_lines", "five chat lines"), ("long_history", "long history")):
        row = warm.get(key)
        if not row:
            continue
        ratio = med(row["cold_s"]) / med(row["warm_s"])
        lines.append(
            f"| {label} | {row['prompt_tokens']} | {spread(row['cold_s'], 0, 1000)} ms | "
            f"{spread(row['warm_s'], 0, 1000)} ms | **{ratio:.1f}×** |"
        )
    row = warm.get("long_history") or warm.get("five_lines")
    lines += [
        "",
        f"Memory: nothing is saved aside; the evaluated prompt is the model's own context "
        f"(its KV cache, allocated when the model loads). Engine RSS after these runs: "
        f"{row['rss_bytes'] / 1e6:.0f} MB.",
    ]
    during = warm.get("chat_during_print")
    if during:
        lines += [
            "",
            f"Chat during a print: {during['chat_lines']} chat lines posted while a reply "
            f"printed ({during['frames']} frames in {during['seconds']:.0f} s); the printer "
            f"waited **{during['starved_seconds']:.2f} s, "
            f"{during['starved_fraction'] * 100:.2f}%** (the prompt is evaluated only once "
            "the printer is idle).",
        ]
    return [*lines, ""]


def _plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(results["shapes"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4.2), squeeze=False)
    for ax, name in zip(axes[0], shapes, strict=True):
        shape = results["shapes"][name]
        labels = ["transformers\nfp32"] + [QUANT_NAMES[q] for q in shape["quants"]]
        values = [med(shape["transformers"]["rate"])] + [
            med(q["rate"]) for q in shape["quants"].values()
        ]
        colors = ["#999999"] + ["#1f5fbf"] * len(shape["quants"])
        bars = ax.bar(labels, values, color=colors)
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.0f}", ha="center",
                    va="bottom", fontsize=9)  # fmt: skip
        ax.set_title(f"GPT-2 {name} ({PARAMS[name]})")
        ax.set_ylabel("tokens a second")
    m = results["machine"]
    fig.suptitle(f"Generation on {m['cores']} cores of {m['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    data = json.loads((ROOT / "bench" / "results.json").read_text())
    notes_file = ROOT / "bench" / "notes.md"
    notes = notes_file.read_text() if notes_file.exists() else ""
    write_report(data, ROOT / "bench" / "results.md", ROOT / "bench" / "results.png", notes)
    sys.exit(0)
