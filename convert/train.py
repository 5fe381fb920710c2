"""Steps 3 and 4: train a small GPT-2 from scratch, or fine-tune a real one.

Both run the same loop: AdamW, linear warmup then cosine decay, validation
loss at intervals, a checkpoint at every validation, a step budget and an
optional wall-clock budget, seeded, on CUDA when there is one. The output
directory is an ordinary transformers model directory (config, weights,
tokenizer) plus `training_state.pt` and `training_log.json`, so every later
step (gguf, eval, the model card) rebuilds from it alone, and running the
same command again resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from convert.errors import TrainingError

STATE_FILE = "training_state.pt"
LOG_FILE = "training_log.json"


@dataclass
class TrainConfig:
    """Every knob of a run, with the defaults of the embedded model's recipe."""

    out_dir: Path
    corpus_dir: Path
    # From scratch: the tokenizer from step 2. Fine-tuning: None (the base's).
    tokenizer_dir: Path | None = None
    # Fine-tuning: a local GPT-2 directory or a hub name.
    init_from: str | None = None
    # Model shape (ignored when fine-tuning: the base decides).
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    n_ctx: int = 512
    dropout: float = 0.1
    # Optimisation.
    batch_size: int = 8
    block_size: int = 256
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # Budgets: training stops at whichever comes first. The learning-rate
    # schedule follows whichever is further along, so a time-boxed run still
    # ends its cosine decay on time.
    max_steps: int = 2000
    max_minutes: float | None = None
    eval_interval: int = 100
    # Stop this invocation after this many steps in all (with a checkpoint),
    # as an interruption would; the next run resumes. For long runs in
    # chunks, and for testing that resuming changes nothing.
    stop_after: int | None = None
    seed: int = 1337
    device: str = "auto"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    train_loss: float
    validation_loss: float
    seconds: float
    tokens_per_second: float
    parameters: int
    stopped_by: str


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def encode_file(tokenizer, path: Path):
    """Token ids of a text file, as a 1-D int64 tensor."""
    import torch

    from convert.tokenizer import encode_documents

    text = path.read_text(encoding="utf-8")
    ids = encode_documents(
        text,
        lambda doc: tokenizer(doc, add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    )
    return torch.tensor(ids, dtype=torch.long)


def lr_at(config: TrainConfig, step: int, elapsed: float) -> float:
    progress = step / config.max_steps
    if config.max_minutes:
        progress = max(progress, elapsed / (config.max_minutes * 60))
    warmup = min(config.warmup_steps, config.max_steps // 10 or 1)
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = min(1.0, progress)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    low = config.learning_rate * config.min_lr_ratio
    return low + (config.learning_rate - low) * cosine


def build_model(config: TrainConfig, vocab_size: int, eos_id: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    if config.n_embd % config.n_head:
        raise TrainingError(
            f"n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})"
        )
    gpt2_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.n_ctx,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return GPT2LMHeadModel(gpt2_config)


def load_base(init_from: str):
    """A base GPT-2 and its tokenizer, from a local directory or the hub (on a user's machine)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    try:
        model = GPT2LMHeadModel.from_pretrained(init_from)
        tokenizer = AutoTokenizer.from_pretrained(init_from)
    except OSError as e:
        raise TrainingError(f"could not load a GPT-2 checkpoint from {init_from!r}: {e}") from e
    return model, tokenizer


@dataclass
class _State:
    step: int = 0
    elapsed: float = 0.0
    tokens: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def quiet_transformers() -> None:
    """Our own progress bar says what matters; transformers' shard bars would bury it."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def train(config: TrainConfig) -> TrainResult:
    import torch

    quiet_transformers()

    train_path = config.corpus_dir / "train.txt"
    validation_path = config.corpus_dir / "validation.txt"
    for p in (train_path, validation_path):
        if not p.is_file():
            raise TrainingError(f"{p} not found: run `python -m convert corpus` first")

    device = pick_device(config.device)
    out = config.out_dir
    resuming = (out / STATE_FILE).is_file()
    state = _State()

    if resuming:
        model, tokenizer = load_base(str(out))
        saved = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
        state = _State(**saved["state"])
        _check_same_recipe(config, saved["config"], out)
    elif config.init_from:
        model, tokenizer = load_base(config.init_from)
        if model.config.n_positions < config.block_size:
            raise TrainingError(
                f"block size {config.block_size} is longer than the base model's "
                f"context ({model.config.n_positions})"
            )
        model.config.resid_pdrop = model.config.embd_pdrop = config.dropout
        model.config.attn_pdrop = config.dropout
    else:
        if config.tokenizer_dir is None:
            raise TrainingError("training from scratch needs --tokenizer (from step 2)")
        from convert.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(config.tokenizer_dir)
        _seed_everything(config.seed)
        model = build_model(config, len(tokenizer), tokenizer.eos_token_id)
        if config.block_size > config.n_ctx:
            raise TrainingError(f"block size {config.block_size} exceeds n_ctx {config.n_ctx}")

    model.to(device)
    train_ids = encode_file(tokenizer, train_path)
    validation_ids = encode_file(tokenizer, validation_path)
    block = config.block_size
    if len(train_ids) <= block + 1 or len(validation_ids) <= block + 1:
        raise TrainingError(
            f"too little text for block size {block}: {len(train_ids)} training and "
            f"{len(validation_ids)} validation tokens"
        )

    optimizer = _optimizer(model, config, device)
    generator = torch.Generator().manual_seed(config.seed)
    if resuming:
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])

    parameters = sum(p.numel() for p in model.parameters())
    bar = _progress(config, state.step)
    start = time.monotonic() - state.elapsed
    stopped_by = "steps"
    loss_value = float("nan")
    model.train()
    while state.step < config.max_steps:
        elapsed = time.monotonic() - start
        if config.max_minutes and elapsed >= config.max_minutes * 60:
            stopped_by = "time"
            break
        if config.stop_after is not None and state.step >= config.stop_after:
            stopped_by = "stop_after"
            break
        lr = lr_at(config, state.step, elapsed)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = _batch(train_ids, block, config.batch_size, generator, device)
        loss = model(input_ids=x, labels=y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        state.step += 1
        state.tokens += x.numel()
        loss_value = loss.item()
        if bar is not None:
            bar.update(1)
            extra = {}
            if config.max_minutes:
                # The bar's ETA counts steps; a time budget may end the run first.
                left = max(0.0, config.max_minutes * 60 - (time.monotonic() - start))
                extra["budget_left"] = f"{left / 60:.1f}min"
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}", **extra)
        if state.step % config.eval_interval == 0 or state.step == config.max_steps:
            state.elapsed = time.monotonic() - start
            _record(model, validation_ids, config, state, loss_value, lr, device, bar)
            _save(model, tokenizer, optimizer, generator, config, state, out)
    if bar is not None:
        bar.close()

    state.elapsed = time.monotonic() - start
    if not state.history or state.history[-1]["step"] != state.step:
        _record(model, validation_ids, config, state, loss_value, 0.0, device, None)
        _save(model, tokenizer, optimizer, generator, config, state, out)
    last = state.history[-1]
    return TrainResult(
        out_dir=out,
        steps=state.step,
        train_loss=last["train_loss"],
        validation_loss=last["validation_loss"],
        seconds=state.elapsed,
        tokens_per_second=state.tokens / max(state.elapsed, 1e-9),
        parameters=parameters,
        stopped_by=stopped_by,
    )


def _check_same_recipe(config: TrainConfig, saved: dict[str, Any], out: Path) -> None:
    shape = (
        "n_layer",
        "n_head",
        "n_embd",
        "n_ctx",
        "block_size",
        "batch_size",
        "init_from",
        "seed",
    )
    for key in shape:
        if key in saved and saved[key] != getattr(config, key):
            raise TrainingError(
                f"{out} holds a run with {key}={saved[key]!r}, not {getattr(config, key)!r}; "
                "resume with the same settings or choose another --out"
            )


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model, config: TrainConfig, device):
    import torch

    # Weight decay on matrices only; biases and layer norms stay free.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",
    )


