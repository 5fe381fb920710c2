from __future__ import annotations

import subprocess
import sys

import pytest

from appliance import config as config_module
from appliance.config import Config, load_config, parse_config, render_config
from appliance.errors import ConfigError

BOOT = "/boot/firmware/teletype.toml"


def test_config_defaults_for_every_key():
    config = Config()
    assert config.model.temperature == 0.75 and config.model.top_p == 0.9
    assert config.model.max_chars == 500
    assert config.teletype.profile == "asr33" and config.teletype.cr_fills == 2
    assert config.history.lines == 5


def test_config_values_override_defaults_and_keep_the_rest():
    config = parse_config(b'[teletype]\nport = "/dev/ttyUSB0"\nparity = "mark"\n', BOOT)
    assert config.teletype.port == "/dev/ttyUSB0" and config.teletype.parity == "mark"
    assert config.teletype.lf_fills == 1
    assert config.source == BOOT


def test_config_windows_line_ends_and_byte_order_mark():
    data = "\ufeff# edited in Notepad\r\n[model]\r\nmax_chars = 300\r\n".encode()
    assert parse_config(data, BOOT).model.max_chars == 300


def test_config_integers_are_accepted_where_numbers_are_wanted():
    assert parse_config(b"[model]\ntemperature = 1\n", BOOT).model.temperature == 1.0


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (b"[teletype]\nprot = 1\n", "unknown key teletype.prot (did you mean 'port'?)"),
        (b"[teletyp]\n", "unknown section [teletyp] (did you mean 'teletype'?)"),
        (b'[teletype]\ncr_fills = "two"\n', "teletype.cr_fills must be a whole number, not 'two'"),
        (b"[teletype]\ncr_fills = 2.5\n", "teletype.cr_fills must be a whole number"),
        (b"[keyboard]\nenabled = 1\n", "keyboard.enabled must be true or false, not 1"),
        (b"[model]\ntemperature = 5\n", "model.temperature must be at most 2.0"),
        (b"[history]\nlines = 0\n", "history.lines must be at least 1"),
        (b'[teletype]\nprofile = "asr35"\n', "teletype.profile must be one of 'asr33'"),
        (b"model = 3\n", "model must be a section"),
        (b"[model\n", "not valid TOML"),
        (b"[model]\n# caf\xe9\n", "is not UTF-8 (byte 0xe9 on line 2"),
        (b"[model]\n# caf\xe9\n", "save it as UTF-8 (Notepad: File, Save as, Encoding: UTF-8"),
        ("[model]\n".encode("utf-16-le"), "looks like UTF-16 without a byte-order mark"),
        (b"x = " + b"[" * 2000 + b"]" * 2000, "nested too deeply"),
        (b"# padding\n" * 110_000, "larger than 1 MiB"),
    ],
    ids=lambda value: ascii(value)[:40],
)
def test_config_errors_name_the_file_and_the_key(toml, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(toml, BOOT)
    assert str(caught.value).startswith(BOOT + ": ")
    assert message in str(caught.value)


def test_config_search_order(tmp_path, monkeypatch):
    boot, etc = tmp_path / "boot.toml", tmp_path / "etc.toml"
    monkeypatch.setattr(config_module, "SEARCH_PATHS", (boot, etc))
    assert load_config().source == "defaults"
    etc.write_text("[history]\nlines = 3\n")
    assert load_config().history.lines == 3
    boot.write_text("[history]\nlines = 4\n")
    assert load_config().history.lines == 4
    explicit = tmp_path / "mine.toml"
    explicit.write_text("[history]\nlines = 7\n")
    assert load_config(explicit).history.lines == 7
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")


def test_config_render_round_trips_and_is_valid_toml():
    config = parse_config(b'[teletype]\nport = "file:/tmp/x \\"y\\""\n', BOOT)
    rendered = render_config(config)
    again = parse_config(rendered.encode(), "rendered")
    assert again.teletype == config.teletype and again.model == config.model


def test_config_cli_bad_file_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "teletype.toml"
    bad.write_text("[teletype]\nbaud = 300\n")
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "config", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart it
    assert result.stderr.strip() == f"teletype config: {bad}: unknown key teletype.baud"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_config_utf16_with_a_byte_order_mark_is_read(codec):
    text = "# Notepad, UTF-16\r\n[model]\r\nmax_chars = 300\r\n"
    data = text.encode(codec)
    if codec != "utf-16":
        data = ("\ufeff" + text).encode(codec)
    assert parse_config(data, BOOT).model.max_chars == 300


def test_config_a_huge_file_is_not_read_whole(tmp_path):
    path = tmp_path / "teletype.toml"
    with path.open("wb") as f:
        f.truncate(50 << 20)  # sparse: costs no disk
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(path)
