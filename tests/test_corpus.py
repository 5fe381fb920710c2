from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convert.corpus import (
    END_OF_TEXT,
    fetch,
    fold_characters,
    normalise,
    prepare_corpus,
    split_documents,
)
from convert.errors import CorpusError

PROSE = "The selector magnet armature is held by the spacing latch until the start bit arrives. "


def _document(n_lines: int, tag: str) -> str:
    return "\n".join(f"{tag} line {i}: {PROSE}" for i in range(n_lines))


def test_corpus_folds_odd_characters_to_ascii():
    text = fold_characters(
        "Clutch \u2014 90\u00b0, \u00a7 3, caf\u00e9, \u201cquoted\u201d \u2013 ok\u2122"
    )
    assert text == 'Clutch  --  90 degrees, Sec.  3, cafe, "quoted" - ok'


def test_corpus_drops_ocr_debris_and_captions_but_keeps_prose():
    raw = "2.04\n607 1 2 3\n[teletype sharing]\nThe clutch should latch.\n574-122-701\nTo Adjust\n"
    documents, counts = normalise(raw)
    assert documents == [["The clutch should latch.", "To Adjust"]]
    assert counts["debris"] == 4


def test_corpus_collapses_dot_leaders():
    documents, _ = normalise("Width ............ 5 inches\n")
    assert documents == [["Width ... 5 inches"]]


def test_corpus_keeps_one_copy_of_long_repeats_and_every_short_heading():
    long_line = "Note 2: Spring tensions may be checked in any sequence at all."
    raw = f"To Adjust\n{long_line}\nTo Adjust\n{long_line}\n{END_OF_TEXT}\n{long_line}\nTo Adjust\n"
    documents, counts = normalise(raw)
    assert documents == [["To Adjust", long_line, "To Adjust"], ["To Adjust"]]
    assert counts["duplicates"] == 2


def test_corpus_split_holds_out_one_contiguous_region_per_long_document():
    docs = [[f"doc{d} line {i} {PROSE}" for i in range(100)] for d in range(3)]
    docs.append([f"short {i} {PROSE}" for i in range(5)])
    train, validation = split_documents(docs, 0.1, seed=7)
    assert len(validation) == 3
    for held in validation:
        assert len(held) == 10
        numbers = [int(line.split()[2]) for line in held]
        assert numbers == list(range(numbers[0], numbers[0] + 10))
    train_lines = {line for doc in train for line in doc}
    assert not train_lines & {line for doc in validation for line in doc}
    # The short document goes wholly to training.
    assert [f"short {i} {PROSE}" for i in range(5)] in train


def test_corpus_split_is_deterministic_by_seed():
    docs = [[f"doc{d} line {i} {PROSE}" for i in range(200)] for d in range(4)]
    assert split_documents(docs, 0.1, seed=1) == split_documents(docs, 0.1, seed=1)
    assert split_documents(docs, 0.1, seed=1)[1] != split_documents(docs, 0.1, seed=2)[1]


def test_corpus_split_rejects_a_silly_fraction():
    with pytest.raises(CorpusError, match=r"between 0 and 0\.5"):
        split_documents([["x"]], 0.9, seed=1)


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_corpus_normalised_text_is_printable_ascii(text):
    documents, _ = normalise(text)
    for doc in documents:
        for line in doc:
            assert all(" " <= ch <= "~" for ch in line), line
            assert line == line.strip()


class _Server:
    """A small HTTP server on loopback that serves one file."""

    def __init__(self, body: bytes):
        body_ = body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body_)))
                self.end_headers()
                self.wfile.write(body_)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/training.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_corpus_download_is_verified_and_cached(isolated_cache):
    body = (_document(60, "a") + f"\n{END_OF_TEXT}\n" + _document(60, "b")).encode()
    digest = hashlib.sha256(body).hexdigest()
    with _Server(body) as server:
        path = fetch(server.url, digest)
    assert path.read_bytes() == body
    assert path.parent == isolated_cache / "corpus"
    # The server is gone: the second fetch must come from the cache.
    assert fetch(server.url, digest) == path


def test_corpus_download_with_a_wrong_checksum_is_refused_and_not_kept(isolated_cache):
    with _Server(b"tampered text\n") as server, pytest.raises(CorpusError, match="expected"):
        fetch(server.url, "0" * 64)
    assert not list((isolated_cache / "corpus").iterdir())


def test_corpus_unreachable_url_says_so(isolated_cache):
    with _Server(b"") as server:
        url = server.url
    with pytest.raises(CorpusError, match="could not download"):
        fetch(url, None)


def test_corpus_local_file_checksum_mismatch_names_the_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("my own manuals\n")
    with pytest.raises(CorpusError, match=r"mine\.txt"):
        fetch(str(path), "0" * 64)
    assert fetch(str(path), None) == path


def test_corpus_prepare_writes_the_split_and_stats(tmp_path):
    source = tmp_path / "manuals.txt"
    source.write_text(_document(80, "first") + f"\n{END_OF_TEXT}\n" + _document(80, "second"))
    prepared = prepare_corpus(str(source), tmp_path / "out", sha256=None)
    assert prepared.stats.documents == 2
    validation = prepared.validation.read_text()
    assert validation.count(END_OF_TEXT) == 1
    assert 0.05 < prepared.stats.validation_chars / prepared.stats.train_chars < 0.2


def test_corpus_full_teletype_manuals(tmp_path, corpus_file):
    prepared = prepare_corpus(str(corpus_file), tmp_path)
    stats = prepared.stats
    assert stats.documents == 25
    assert 0.08 < stats.validation_chars / (stats.train_chars + stats.validation_chars) < 0.12
    train = prepared.train.read_text()
    assert train.isascii()
    validation_lines = {
        line for line in prepared.validation.read_text().splitlines() if len(line) >= 40
    }
    assert validation_lines
    assert not validation_lines & set(train.splitlines())


def test_corpus_text_that_is_not_utf8_is_refused(tmp_path):
    path = Path(tmp_path / "latin1.txt")
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        prepare_corpus(str(path), tmp_path / "out", sha256=None)


def test_corpus_verified_local_file_is_kept_for_offline_runs(tmp_path, isolated_cache):
    path = tmp_path / "manuals.txt"
    path.write_text(_document(50, "kept"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert fetch(str(path), digest) == path
    # Later, offline: the URL cannot be reached, the checksum finds the copy.
    with _Server(b"") as server:
        url = server.url
    cached = fetch(url, digest)
    assert cached.read_bytes() == path.read_bytes()
    assert cached.parent == isolated_cache / "corpus"
