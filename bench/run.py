"""`make bench`: how fast the appliance is, side by side, on this machine. Writes bench/results.md.

    python bench/run.py [--runs 3] [--tokens 64] [--quick]

1. generation tokens/s: the appliance's generator at F16, Q8_0, Q6_K and
   Q4_K_M against transformers (fp32, KV cache) on the same weights, the same
   prompt and the same number of tokens;
2. Python overhead: the generator against a bare llama.cpp decode loop
   (llama-cpp-python's low-level API) in the same process;
3. time to the first character on the wire: a `!gpt2`-shaped request (five
   chat lines, about 120 prompt tokens) through a real engine to a pty;
4. memory: the engine's RSS with each model against the file's size;
5. cold start: process start to READY=1 on a notify socket;
6. printer starvation over a 2,000-character job, and 7. the pacing
   actually sent to the pty against the nominal rate;
8. a projection to a Pi 4 and a Pi 5 from bytes read per token;
9. the warm prompt: the first character for a press with five chat lines
   and with about 900 tokens of history, cold and warm, side by side, and
   whether chat lines arriving while a reply prints starve the printer.

Medians of several runs, with min and max. Benchmarks report; they assert
nothing (the results say where a target is missed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.engine.llama_open import cores_to_use  # noqa: E402
from appliance.testing.engine_process import EngineProcess  # noqa: E402
from appliance.testing.wire import PtyReader  # noqa: E402
from bench.models import SHAPES, build, build_gpt2_vocab  # noqa: E402

THREADS = cores_to_use()
# Five chat lines, as the bridge keeps them: about 120 tokens with the names.
CHAT = [
    ("ada", "the clutch on my model 33 slips when the motor warms up"),
    ("bert", "check the clutch shoe lever spring tension first, it wears"),
    ("cy", "mine prints garbage at 110 baud on a usb adapter, any ideas why"),
    ("dot", "a lot of adapters cannot do 110, use the pi uart instead"),
    ("eve", "what oil goes on the typing unit bearings and how often"),
]
# The knobs tried, each against the default (flash attention on, all cores, batch 512).
TUNING = {
    "default: flash attention, 2 threads, batch 512": {},
    "before: flash attention off": {"flash_attn": False},
    "1 thread": {"threads": 1},
    "prompt batch 128": {"batch": 128},
    "prompt batch 32": {"batch": 32},
}


def chat_prompt() -> str:
    return "".join(f"{name}: {text}\n" for name, text in CHAT)


@dataclass
class Spread:
    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, digits: int = 1, scale: float = 1.0) -> str:
        v = [x * scale for x in self.values]
        return f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f} to {max(v):.{digits}f})"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- 1 and 2: tokens a second -------------------------------------------------------


def generator_rate(
    path: Path, prompt: str, tokens: int, runs: int, **options
) -> tuple[Spread, Spread]:
    """Decode tokens/s after the first token, and seconds to the first token."""
    from appliance.engine.generator import Generator

    generator = Generator(path, **({"threads": THREADS} | options))
    rate, first = Spread(), Spread()
    try:
        for run in range(runs + 1):
            # A new first line each run: llama-cpp-python reuses the KV cache of a
            # prompt that begins the same, and chat shifts by a line each time.
            fresh = f"run{run}: {'again ' * run}\n{prompt}"
            for _ in generator.stream(fresh, 5000, seed=run, max_tokens=tokens):
                pass
            s = generator.last_stats
            if run == 0:
                continue  # warm-up: page the weights in
            rate.add((s["tokens"] - 1) / (s["seconds"] - s["first_token_s"]))
            first.add(s["first_token_s"])
    finally:
        generator.close()
    return rate, first


def bare_rate(path: Path, prompt: str, tokens: int, runs: int) -> Spread:
    """The same work with no Python in the loop but the calls: decode, sample, decode."""
    import llama_cpp

    from appliance.engine.llama_open import open_llama

    # The generator's own settings (flash attention on), so only the Python differs.
    llm = open_llama(path, n_ctx=0, n_threads=THREADS, flash_attn=True, verbose=False)
    ctx = llm._ctx.ctx
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    rate = Spread()
    try:
        for run in range(runs + 1):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            chain = llama_cpp.llama_sampler_chain_init(
                llama_cpp.llama_sampler_chain_default_params()
            )
            for sampler in (
                llama_cpp.llama_sampler_init_penalties(llm.n_vocab(), 64, 1.15, 0.0, 0.0),
                llama_cpp.llama_sampler_init_top_k(40),
                llama_cpp.llama_sampler_init_top_p(0.9, 1),
                llama_cpp.llama_sampler_init_temp(0.75),
                llama_cpp.llama_sampler_init_dist(run),
            ):
                llama_cpp.llama_sampler_chain_add(chain, sampler)
            array = (llama_cpp.llama_token * len(ids))(*ids)
            llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(ids)))
            one = (llama_cpp.llama_token * 1)()
            started = None
            for n in range(tokens):
                one[0] = llama_cpp.llama_sampler_sample(chain, ctx, -1)
                llama_cpp.llama_sampler_accept(chain, one[0])
                if n == 0:
                    started = time.perf_counter()
                llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1))
            elapsed = time.perf_counter() - started
            llama_cpp.llama_sampler_free(chain)
            if run:
                rate.add((tokens - 1) / elapsed)
    finally:
        llm.close()
    return rate


def transformers_rate(hf_dir: Path, prompt: str, tokens: int, runs: int) -> tuple[Spread, Spread]:
    """transformers fp32 with its KV cache, sampling as the appliance does."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.set_num_threads(THREADS)
    model = GPT2LMHeadModel.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(hf_dir)(prompt, return_tensors="pt").input_ids
    rate, first = Spread(), Spread()

    def timed(n: int, seed: int) -> float:
        torch.manual_seed(seed)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                do_sample=True, temperature=0.75, top_p=0.9, top_k=40, repetition_penalty=1.15,
                use_cache=True, pad_token_id=0,
            )  # fmt: skip
        return time.perf_counter() - started

    timed(2, 0)  # warm-up
    for run in range(runs):
        one = timed(1, run)
        all_ = timed(tokens, run)
        rate.add((tokens - 1) / (all_ - one))
        first.add(one)
    return rate, first


