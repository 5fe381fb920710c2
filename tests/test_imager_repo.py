"""pi-gen-config/imager-repo.py: a Raspberry Pi Imager repository for our card.

Each test builds a small card image as pi-gen lays one out (an MBR disk, a FAT
boot partition, an ext4 root), with real tools and no root: mkfs.vfat and
mtools for the FAT, mkfs.ext4 -d for the root, sfdisk for the table. The
script must list a complete card with the "systemd" customisation format and
the right sizes and sums, and refuse a card that lacks any piece of it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from appliance.testing.tools import system_tools

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "pi-gen-config" / "imager-repo.py"
MANIFEST = "teletype-gpt2.rpi-imager-manifest"
# Each tool the tests (or the script) run, and the Debian package that has it.
TOOLS = {
    "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mtype": "mtools",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "xz": "xz-utils",
}
ROOT_FILES = [
    "/usr/lib/raspberrypi-sys-mods/imager_custom",
    "/usr/lib/userconf-pi/userconf",
    "/usr/share/initramfs-tools/scripts/local-bottom/imager_fixup",
    "/usr/lib/systemd/system-generators/systemd-run-generator",
]
CONFIG = (
    "# pi-gen's config.txt, in short\ndtparam=audio=on\n auto_initramfs=1 \n\n[pi4]\narm_boost=1\n"
)
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=7e1e7e33-02 rootwait\n"
FSTAB = (
    "proc            /proc           proc    defaults          0       0\n"
    "PARTUUID=7e1e7e33-01  /boot/firmware  vfat    defaults          0       2\n"
    "PARTUUID=7e1e7e33-02  /               ext4    defaults,noatime  0       1\n"
)
# What the firmware loads with auto_initramfs=1: kernel8.img (Pi 3, 4, Zero 2 W)
# and kernel_2712.img (Pi 5), each with its initramfs.
BOOT_FILES = ["kernel8.img", "initramfs8", "kernel_2712.img", "initramfs_2712"]
URL_BASE = "https://example.org/teletype/v1"
REQUIRED = {  # what rpi-imager documents as required in an os_list entry, and its type
    "name": str,
    "description": str,
    "icon": str,
    "url": str,
    "extract_size": int,
    "extract_sha256": str,
    "image_download_size": int,
    "release_date": str,
    "devices": list,
}
MIB = 1 << 20
QUIET = {"stdout": subprocess.DEVNULL}


def tools() -> dict[str, str]:
    return system_tools(TOOLS)


def make_card(
    where: Path,
    *,
    root_files: list[str] = ROOT_FILES,
    config: str | None = CONFIG,
    cmdline: str | None = CMDLINE,
    fstab: str | None = FSTAB,
    boot_files: list[str] = BOOT_FILES,
) -> tuple[Path, Path]:
    """A pi-gen style card in where/card.img and its `xz -0` in where/card.img.xz."""
    run = tools()
    where.mkdir(parents=True, exist_ok=True)
    tree = where / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("teletype\n")
    if fstab is not None:
        (tree / "etc" / "fstab").write_text(fstab)
    for name in root_files:
        path = tree / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\n# stands in for {name}\nexit 0\n")
        path.chmod(0o755)
    boot = where / "boot.img"
    subprocess.run([run["mkfs.vfat"], "-n", "bootfs", "-C", boot, "16384"], check=True, **QUIET)
    files = [(name, f"stands in for {name}\n") for name in boot_files]
    for name, text in (("config.txt", config), ("cmdline.txt", cmdline), *files):
        if text is not None:
            (where / name).write_text(text)
            subprocess.run([run["mcopy"], "-i", boot, where / name, "::/"], check=True)
    rootfs = where / "root.img"
    subprocess.run(
        [run["mkfs.ext4"], "-q", "-L", "rootfs", "-d", tree, rootfs, "8M"], check=True, **QUIET
    )

    card = where / "card.img"
    with card.open("wb") as f:
        f.truncate((1 + 16 + 8) * MIB)
    table = "label: dos\nlabel-id: 0x7e1e7e33\nstart=1MiB, size=16MiB, type=c\n"
    table += "start=17MiB, size=8MiB, type=83\n"
    subprocess.run([run["sfdisk"], "--quiet", card], input=table, text=True, check=True)
    with card.open("r+b") as f:  # as make-disk.sh's dd conv=notrunc seek=1 (MiB)
        for image, mib in ((boot, 1), (rootfs, 17)):
            f.seek(mib * MIB)
            f.write(image.read_bytes())
    subprocess.run([run["xz"], "-T1", "-0", "-k", card], check=True)
    return card, where / "card.img.xz"


def imager_repo(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=120
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_of(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file" and parts.path.startswith("/"), url
    return Path(url2pathname(parts.path))


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> tuple[Path, Path]:
    return make_card(tmp_path_factory.mktemp("card"))


def test_manifest_lists_the_card_with_systemd_customisation(card, tmp_path):
    raw, xz = card
    out = tmp_path / "repo"
    done = imager_repo(xz, "--out", out, "--url-base", URL_BASE)
    assert done.returncode == 0, done.stderr
    manifest_path = out / MANIFEST
    assert str(manifest_path) in done.stdout
    assert "Use custom file" in done.stdout and URL_BASE in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["teletype-gpt2.png", MANIFEST]

    manifest = json.loads(manifest_path.read_text())
    assert set(manifest) == {"imager", "os_list"}
    devices = manifest["imager"]["devices"]
    for device in devices:
        assert isinstance(device["name"], str) and device["name"]
        assert isinstance(device["description"], str) and device["description"]
        assert device["tags"] and all(isinstance(t, str) for t in device["tags"])
    assert "Raspberry Pi Zero 2 W" in {d["name"] for d in devices}
    offered = {tag for device in devices for tag in device["tags"]}

    [entry] = manifest["os_list"]
    for key, kind in REQUIRED.items():
        assert isinstance(entry[key], kind) and not isinstance(entry[key], bool), key
    assert entry["name"] == "Teletype GPT-2"
    assert entry["init_format"] == "systemd"
    assert entry["architecture"] == "armv8"
    assert "website" not in entry
    assert entry["extract_size"] == raw.stat().st_size
    assert entry["extract_sha256"] == sha256(raw)
    assert entry["image_download_size"] == xz.stat().st_size
    assert entry["image_download_sha256"] == sha256(xz)
    for key in ("extract_sha256", "image_download_sha256"):
        assert re.fullmatch(r"[0-9a-f]{64}", entry[key]), key
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["release_date"])
    assert abs((date.fromisoformat(entry["release_date"]) - date.today()).days) <= 1
    assert entry["devices"] and all(isinstance(t, str) for t in entry["devices"])
    assert set(entry["devices"]) <= offered

    # Absolute, where the files will be published: Imager resolves no relative URL.
    assert entry["url"] == f"{URL_BASE}/{xz.name}"
    assert entry["icon"] == f"{URL_BASE}/teletype-gpt2.png"
    png = (out / "teletype-gpt2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 40
    assert int.from_bytes(png[20:24], "big") == 40


def test_urls_date_and_website_given(card, tmp_path):
    _, xz = card
    out = tmp_path / "repo"
    done = imager_repo(
        xz,
        "--out",
        out,
        "--url",
        "https://example.org/teletype-gpt2.img.xz",
        "--icon-url",
        "https://example.org/teletype-gpt2.png",
        "--release-date",
        "2025-06-01",
        "--website",
        "https://example.org/teletype",
    )
    assert done.returncode == 0, done.stderr
    [entry] = json.loads((out / MANIFEST).read_text())["os_list"]
    assert entry["url"] == "https://example.org/teletype-gpt2.img.xz"
    assert entry["icon"] == "https://example.org/teletype-gpt2.png"
    assert entry["release_date"] == "2025-06-01"
    assert entry["website"] == "https://example.org/teletype"


def test_a_local_manifest_only_when_asked_and_named_so(card, tmp_path):
    _, xz = card
    out = tmp_path / "repo"
    done = imager_repo(xz, "--out", out)
    assert done.returncode == 2 and "--url-base" in done.stderr and "--local" in done.stderr
    assert not out.exists() or list(out.iterdir()) == []
    done = imager_repo(xz, "--out", out, "--local")
    assert done.returncode == 0, done.stderr
    local = out / "teletype-gpt2-local.rpi-imager-manifest"
    assert str(local) in done.stdout and "this computer only" in done.stdout
    assert not (out / MANIFEST).exists()
    [entry] = json.loads(local.read_text())["os_list"]
    assert file_of(entry["url"]) == xz.resolve()
    assert file_of(entry["icon"]) == (out / "teletype-gpt2.png").resolve()


@pytest.mark.parametrize("option", ["--url", "--icon-url", "--url-base"])
@pytest.mark.parametrize("url", ["images/teletype-gpt2.img.xz", "file:///srv/teletype-gpt2.img.xz"])
def test_relative_or_file_url_refused(card, tmp_path, option, url):
    _, xz = card
    out = tmp_path / "repo"
    done = imager_repo(xz, "--out", out, option, url)
    assert done.returncode != 0
    assert option in done.stderr and "not an http(s) address" in done.stderr, done.stderr
    assert not (out / MANIFEST).exists()


LACKS = [
    pytest.param({"root_files": [f for f in ROOT_FILES if f != gone]}, gone, id=Path(gone).name)
    for gone in ROOT_FILES
]
LACKS += [
    pytest.param(
        {"config": CONFIG.replace("auto_initramfs=1", "")}, "auto_initramfs=1", id="no-initramfs"
    ),
    pytest.param({"config": "#auto_initramfs=1\n"}, "auto_initramfs=1", id="commented"),
    pytest.param({"config": "[cm4]\nauto_initramfs=1\n"}, "auto_initramfs=1", id="cm4-only"),
    pytest.param({"cmdline": None}, "cmdline.txt", id="no-cmdline"),
    pytest.param({"fstab": None}, "/etc/fstab", id="no-fstab"),
    pytest.param(
        {"fstab": FSTAB.replace("/boot/firmware", "/boot")}, "/boot/firmware", id="fstab-old-boot"
    ),
    pytest.param({"boot_files": BOOT_FILES[:3]}, "initramfs_2712", id="no-initramfs_2712"),
    pytest.param({"boot_files": BOOT_FILES[1:]}, "kernel8.img", id="no-kernel8"),
]


@pytest.mark.parametrize(("card_args", "named"), LACKS)
def test_card_lacking_a_piece_is_refused(tmp_path, card_args, named):
    _, xz = make_card(tmp_path / "card", **card_args)
    out = tmp_path / "repo"
    done = imager_repo(xz, "--out", out, "--url-base", URL_BASE)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert list(out.iterdir()) == []  # no manifest, no icon, no leftover image


def test_check_only_reads_an_uncompressed_card_and_writes_nothing(card, tmp_path):
    raw, _ = card
    done = imager_repo("--check-only", raw)
    assert done.returncode == 0 and "has what Imager's systemd customisation runs" in done.stdout
    lacking, _ = make_card(tmp_path / "lacking", root_files=ROOT_FILES[1:])
    done = imager_repo("--check-only", lacking)
    assert done.returncode == 1 and ROOT_FILES[0] in done.stderr
    assert not list((tmp_path / "lacking").glob("*.rpi-imager-manifest"))
