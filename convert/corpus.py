"""Step 1: the training text.

Fetch the corpus (a local path, or a URL checked against its sha256),
normalise it, drop repeated paragraphs and split it into training and
validation text. The split holds out one contiguous region of every long
document, so the validation text is prose the model has never seen, not
lines interleaved with their own neighbours.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import tempfile
import unicodedata
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from convert.errors import CorpusError

# The Teletype manuals (see ../shared/corpus/SOURCE.md): pinned to one commit
# and one checksum, so every machine trains on the same bytes.
DEFAULT_URL = (
    "https://raw.githubusercontent.com/hughpyle/ASR33/"
    "d41915e01754e47a4f1dfddf7bd51e45ee3d11b8/gpt2/training.txt"
)
DEFAULT_SHA256 = "b4701f0d319b8009d95d4c53c374e058d59809edd06a219f209daccc19e5d8d3"

# GPT-2's document separator; the corpus already uses it between manuals.
END_OF_TEXT = "<|endoftext|>"

# The few characters outside ASCII that the manuals use, folded to what a
# Model 33 could have printed. Anything else is decomposed (é -> e) and, if
# still not ASCII, dropped: the model should never learn to emit it.
FOLD = {
    "\u2014": " -- ",  # em dash
    "\u2013": "-",  # en dash
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u00b0": " degrees",
    "\u00a7": "Sec. ",
    "\u00a2": " cents",
    "\u00a3": "L",
    "\u00bb": ">>",
    "\u00ab": "<<",
    "\u00a0": " ",
    "\u2026": "...",
    "\u00d7": "x",
    # Trade marks would decompose to "TM" glued onto the word before.
    "\u2122": "",
    "\u00ae": "",
    "\u00a9": "(c)",
}

# Repeated lines shorter than this are headings ("To Adjust", "Requirement")
# that give the manuals their structure; longer ones are boilerplate or
# duplicated paragraphs, kept once.
MIN_DEDUPE_CHARS = 40


@dataclass(frozen=True)
class CorpusStats:
    source: str
    sha256: str
    documents: int
    lines_in: int
    debris_lines_dropped: int
    duplicate_lines_dropped: int
    train_chars: int
    validation_chars: int
    validation_fraction: float
    seed: int


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    from convert.paths import cache_dir

    return cache_dir() / "corpus"


def fetch(source: str, sha256: str | None = None, cache_dir: Path | None = None) -> Path:
    """Return a local path holding the corpus, downloading it if `source` is a URL.

    A download is kept in the cache under its checksum and reused. A file whose
    sha256 differs from the expected one is refused, never used.
    """
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise CorpusError(f"corpus file not found: {path}")
        if sha256 and sha256_of(path) != sha256:
            raise CorpusError(
                f"{path}: sha256 is {sha256_of(path)}, expected {sha256}; "
                "pass --sha256 '' to train on a different text on purpose"
            )
        if sha256:
            _keep(path, sha256, cache_dir or default_cache_dir())
        return path

    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if sha256:
        cached = cache / f"{sha256}.txt"
        if cached.is_file() and sha256_of(cached) == sha256:
            return cached
    with tempfile.NamedTemporaryFile(dir=cache, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(source, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as e:
            Path(tmp.name).unlink(missing_ok=True)
            raise CorpusError(f"could not download the corpus from {source}: {e}") from e
    got = sha256_of(Path(tmp.name))
    if sha256 and got != sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise CorpusError(f"download from {source} has sha256 {got}, expected {sha256}")
    final = cache / f"{got}.txt"
    Path(tmp.name).replace(final)
    return final


def _keep(path: Path, sha256: str, cache: Path) -> None:
    """A verified corpus also goes into the cache, so a later run finds it offline."""
    cached = cache / f"{sha256}.txt"
    if cached.is_file():
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".part")
        shutil.copyfile(path, tmp)
        tmp.replace(cached)
    except OSError:
        pass  # a cache is a convenience; a read-only home is no error


def fold_characters(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = "".join(FOLD.get(ch, ch) for ch in text)
    out = []
    for ch in text:
        if ch == "\n" or " " <= ch <= "~":
            out.append(ch)
        elif ch == "\t":
            out.append(" ")
        else:
            # é -> e + combining accent; keep the letter, lose the rest.
            out.extend(c for c in unicodedata.normalize("NFKD", ch) if " " <= c <= "~")
    return "".join(out)


_DOT_LEADER = re.compile(r"\.{4,}")
_SPACES = re.compile(r"[ ]{2,}")
_WORD = re.compile(r"[A-Za-z]{3,}")
_IMAGE_CAPTION = re.compile(r"\[[^\]]*\]")


def clean_line(line: str) -> str:
    line = _DOT_LEADER.sub(" ... ", line)
    line = _SPACES.sub(" ", line)
    return line.strip()


def is_debris(line: str) -> bool:
    """OCR debris: stray figure labels, page numbers, part numbers, photo captions.

    A line without a single word of three letters carries no prose ("2.04",
    "607 1 2 3", "574-122-701"); a line that is only bracketed captions is a
    picture placeholder from the web page the text came from.
    """
    if line == END_OF_TEXT:
        return False
    if not _WORD.search(line):
        return True
    return not _IMAGE_CAPTION.sub("", line).strip()


def normalise(text: str) -> tuple[list[list[str]], dict[str, int]]:
    """Text -> documents (lists of lines), plus counts of what was dropped.

    Blank lines are kept as "" so paragraph breaks survive; runs of them
    collapse to one.
    """
    text = fold_characters(text.replace("\r\n", "\n").replace("\r", "\n"))
    seen: set[str] = set()
    counts = {"lines_in": 0, "debris": 0, "duplicates": 0}
    documents: list[list[str]] = [[]]
    for raw in text.split("\n"):
        counts["lines_in"] += 1
        line = clean_line(raw)
        if line == END_OF_TEXT:
            documents.append([])
            continue
        if not line:
            if documents[-1] and documents[-1][-1] != "":
                documents[-1].append("")
            continue
        if is_debris(line):
            counts["debris"] += 1
            continue
        if len(line) >= MIN_DEDUPE_CHARS:
            key = line.lower()
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
        documents[-1].append(line)
    docs = [_trim_blank(d) for d in documents]
    return [d for d in docs if any(d)], counts


def _trim_blank(lines: list[str]) -> list[str]:
    while lines and lines[0] == "":
        lines = lines[1:]
    while lines and lines[-1] == "":
        lines = lines[:-1]
    return lines


def split_documents(
    documents: list[list[str]], validation_fraction: float, seed: int, min_lines: int = 40
) -> tuple[list[list[str]], list[list[str]]]:
    """Hold out one contiguous region of each long document for validation.

    Where the region sits in each document comes from the seed, so the split
    is the same on every machine. Short documents (fewer than `min_lines`
    lines) go wholly to training: a region of two or three lines would be
    too small to say anything and would cut the document to pieces.
    """
    if not 0.0 < validation_fraction < 0.5:
        raise CorpusError(
            f"validation fraction must be between 0 and 0.5, not {validation_fraction}"
        )
    train: list[list[str]] = []
    validation: list[list[str]] = []
    for index, doc in enumerate(documents):
        if len(doc) < min_lines:
            train.append(doc)
            continue
        size = max(1, round(len(doc) * validation_fraction))
        start = random.Random(f"{seed}:{index}").randrange(0, len(doc) - size + 1)
        before, held, after = doc[:start], doc[start : start + size], doc[start + size :]
        validation.append(_trim_blank(held))
        # The text before and after the region are two separate documents:
        # joining them would teach the model a seam that never existed.
        train.extend(part for part in (_trim_blank(before), _trim_blank(after)) if part)
    return train, validation


def join_documents(documents: list[list[str]]) -> str:
    return f"\n{END_OF_TEXT}\n".join("\n".join(doc) for doc in documents) + "\n"


@dataclass(frozen=True)
class PreparedCorpus:
    train: Path
    validation: Path
    stats: CorpusStats


def prepare_corpus(
    source: str,
    out_dir: Path,
    sha256: str | None = DEFAULT_SHA256,
    validation_fraction: float = 0.1,
    seed: int = 1337,
) -> PreparedCorpus:
    """Fetch, normalise, dedupe and split; write train.txt, validation.txt, stats.json."""
    path = fetch(source, sha256)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text: {e}") from e
    documents, counts = normalise(raw)
    if not documents:
        raise CorpusError(f"{path} holds no usable text after cleaning")
    train, validation = split_documents(documents, validation_fraction, seed)
    if not validation:
        raise CorpusError(
            f"{path}: no document is long enough to hold out validation text "
            "(each needs 40 lines or more)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    train_text, validation_text = join_documents(train), join_documents(validation)
    (out_dir / "train.txt").write_text(train_text, encoding="utf-8")
    (out_dir / "validation.txt").write_text(validation_text, encoding="utf-8")
    stats = CorpusStats(
        source=source,
        sha256=sha256_of(path),
        documents=len(documents),
        lines_in=counts["lines_in"],
        debris_lines_dropped=counts["debris"],
        duplicate_lines_dropped=counts["duplicates"],
        train_chars=len(train_text),
        validation_chars=len(validation_text),
        validation_fraction=validation_fraction,
        seed=seed,
    )
    (out_dir / "stats.json").write_text(json.dumps(asdict(stats), indent=2) + "\n")
    return PreparedCorpus(out_dir / "train.txt", out_dir / "validation.txt", stats)
