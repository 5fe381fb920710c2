"""[system] read_only_root: the initramfs reads it with a few lines of POSIX sh (no
Python before the root is mounted), so they must agree with the appliance's own
reading of teletype.toml on every way a person writes it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import parse_config, render_template

SCRIPT = (
    Path(__file__).resolve().parent.parent
    / "pi-gen-config/stage-teletype/04-read-only/files/teletype-read-only"
)
TEMPLATE = render_template()
OFF = TEMPLATE.replace("# read_only_root = true", "read_only_root = false")

WRITTEN = {
    "the template as shipped": TEMPLATE,
    "uncommented and set to false": OFF,
    "false, with Windows line ends": OFF.replace("\n", "\r\n"),
    "false, no spaces": TEMPLATE.replace("# read_only_root = true", "read_only_root=false"),
    "false, no newline at the end": "[system]\nread_only_root = false",
    "false, header written [ system ]": "[ system ]\n  read_only_root   =  false  # off\n",
    "true, uncommented": TEMPLATE.replace("# read_only_root = true", "read_only_root = true"),
    "false in a comment": "[system]\n# read_only_root = false\n",
    "set, then set back": "[system]\nread_only_root = false\n[motor]\npin = 4\n",
}


def initramfs_reads(tmp_path: Path, text: str) -> bool:
    path = tmp_path / "teletype.toml"
    path.write_bytes(text.encode())
    done = subprocess.run(["sh", str(SCRIPT), "setting", str(path)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return {"true": True, "false": False}[done.stdout.strip()]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
@pytest.mark.parametrize("text", WRITTEN.values(), ids=WRITTEN.keys())
def test_the_initramfs_reads_the_setting_as_the_appliance_does(tmp_path, text):
    assert initramfs_reads(tmp_path, text) == parse_config(text.encode(), "t").system.read_only_root


def test_only_the_system_section_counts(tmp_path):
    # [chat] has no such key (the appliance says so); the initramfs keeps the safe mode.
    assert initramfs_reads(tmp_path, "[chat]\nread_only_root = false\n") is True