def _batch(ids, block: int, batch_size: int, generator, device):
    import torch

    starts = torch.randint(0, len(ids) - block - 1, (batch_size,), generator=generator)
    x = torch.stack([ids[s : s + block] for s in starts.tolist()])
    # transformers shifts the labels itself: labels are the inputs.
    return x.to(device), x.to(device)


def validation_loss(model, ids, block: int, batch_size: int, device) -> float:
    """Mean loss over every whole block of the validation text, in order.

    The same windows every time, so losses from different steps and runs are
    directly comparable.
    """
    import torch

    n_blocks = (len(ids) - 1) // block
    windows = ids[: n_blocks * block].view(n_blocks, block)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n_blocks, batch_size):
            x = windows[i : i + batch_size].to(device)
            loss = model(input_ids=x, labels=x).loss
            # Each window predicts block - 1 tokens.
            total += loss.item() * x.shape[0] * (block - 1)
            count += x.shape[0] * (block - 1)
    if was_training:
        model.train()
    return total / count


def _record(model, validation_ids, config, state: _State, loss, lr, device, bar) -> None:
    val = validation_loss(model, validation_ids, config.block_size, config.batch_size, device)
    state.history.append(
        {
            "step": state.step,
            "seconds": round(state.elapsed, 2),
            "tokens": state.tokens,
            "train_loss": round(loss, 4),
            "validation_loss": round(val, 4),
            "lr": lr,
        }
    )
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}", lr=f"{lr:.1e}")


def _save(model, tokenizer, optimizer, generator, config, state: _State, out: Path) -> None:
    """Write the checkpoint beside the old one, then swap, so a kill never leaves half a model."""
    import torch

    tmp = out.with_name(out.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(
        {
            "state": asdict(state),
            "config": config.to_json(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / STATE_FILE,
    )
    log = {"config": config.to_json(), "history": state.history}
    (tmp / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _progress(config: TrainConfig, initial: int):
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=config.max_steps, initial=initial, unit="step", dynamic_ncols=True)


def config_from_args(args: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in args.items() if k in known and v is not None})
