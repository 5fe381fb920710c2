"""The blocklist: what it matches, how generated text is sent back, and the engine using it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import Config
from appliance.engine.generator import load_generator, sampling_from
from appliance.engine.moderation import (
    Blocklist,
    blocklist_from,
    load_blocklist,
    moderated,
    parse_terms,
)
from appliance.engine.replies import clean_reply
from appliance.errors import ConfigError, Withheld
from appliance.testing.corpus import find_corpus
from appliance.testing.engine_process import EngineProcess


def _list(text: str) -> Blocklist:
    return Blocklist(parse_terms(text, "test"))


def test_blocklist_matches_whole_words_across_case_accents_and_swaps():
    b = _list("darn\nheck*\nbad word\n")
    assert b.find("What the DARN.").term.words == ("darn",)
    assert b.find("d4rn it") is not None  # digit for a letter
    assert b.find("dárn it") is not None  # an accent
    assert b.find("heckling") is not None  # a prefix term
    assert b.find("a bad  word here").start == 2  # a phrase, any spacing
    assert b.find("a bad\nword") is not None
    # Whole words only: inside another word is not a hit.
    assert b.find("darned darning undarn") is None
    assert b.find("bad words") is None
    assert b.find("check the heckelphone") is not None  # prefix: heck...
    assert b.find("the checker") is None


def test_blocklist_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "mine.txt"
    bad.write_text("fine\n###\n  ***  \n")
    with pytest.raises(ConfigError, match=r"mine.txt, line 3"):
        load_blocklist(str(bad), use_default=False)
    with pytest.raises(ConfigError, match=r"moderation.blocklist: no such file"):
        load_blocklist(str(tmp_path / "absent.txt"), source="teletype.toml")


def test_shipped_blocklist_loads_and_spares_workshop_words():
    shipped = load_blocklist()
    assert len(shipped) > 40
    assert shipped.find("you are a shithead") is not None
    # Workshop words that a careless list would catch: "cock the lever",
    # "prick punch", "retard the spark" are all in Teletype manuals.
    assert shipped.find("Cock the lever, use a prick punch, retard the spark.") is None


def test_shipped_blocklist_finds_nothing_in_the_manuals():
    corpus = find_corpus()
    if corpus is None:
        pytest.skip("the Teletype corpus is not on this machine (set TELETYPE_CORPUS)")
    assert load_blocklist().find(corpus.read_text(encoding="utf-8")) is None


def test_user_file_adds_to_the_shipped_list_with_bom_and_crlf(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_bytes("\ufeff# ours\r\nsprocket\r\n".encode())
    both = load_blocklist(str(mine))
    assert both.find("the sprocket") is not None
    assert both.find("shit") is not None
    only = load_blocklist(str(mine), use_default=False)
    assert only.find("shit") is None and len(only) == 1


def _scripted(*texts: str):
    """A stand-in for the model: attempt N streams texts[N] word by word."""
    calls = []

    def start(prefix: str, attempt: int):
        calls.append((prefix, attempt))
        for word in texts[attempt].split(" "):
            yield word + " "

    return start, calls


def test_moderated_regenerates_from_the_last_clean_word():
    start, calls = _scripted("one two darn three", "four heck five", "six seven.")
    out = list(moderated(start, _list("darn\nheck\n"), tries=3))
    assert "".join(out).strip() == "one two four six seven."
    # Each retry goes on from what was accepted, with the next attempt number.
    assert calls == [("", 0), ("one two ", 1), ("one two four ", 2)]


def test_moderated_holds_back_words_that_may_start_a_phrase():
    start, _ = _scripted("we said bad word today", "good things.")
    released = []
    for piece in moderated(start, _list("bad word\n"), tries=1):
        released.append(piece)
    # "bad" was never released: it waited for the word after it.
    assert "".join(released).strip() == "we said good things."
    assert all("bad" not in p for p in released)


def test_moderated_releases_a_word_at_once_when_no_phrase_can_begin_with_it():
    """The first word is what a press waits for: it goes out as soon as it is whole,
    unless it (with the words before it) could begin a blocked phrase."""
    blocklist = _list("darn\nbad word\nvery bad thing\n")
    asked = []

    def start(prefix: str, attempt: int):
        for word in ("The ", "very ", "bad ", "clutch ", "slips."):
            asked.append(word)
            yield word

    released = []
    for piece in moderated(start, blocklist, tries=1):
        released.append((piece, len(asked)))
    # "The " is out before the model is asked for the next word; "very " could
    # begin "very bad thing" and "very bad " too, so both wait for "clutch ".
    assert released[0] == ("The ", 1)
    assert released[1] == ("very bad clutch ", 4)
    assert "".join(p for p, _ in released) == "The very bad clutch slips."


def test_moderated_finds_a_phrase_across_punctuation_between_its_words():
    """A blocked phrase with a dash between its words ("bad - word") is still the
    phrase: the words are matched as the blocklist reads them, not as spaces split them."""
    start, _ = _scripted("we bad - word today", "good things.")
    released = "".join(moderated(start, _list("bad word\n"), tries=1))
    assert _list("bad word\n").find(released) is None, released
    assert released.strip() == "we good things."


def test_moderated_holds_a_word_that_has_not_ended_yet():
    """Pieces that stop inside a word: the word waits until it is whole."""
    cases = [
        ("darn\n", ["Hello", " da", "rn"]),
        ("darn*\n", [" da", "rned"]),
        ("foo bar\n", ["x", " foo", " ba", "r"]),
    ]
    for terms, pieces in cases:

        def start(prefix: str, attempt: int, pieces=pieces):
            yield from pieces if attempt == 0 else ["clean."]

        released = list(moderated(start, _list(terms), tries=1))
        text = "".join(released)
        assert _list(terms).find(text) is None, (terms, released)
        assert text.endswith("clean.")


def test_moderated_gives_up_after_its_tries():
    start, calls = _scripted("fine darn", "darn", "darn")
    assert "".join(moderated(start, _list("darn\n"), tries=2)).strip() == "fine"
    assert len(calls) == 3
    start, _ = _scripted("darn", "darn")
    with pytest.raises(Withheld):
        list(moderated(start, _list("darn\n"), tries=1))


@given(st.lists(st.sampled_from(["alpha", "darn", "beta", "heck", "gamma."]), max_size=12))
def test_moderated_never_lets_a_blocked_word_out(words):
    blocklist = _list("darn\nheck\n")

    def start(prefix: str, attempt: int):
        yield from (w + " " for w in words)
        yield "fine."

    try:
        text = "".join(moderated(start, blocklist, tries=2))
    except Withheld:
        return
    assert blocklist.find(text) is None


# --- the engine, with the embedded model ------------------------------------------


def _engine(start_engine, tmp_path, words: str, tries: int = 3) -> EngineProcess:
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(words)
    extra = f'[moderation]\nblocklist = "{blocklist}"\ntries = {tries}\n'
    port = f"file:{tmp_path / 'paper.txt'}"
    return start_engine(port, engine_extra=extra, max_chars=120, started=False)


def _word_set(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def test_engine_regenerates_around_words_the_model_likes(tmp_path, start_engine):
    """Block the commonest words of a real reply: the model must find others."""
    ask = {"prompt": "The typing unit", "seed": 5, "print": False, "max_chars": 120}
    (tmp_path / "plain").mkdir()
    plain = start_engine("file:/dev/null", max_chars=120, tmp=tmp_path / "plain")
    try:
        status, job = plain.json("POST", "/v1/generate", ask)
    finally:
        plain.close()
    assert status == 200
    common = sorted(_word_set(job["text"]) & {"the", "a", "is", "of", "to", "and", "in"})
    assert common, job["text"]  # a GPT-2 reply without any of these would be news

    engine = _engine(start_engine, tmp_path, "\n".join(common) + "\n", tries=10).start()
    try:
        status, moderated_job = engine.json("POST", "/v1/generate", {**ask, "print": True})
    finally:
        engine.close()
    assert status == 200
    assert moderated_job["status"] == "done", moderated_job
    assert moderated_job["blocked"] >= 1
    assert moderated_job["text"]
    assert not _word_set(moderated_job["text"]) & set(common)
    paper = (tmp_path / "paper.txt").read_text()
    assert paper.strip() and not _word_set(paper) & set(common)


def test_engine_withholds_a_reply_when_every_try_is_blocked(tmp_path, start_engine):
    # Every word begins with a letter, so every word is blocked.
    everything = "\n".join(f"{c}*" for c in "abcdefghijklmnopqrstuvwxyz") + "\n"
    engine = _engine(start_engine, tmp_path, everything, tries=2).start()
    try:
        status, job = engine.json(
            "POST", "/v1/generate", {"prompt": "The keyboard", "seed": 1, "max_chars": 60}
        )
        # Nothing to print is never a bare 200: the job says why.
        assert status == 422
        assert job["status"] == "withheld" and job["text"] == ""
        assert job["blocked"] == 3
        assert "blocklist" in job["error"]
        # The engine carries on.
        assert engine.json("GET", "/healthz")[0] == 200
    finally:
        engine.close()
    assert not _word_set((tmp_path / "paper.txt").read_text())


def test_engine_refuses_blocked_chat_lines_and_prints(tmp_path, start_engine):
    engine = _engine(start_engine, tmp_path, "sprocket\n").start()
    try:
        status, body = engine.json("POST", "/v1/history", {"name": "viewer", "text": "SPR0CKET!"})
        assert status == 422 and "blocklist" in body["error"]
        status, body = engine.json("POST", "/v1/history", {"name": "sprocket", "text": "hi"})
        assert status == 422  # the name is printed too
        assert engine.json("GET", "/v1/history")[1]["lines"] == []
        status, body = engine.json("POST", "/v1/print", {"text": "a sprocket"})
        assert status == 422
        status, job = engine.json("POST", "/v1/print", {"text": "viewer: hello there"})
        assert status == 202 and job["position"] >= 0
        status, done = engine.json("GET", f"/v1/jobs/{job['id']}?wait=30")
        assert status == 200 and done["status"] == "done"
    finally:
        engine.close()
    assert "VIEWER: HELLO THERE" in (tmp_path / "paper.txt").read_text()


def test_a_reply_is_never_silently_empty_with_the_real_model():
    # With this seed the embedded model ends right after the prompt's last
    # word: an empty reply, nothing on paper. The next seed must be tried.
    config = Config()
    generator = load_generator(config.model)
    try:
        text = "".join(
            clean_reply(
                generator, "2. BASIC UNIT", 100, 3, sampling_from(config.model),
                blocklist_from(config), 3,
            )
        )  # fmt: skip
    finally:
        generator.close()
    assert re.search(r"[A-Za-z0-9]", text), repr(text)


class _Silent:
    """A model that never says anything: the one case the real one cannot be made to show."""

    def __init__(self):
        self.seeds = []

    def stream(self, prompt, max_chars, seed, sampling, cancel=None):
        self.seeds.append(seed)
        yield "\n"


def test_a_reply_with_nothing_to_say_is_withheld_saying_why():
    silent = _Silent()
    with pytest.raises(Withheld, match="nothing to print"):
        list(clean_reply(silent, "2. BASIC UNIT", 100, 3, None, _list("darn\n"), 2))
    assert silent.seeds == [3, 4, 5]  # every try a new seed
