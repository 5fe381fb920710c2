#!/usr/bin/env python3
"""A Raspberry Pi Imager repository for the Teletype GPT-2 card.

    imager-repo.py IMAGE.img.xz --out DIR (--url-base URL | --local)
                   [--url URL] [--icon-url URL] [--release-date YYYY-MM-DD] [--website URL]
    imager-repo.py --check-only DISK.img

Raspberry Pi Imager 2.x offers its OS customisation (user, Wi-Fi, SSH,
hostname, keyboard, time zone) only for an image that a repository lists with
an "init_format". This writes such a repository for our card, Raspberry Pi OS
Lite (Bookworm, arm64) as pi-gen builds it with our stage:
DIR/teletype-gpt2.rpi-imager-manifest, with its own device list, and
DIR/teletype-gpt2.png, the icon, drawn here.

Bookworm cards take the "systemd" format: Imager writes firstrun.sh to the boot
partition and appends systemd.run=/boot/firstrun.sh (and a reboot when it
succeeds) to cmdline.txt; at boot the initramfs's imager_fixup rewrites /boot/
to /boot/firmware/, systemd-run-generator makes the unit that runs the script,
and the script calls raspberrypi-sys-mods' imager_custom and userconf-pi's
userconf. Before naming that format this proves the image has each piece,
reading its partitions without mounting anything (mtools for the FAT, debugfs
for the ext4; no root needed). If one is missing it says which, and why
Imager needs it, and writes nothing.

Sizes and SHA-256 sums are of the .xz (what Imager downloads) and of the image
inside it (what Imager writes and verifies). Imager resolves no relative URLs,
so every URL is absolute: --url-base names where the image and the icon will
be published (a release's download address, say), and the manifest works for
anyone who downloads it. --local instead writes file:// URIs that work on this
machine only, under a name that says so: teletype-gpt2-local.rpi-imager-manifest.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from urllib.parse import urlsplit

MANIFEST = "teletype-gpt2.rpi-imager-manifest"
LOCAL_MANIFEST = "teletype-gpt2-local.rpi-imager-manifest"
ICON = "teletype-gpt2.png"
SECTOR = 512
FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
LINUX_TYPE = 0x83
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PACKAGES = {"xz": "xz-utils", "mtype": "mtools", "debugfs": "e2fsprogs"}

# What the root file system must hold for Imager's "systemd" format, and why.
ROOT_NEEDS = {
    "/usr/lib/raspberrypi-sys-mods/imager_custom": (
        "firstrun.sh calls it to set the hostname, SSH, Wi-Fi, keyboard and time zone"
    ),
    "/usr/lib/userconf-pi/userconf": "firstrun.sh calls it to create the user given in Imager",
    "/usr/share/initramfs-tools/scripts/local-bottom/imager_fixup": (
        "the initramfs runs it to point Imager's /boot/firstrun.sh at /boot/firmware/"
    ),
    "/usr/lib/systemd/system-generators/systemd-run-generator": (
        "it turns cmdline.txt's systemd.run=/boot/firstrun.sh into the unit that runs it"
    ),
}
# And on the boot partition: config.txt's auto_initramfs=1 and cmdline.txt.
INITRAMFS_WHY = "without it the firmware loads no initramfs, so imager_fixup never runs"
CMDLINE_WHY = "Imager appends the systemd.run= that starts firstrun.sh to it"
FSTAB_WHY = (
    "imager_fixup rewrites firstrun.sh's /boot/ to /boot/firmware/, where fstab must mount "
    "the boot partition"
)
# The kernels the firmware starts on the boards listed, and the initramfs that
# auto_initramfs=1 loads with each (imager_fixup runs in it).
KERNELS = {"kernel8.img": "initramfs8", "kernel_2712.img": "initramfs_2712"}

DEVICES = [
    ("Raspberry Pi 5", "Raspberry Pi 5, 500 and Compute Module 5", ["pi5-64bit"]),
    ("Raspberry Pi 4", "Raspberry Pi 4, 400 and Compute Module 4", ["pi4-64bit"]),
    ("Raspberry Pi 3", "Raspberry Pi 3 and Compute Module 3 (64-bit)", ["pi3-64bit"]),
    ("Raspberry Pi Zero 2 W", "The board the Teletype GPT-2 appliance is sized for", ["pi3-64bit"]),
]


class Refused(Exception):
    """The image lacks what the "systemd" customisation needs (one line per lack)."""


def tool(name: str) -> str:
    found = shutil.which(name, path=TOOL_PATH)
    if found is None:
        sys.exit(f"imager-repo: {name} not found (Debian package {PACKAGES[name]})")
    return found


def absolute_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an http(s) address: Imager resolves no relative URLs, and a "
        "file:// one works on one machine only (--local writes those)"
    )


def iso_date(text: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD")
    datetime.date.fromisoformat(text)  # a real day (ValueError is reported by argparse)
    return text


def decompress(xz_file: Path, into: Path) -> tuple[int, str]:
    """Stream `xz -dc` into a file; its size and SHA-256."""
    digest, size = hashlib.sha256(), 0
    with into.open("wb") as out:
        proc = subprocess.Popen([tool("xz"), "-dc", str(xz_file)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        while block := proc.stdout.read(1 << 20):
            digest.update(block)
            out.write(block)
            size += len(block)
        if proc.wait() != 0:
            sys.exit(f"imager-repo: xz could not decompress {xz_file}")
    return size, digest.hexdigest()


def partitions(image: Path) -> tuple[int, int]:
    """Byte offsets of partition 1 (FAT boot) and 2 (ext4 root) from the MBR."""
    with image.open("rb") as f:
        mbr = f.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise Refused(["no MBR partition table: Imager's customisation needs a pi-gen card"])
    found = []
    for index, types, what in ((0, FAT_TYPES, "FAT boot"), (1, {LINUX_TYPE}, "Linux root")):
        kind, start, count = struct.unpack_from("<4xB3xII", mbr, 446 + 16 * index)
        if kind not in types or not count:
            raise Refused([f"partition {index + 1} is not a {what} partition (type {kind:#04x})"])
        found.append(start * SECTOR)
    return found[0], found[1]


def config_has_initramfs(text: str) -> bool:
    """auto_initramfs=1 where it applies to every board (before any filter, or under [all])."""
    every_board = True
    for raw in text.splitlines():
        line = re.sub(r"\s+", "", raw.split("#", 1)[0])
        if line.startswith("["):
            every_board = line.lower() == "[all]"
        elif every_board and line == "auto_initramfs=1":
            return True
    return False


def fstab_mounts_boot(text: str) -> bool:
    """A line that mounts a file system at /boot/firmware (pi-gen's, by PARTUUID)."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[1] == "/boot/firmware":
            return True
    return False


def check(image: Path) -> None:
    """Raise Refused with every piece of the "systemd" format the image lacks."""
    boot, root = partitions(image)
    mtype, debugfs = tool("mtype"), tool("debugfs")
    # mtools: take any FAT, not only one with DOS geometry; debugfs: no pager.
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "DEBUGFS_PAGER": "__none__"}

    def run(*command: str) -> tuple[int, str, str]:
        done = subprocess.run(command, capture_output=True, env=env)
        return (
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def fat(name: str) -> str | None:
        rc, text, _ = run(mtype, "-i", f"{image}@@{boot}", f"::{name}")
        return text if rc == 0 else None

    def ext4(path: str) -> bool:  # debugfs says "File not found by ext2_lookup" yet exits 0
        rc, out, err = run(debugfs, "-R", f"stat {path}", f"{image}?offset={root}")
        return rc == 0 and "Inode:" in out and "File not found" not in out + err

    def ext4_text(path: str) -> str | None:
        if not ext4(path):
            return None
        rc, out, _ = run(debugfs, "-R", f"cat {path}", f"{image}?offset={root}")
        return out if rc == 0 else None

    if not ext4("/"):
        raise Refused(["partition 2 is not an ext4 file system debugfs can read"])
    lacks = [f"root file system has no {p}: {why}" for p, why in ROOT_NEEDS.items() if not ext4(p)]
    config = fat("config.txt")
    if config is None:
        lacks.append(f"boot partition has no config.txt, so no auto_initramfs=1: {INITRAMFS_WHY}")
    elif not config_has_initramfs(config):
        lacks.append(f"config.txt has no auto_initramfs=1 for every board: {INITRAMFS_WHY}")
    if fat("cmdline.txt") is None:
        lacks.append(f"boot partition has no cmdline.txt: {CMDLINE_WHY}")
    for kernel, initramfs in KERNELS.items():
        for name, why in ((kernel, "the firmware starts it"), (initramfs, INITRAMFS_WHY)):
            if fat(name) is None:
                lacks.append(f"boot partition has no {name} (for {kernel}): {why}")
    fstab = ext4_text("/etc/fstab")
    if fstab is None:
        lacks.append(f"root file system has no /etc/fstab: {FSTAB_WHY}")
    elif not fstab_mounts_boot(fstab):
        lacks.append(f"/etc/fstab has no line for /boot/firmware: {FSTAB_WHY}")
    if lacks:
        raise Refused(lacks)


def icon_png() -> bytes:
    """40x40 RGBA: a strip of eight-level paper tape punched with "TELETYPE G"."""
    word, paper, hole = b"TELETYPE G", (246, 236, 200, 255), (40, 40, 48, 255)

    def pixel(x: int, y: int) -> tuple[int, ...]:
        if not 5 <= y <= 34:
            return (0, 0, 0, 0)
        column, dx = divmod(x, 4)
        row, dy = divmod(y - 7, 3)
        if 0 <= row < 9 and dx in (1, 2) and dy < 2:
            bit = row if row < 4 else row - 1  # row 4 is the feed (sprocket) row
            if row == 4 or word[column] >> bit & 1:
                return hole
        return paper

    rows = b"".join(b"\0" + bytes(c for x in range(40) for c in pixel(x, y)) for y in range(40))

    png = b"\x89PNG\r\n\x1a\n"
    header = struct.pack(">IIBBBBB", 40, 40, 8, 6, 0, 0, 0)  # 8-bit RGBA
    for kind, data in ((b"IHDR", header), (b"IDAT", zlib.compress(rows, 9)), (b"IEND", b"")):
        png += (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )
    return png


def write_atomic(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="the card image, IMAGE.img.xz")
    parser.add_argument("--out", type=Path, help="folder for manifest and icon")
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="IMAGE is an uncompressed card: only say what it lacks for Imager (make boot-check)",
    )
    parser.add_argument(
        "--url-base",
        type=absolute_url,
        help="where the image and the icon will be published (http(s)://...)",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help=f"file:// URLs that work on this machine only, in {LOCAL_MANIFEST}",
    )
    parser.add_argument(
        "--url", type=absolute_url, help="the image's URL (default: --url-base/NAME)"
    )
    parser.add_argument(
        "--icon-url", type=absolute_url, help="the icon's URL (default: --url-base/ICON)"
    )
    parser.add_argument("--website", type=absolute_url, help="a page about the image")
    parser.add_argument(
        "--release-date",
        type=iso_date,
        default=datetime.date.today().isoformat(),
        help="default: today",
    )
    args = parser.parse_args(argv)
    if not args.image.is_file():
        parser.error(f"{args.image} is not a file")
    if args.check_only:
        try:
            check(args.image)
        except Refused as refused:
            for line in refused.args[0]:
                print(f"imager-repo: {args.image}: {line}", file=sys.stderr)
            return 1
        print(f"{args.image}: has what Imager's systemd customisation runs")
        return 0
    if args.out is None:
        parser.error("--out is needed (the folder for the manifest and the icon)")
    base = args.url_base.rstrip("/") if args.url_base else None
    if not args.local and not (base or (args.url and args.icon_url)):
        parser.error(
            "say where the files will be published, --url-base https://..., or give --local "
            "for a manifest that works on this computer only"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()

    with args.image.open("rb") as f:
        download_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    fd, name = tempfile.mkstemp(dir=out, prefix=".imager-repo.", suffix=".img")
    os.close(fd)
    try:
        extract_size, extract_sha256 = decompress(args.image, Path(name))
        check(Path(name))
    except Refused as refused:
        for line in refused.args[0]:
            print(f"imager-repo: {args.image}: {line}", file=sys.stderr)
        return 1
    finally:
        os.unlink(name)

    write_atomic(out / ICON, icon_png())
    entry = {
        "name": "Teletype GPT-2",
        "description": "Raspberry Pi OS Lite (Bookworm, 64-bit) with the Teletype GPT-2 appliance.",
        "icon": args.icon_url or (f"{base}/{ICON}" if base else (out / ICON).as_uri()),
        "url": args.url or (f"{base}/{args.image.name}" if base else args.image.resolve().as_uri()),
        "extract_size": extract_size,
        "extract_sha256": extract_sha256,
        "image_download_size": args.image.stat().st_size,
        "image_download_sha256": download_sha256,
        "release_date": args.release_date,
        "devices": ["pi5-64bit", "pi4-64bit", "pi3-64bit"],
        "init_format": "systemd",
        **({"website": args.website} if args.website else {}),
        "architecture": "armv8",
    }
    keys = ("name", "description", "tags")
    devices = [{**dict(zip(keys, d, strict=True)), "matching_type": "inclusive"} for d in DEVICES]
    manifest = {"imager": {"devices": devices}, "os_list": [entry]}
    name = LOCAL_MANIFEST if args.local and not base else MANIFEST
    write_atomic(out / name, (json.dumps(manifest, indent=2) + "\n").encode())
    print(out / name)
    if name == LOCAL_MANIFEST:
        print("Its URLs are file:// ones: it works on this computer only.")
    else:
        print(f"Publish {args.image.name} and {ICON} at {entry['url'].rsplit('/', 1)[0]}/ "
              "(the manifest names them there).")  # fmt: skip
    print(
        "Open Raspberry Pi Imager → App options → Content repository → Use custom file, "
        "and pick this file."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
