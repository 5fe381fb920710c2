"""`teletype` as a maker first runs it: the commands, their help, and a wrong port."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.cli import _settings, parser
from appliance.engine.replies import Replies, ending_a_sentence


def _teletype(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the command; a hang fails the test (the generous timeout is the failure mode)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"teletype {' '.join(args)} hung: {e.stderr!r}") from None


def _wrong_ports(tmp_path: Path) -> dict[str, str]:
    regular = tmp_path / "not-a-tty.txt"
    regular.write_text("")
    return {
        "missing": str(tmp_path / "ttyUSB9"),
        "regular-file": str(regular),
        "dev-null": "/dev/null",
        "directory": str(tmp_path),
    }


@pytest.mark.parametrize("kind", ["missing", "regular-file", "dev-null", "directory"])
@pytest.mark.parametrize("command", [["print", "HELLO"], ["generate", "HELLO", "--seed", "1"]])
def test_cli_wrong_port_is_one_line_and_an_error_not_a_hang(tmp_path, command, kind):
    port = _wrong_ports(tmp_path)[kind]
    done = _teletype([*command, "--port", port], tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert port in lines[0] and lines[0].startswith(f"teletype {command[0]}: ")
    assert done.stdout == ""


def test_cli_print_on_a_serial_port_still_prints(tmp_path, teletype):
    done = _teletype(["print", "HI", "--port", str(teletype.link)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"HI" in bytes(b & 0x7F for b in teletype.collect())


# A reply ends where a sentence ends: . ! or ? (a closing quote or bracket may follow).
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?$")


def test_cli_generate_max_chars_ends_at_a_sentence_end(embedded_generator):
    # What `teletype generate --max-chars 100 --seed N` prints. Seed 2 ran on with
    # no sentence end and was cut at 199 characters, mid-sentence.
    config = _settings(parser().parse_args(["generate", "--max-chars", "100"]))
    replies = Replies(config, embedded_generator)
    for seed in (1, 2, 3):
        text = "".join(replies.stream(replies.prompt(None, ""), seed=seed))
        assert 100 <= len(text) <= 200, (seed, text)
        assert _SENTENCE_END.search(text), (seed, text)


@pytest.mark.parametrize(
    "pieces, printed",
    [
        (["The clutch ", "is set."], "The clutch is set."),
        (["The clutch ", "is set", " -", " "], "The clutch is set."),
        (['He said "stop!"'], 'He said "stop!"'),
        (["the carriage"], "the carriage."),
        ([], ""),
    ],
)
def test_cli_a_reply_cut_mid_sentence_is_closed_with_a_period(pieces, printed):
    assert "".join(ending_a_sentence(pieces)) == printed


def test_cli_every_command_has_a_summary_and_every_flag_its_help():
    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help for choice in commands._choices_actions}
    missing = [
        name
        for name, sub in commands.choices.items()
        if not summaries.get(name) or sub.description != summaries[name]
    ]
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_cli_a_reply_s_first_word_is_not_held_for_the_next():
    """The period needs to know the last piece, but only its trailing space and
    dangling marks wait for that: the first word goes to the printer as soon as
    the model has made it (holding it cost a press one more token)."""
    pulled: list[str] = []

    def pieces():
        for piece in ["The ", "clutch, ", "is set "]:
            pulled.append(piece)
            yield piece

    out = ending_a_sentence(pieces())
    assert next(out) == "The"
    assert pulled == ["The "]
    assert next(out) == " clutch"
    assert pulled == ["The ", "clutch, "]
    assert "".join(out) == ", is set."


@given(st.lists(st.text(alphabet="ab.!?\"' \n,;:-", max_size=8), max_size=6))
@settings(max_examples=500, deadline=None)
def test_cli_a_reply_reads_the_same_whatever_its_pieces(pieces):
    """Cut into any pieces, the text is the pieces' own without the spaces and
    dangling marks at its end, closed with a period when it does not end a
    sentence; and every piece handed on ends at a word's end."""
    text = "".join(pieces)
    body = text.rstrip(" \t\n,;:-")
    if not body:  # nothing printable: as it was
        expected = text
    elif re.search(r"[.!?][\"')\]]*$", body):
        expected = body
    else:
        expected = body + "."
    out = list(ending_a_sentence(pieces))
    assert "".join(out) == expected
    assert all(not piece.endswith((" ", "\n")) for piece in out[:-1] if piece.strip())