# --- 3 to 7: the engine ---------------------------------------------------------------


class TimedPty(PtyReader):
    """The tests' pty reader (it notes when each byte arrived), waiting for quiet."""

    def wait_quiet(self, quiet: float) -> None:
        while True:
            last = self.arrivals[-1][0] if self.arrivals else 0.0
            if self.arrivals and time.monotonic() - last > quiet:
                return
            time.sleep(0.05)


def _engine(
    tmp: Path,
    model: Path,
    pty: TimedPty | None,
    max_chars: int = 500,
    model_extra: str = "",
    engine_extra: str = "",
) -> EngineProcess:
    port = str(pty.name) if pty else f"file:{tmp / 'paper.txt'}"
    extra = f'path = "{model}"\nthreads = {THREADS}\n{model_extra}'
    return EngineProcess(
        tmp, port, engine_extra=engine_extra, max_chars=max_chars, model_extra=extra
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_and_memory(model: Path, runs: int) -> tuple[Spread, Spread]:
    """Seconds from process start to READY=1, and RSS after one reply."""
    ready, rss = Spread(), Spread()
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            engine = _engine(Path(tmp), model, None)
            started = time.monotonic()
            engine.start()
            ready.add(time.monotonic() - started)
            engine.json("POST", "/v1/generate", {"max_chars": 100, "seed": run, "print": False})
            rss.add(rss_bytes(engine.process.pid))
            engine.close()
    return ready, rss


def first_character(model: Path, runs: int, model_extra: str = "") -> Spread:
    """A !gpt2 with five chat lines in the history: request to the first byte on the pty."""
    latency = Spread()
    pty = TimedPty()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(Path(tmp), model, pty, max_chars=60, model_extra=model_extra).start()
        try:
            for name, text in CHAT:
                engine.json("POST", "/v1/history", {"name": name, "text": text})
            for run in range(runs + 1):
                # A new chat line first, as in a live chat: the history (the
                # prompt) no longer begins as the last one did, so nothing of
                # the last prompt's evaluation can be reused.
                engine.json("POST", "/v1/history", {"name": "fay", "text": f"and now {run}"})
                if pty.arrivals:
                    pty.wait_quiet(0.5)
                before = len(pty.arrivals)
                started = time.monotonic()
                threading.Thread(
                    target=engine.json,
                    args=("POST", "/v1/generate", {"seed": run, "max_chars": 40}),
                    daemon=True,
                ).start()
                while len(pty.arrivals) == before:
                    time.sleep(0.0005)
                # The first byte may be a CR LF from the last job's end: wait for a letter.
                while not any(_glyph(b) for _, b in pty.arrivals[before:]):
                    time.sleep(0.0005)
                first = next(t for t, b in pty.arrivals[before:] if _glyph(b))
                if run:
                    latency.add(first - started)
                pty.wait_quiet(1.0)
        finally:
            engine.close()
            pty.close()
    return latency


def starvation_and_pacing(model: Path, chars: int) -> dict:
    """One long job on the pty at the real rate: did the printer ever wait for text?"""
    from appliance.teletype.profiles import get_profile

    frame_rate = get_profile("asr33").characters_per_second(None)
    pty = TimedPty()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(Path(tmp), model, pty, max_chars=chars).start()
        try:
            # At 10 characters a second a long job takes minutes.
            body = {"seed": 7, "max_chars": chars}
            _, _, raw = engine.request("POST", "/v1/generate", body, timeout=chars / 5 + 120)
            job = json.loads(raw)
        finally:
            engine.close()
            pty.close()
    times = [t for t, _ in pty.arrivals]
    printable = sum(1 for _, b in pty.arrivals if 0x20 <= (b & 0x7F) <= 0x5F)
    span = times[-1] - times[0]
    slot = 1.0 / frame_rate
    # A gap of more than one and a half frames: the printer had nothing to send.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    waited = sum(g - slot for g in gaps if g > 1.5 * slot)
    return {
        "text_chars": len(job["text"]),
        "frames": len(times),
        "seconds": span,
        "frames_per_second": (len(times) - 1) / span,
        "nominal_frames_per_second": frame_rate,
        "printable_per_second": printable / span,
        "starved_seconds": waited,
        "starved_fraction": waited / span,
    }


# --- 9: the warm prompt ----------------------------------------------------------------

# About 900 tokens of history: 44 chat lines of about 20 tokens each.
LONG_CHAT = [
    (f"viewer{i}", f"{text} ({i})") for i in range(44) for text in [CHAT[i % len(CHAT)][1]]
]


def _glyph(byte: int) -> bool:
    """A byte that puts ink on the paper (parity stripped): ! to _ on a Model 33."""
    return 0x21 <= (byte & 0x7F) <= 0x5F


def _first_character(engine: EngineProcess, pty: TimedPty, body: dict) -> float:
    """Seconds from a POST /v1/generate to the reply's first character on the pty.

    Any glyph counts (a letter, a digit, a full stop): a reply that begins
    "2.04 THE..." is on the paper at the "2", and counting to its first letter
    would add the Teletype's 100 ms a character to the model's time. Line
    ends, fills and spaces before it are not the reply's."""
    if pty.arrivals:
        pty.wait_quiet(0.5)
    before = len(pty.arrivals)
    started = time.monotonic()
    answers: list = []
    threading.Thread(
        target=lambda: answers.append(engine.json("POST", "/v1/generate", body)), daemon=True
    ).start()
    while not any(_glyph(b) for _, b in pty.arrivals[before:]):
        if answers and answers[0][0] >= 400:
            raise RuntimeError(f"the engine refused the request: {answers[0]}")
        time.sleep(0.0005)
    first = next(t for t, b in pty.arrivals[before:] if _glyph(b))
    pty.wait_quiet(1.0)
    return first - started


def warm_and_cold(model: Path, chat: list[tuple[str, str]], runs: int) -> dict:
    """A press with the history full: cold, right after a chat line arrived (the window
    shifts by a line, so no token of the new prompt was evaluated, and the idle
    evaluation has only begun: the press takes it over at its next chunk), and warm,
    after idle time to evaluate it."""
    warm, cold = Spread(), Spread()
    pty = TimedPty()
    with tempfile.TemporaryDirectory() as tmp:
        lines = f"[history]\nlines = {len(chat)}\n"
        engine = _engine(Path(tmp), model, pty, max_chars=40, engine_extra=lines).start()
        try:
            for name, text in chat:
                engine.json("POST", "/v1/history", {"name": name, "text": text})
            for run in range(runs + 1):
                name, text = chat[run % len(chat)]
                engine.json("POST", "/v1/history", {"name": name, "text": f"{text} again"})
                cold_s = _first_character(engine, pty, {"seed": run, "max_chars": 40})
                time.sleep(3.0)  # idle: the engine evaluates the history again
                warm_s = _first_character(engine, pty, {"seed": run, "max_chars": 40})
                if run:  # the first pair pages the weights in
                    cold.add(cold_s)
                    warm.add(warm_s)
            _, history = engine.json("GET", "/v1/history")
            rss = rss_bytes(engine.process.pid)
        finally:
            engine.close()
            pty.close()
    from appliance.engine.generator import Generator

    rendered = "".join(f"{line['name']}: {line['text']}\n" for line in history["lines"])
    probe = Generator(model, threads=1)
    try:
        tokens = len(probe.tokens(rendered))
    finally:
        probe.close()
    return {"warm_s": warm.values, "cold_s": cold.values, "prompt_tokens": tokens,
            "rss_bytes": rss}  # fmt: skip


def chat_during_print(model: Path, chars: int, lines: int) -> dict:
    """A long reply at the Teletype's rate while chat lines arrive: any starving?"""
    pty = TimedPty()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(Path(tmp), model, pty, max_chars=chars).start()
        try:
            for name, text in CHAT:
                engine.json("POST", "/v1/history", {"name": name, "text": text})
            body = {"seed": 8, "max_chars": chars}
            answer: list = []
            asking = threading.Thread(
                target=lambda: answer.append(
                    engine.request("POST", "/v1/generate", body, timeout=chars / 5 + 120)
                ),
                daemon=True,
            )
            asking.start()
            while len(pty.arrivals) < 20:
                time.sleep(0.01)
            span = chars / 10.0
            for i in range(lines):  # spread over the print
                time.sleep(span / (lines + 1))
                engine.json("POST", "/v1/history", {"name": f"late{i}", "text": f"still here {i}"})
            asking.join()
        finally:
            engine.close()
            pty.close()
    times = [t for t, _ in pty.arrivals]
    slot = 0.1
    gaps = [b - a for a, b in itertools.pairwise(times)]
    waited = sum(g - slot for g in gaps if g > 1.5 * slot)
    span = times[-1] - times[0]
    return {"frames": len(times), "seconds": span, "chat_lines": lines,
            "starved_seconds": waited, "starved_fraction": waited / span}  # fmt: skip


# --- the report -----------------------------------------------------------------------


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--starve-chars", type=int, default=2000)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument(
        "--resume", action="store_true", help="keep what --out already holds; measure the rest"
    )
    args = parser.parse_args()

    prompt = chat_prompt()
    results: dict = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": THREADS,
                    "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")},
        "settings": vars(args) | {"out": str(args.out)},
        "shapes": {},
    }  # fmt: skip
    if args.resume and args.out.exists():
        # Keep what an interrupted run measured; measure the rest.
        results = json.loads(args.out.read_text()) | {"settings": results["settings"]}

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    started = time.monotonic() - results.get("wall_seconds", 0.0)
    for name in args.shapes:
        if name in results["shapes"]:
            continue
        paths = build(name, log)
        shape: dict = {"quants": {}}
        log(f"{name}: transformers fp32")
        hf_rate, hf_first = transformers_rate(paths["hf"], prompt, args.tokens, args.runs)
        shape["transformers"] = {"rate": hf_rate.values, "first_token_s": hf_first.values}
        for quant in ("f16", "q8_0", "q6_k", "q4_k_m"):
            log(f"{name} {quant}: generator, bare loop, start and memory")
            rate, first = generator_rate(paths[quant], prompt, args.tokens, args.runs)
            bare = bare_rate(paths[quant], prompt, args.tokens, args.runs)
            ready, rss = start_and_memory(paths[quant], args.runs)
            shape["quants"][quant] = {
                "file_bytes": paths[quant].stat().st_size,
                "rate": rate.values,
                "first_token_s": first.values,
                "bare_rate": bare.values,
                "ready_s": ready.values,
                "rss_bytes": rss.values,
            }
        results["shapes"][name] = shape
        results["wall_seconds"] = time.monotonic() - started
        save()
    small_q8 = build("small", log)["q8_0"]
    if "first_character_s" not in results:
        log("time to the first character through the engine (small, Q8_0)")
        results["first_character_s"] = first_character(small_q8, max(5, args.runs)).values
        results["first_character_before_s"] = first_character(
            small_q8, max(5, args.runs), "flash_attn = false\n"
        ).values
        save()
    if "tuning" not in results:
        log("tuning (small, Q8_0): threads, flash attention, prompt batch")
        results["tuning"] = {}
        for label, options in TUNING.items():
            rate, first = generator_rate(small_q8, prompt, args.tokens, args.runs, **options)
            results["tuning"][label] = {"rate": rate.values, "first_token_s": first.values}
        save()
    if "warm_prompt" not in results:
        log("the warm prompt (small Q8_0, GPT-2's vocabulary): five chat lines, ~900 tokens")
        gpt2_q8 = build_gpt2_vocab(log)
        results["warm_prompt"] = {
            "five_lines": warm_and_cold(gpt2_q8, CHAT, max(5, args.runs)),
            "long_history": warm_and_cold(gpt2_q8, LONG_CHAT, max(5, args.runs)),
            "chat_during_print": chat_during_print(gpt2_q8, 400, 8),
        }
        save()
    if "starvation" not in results:
        log(f"a {args.starve_chars}-character job at the Teletype's own rate (small, Q8_0)")
        results["starvation"] = starvation_and_pacing(small_q8, args.starve_chars)
    results["wall_seconds"] = time.monotonic() - started
    save()
    log(f"wrote {args.out} in {results['wall_seconds']:.0f} s")
    from bench.report import write_report

    notes = ROOT / "bench" / "notes.md"  # the speed-ups tried, with their before and after
    write_report(
        results,
        args.out.with_suffix(".md"),
        args.out.with_suffix(".png"),
        notes.read_text() if notes.exists() else "",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
