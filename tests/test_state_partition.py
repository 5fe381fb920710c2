"""The first boot's state partition (stage-teletype/04-read-only/files/
teletype-state-partition), run for real on small card images as pi-gen lays them
out: a FAT boot partition and an ext4 root (mkfs.vfat and mtools, mke2fs -d),
nothing after the root. No root privileges and no loop devices: the script works
on an image file as on a card. What it must leave: partition 3 in the card's
tail, ext4 with data=journal, the root grown up to it and still clean; a second
run writes nothing; a card without room is refused untouched; a power cut at
any step is finished by the next run; Raspberry Pi OS's own grow then changes
nothing; and the initramfs runs it before that grow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.testing.tools import TOOL_PATH, system_tools

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "pi-gen-config" / "stage-teletype" / "04-read-only"
SCRIPT = STAGE / "files" / "teletype-state-partition"
OVERLAY_SCRIPT = STAGE / "files" / "teletype-read-only"
# Each tool the tests (or the script) run, and the Debian package that has it.
TOOLS = {
    "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mtype": "mtools",
    "mke2fs": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
}
MIB = 1 << 20
SECTOR = 512
STATE = 256 * MIB
ALIGN = 4 * MIB
BOOT_START, BOOT_SIZE = 8 * MIB, 32 * MIB  # pi-gen aligns to 8 MiB
ROOT_START, ROOT_SIZE = 40 * MIB, 64 * MIB
DISK_ID = "0x7e1e7e33"
FSTAB = (
    "proc            /proc           proc    defaults          0       0\n"
    "PARTUUID=7e1e7e33-01  /boot/firmware  vfat    defaults          0       2\n"
    "PARTUUID=7e1e7e33-02  /               ext4    defaults,noatime  0       1\n"
)
CMDLINE = "console=tty1 root=PARTUUID=7e1e7e33-02 rootfstype=ext4 fsck.repair=yes rootwait\n"


def tools() -> dict[str, str]:
    return system_tools(TOOLS)


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": TOOL_PATH, **extra}


def make_card(where: Path, card_mib: int = 400, root_mib: int = 64) -> Path:
    """A pi-gen style card image, sparse: card_mib in all, the root root_mib."""
    run = tools()
    where.mkdir(parents=True, exist_ok=True)
    tree = where / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "fstab").write_text(FSTAB)
    (tree / "etc" / "hostname").write_text("teletype\n")
    boot = where / "boot.img"
    subprocess.run([run["mkfs.vfat"], "-n", "bootfs", "-C", boot, str(BOOT_SIZE // 1024)],
                   check=True, capture_output=True)  # fmt: skip
    (where / "cmdline.txt").write_text(CMDLINE)
    subprocess.run([run["mcopy"], "-i", boot, where / "cmdline.txt", "::/"], check=True)
    card = where / "card.img"
    with card.open("wb") as f:
        f.truncate(card_mib * MIB)
    table = f"label: dos\nlabel-id: {DISK_ID}\n"
    table += f"start={BOOT_START // SECTOR}, size={BOOT_SIZE // SECTOR}, type=c\n"
    table += f"start={ROOT_START // SECTOR}, size={root_mib * MIB // SECTOR}, type=83\n"
    subprocess.run([run["sfdisk"], "--quiet", card], input=table, text=True, check=True)
    with card.open("r+b") as f:
        f.seek(BOOT_START)
        f.write(boot.read_bytes())
    subprocess.run([run["mke2fs"], "-q", "-t", "ext4", "-b", "4096", "-L", "rootfs", "-d", tree,
                    "-E", f"offset={ROOT_START}", card, f"{root_mib * MIB // 4096}"],
                   check=True, capture_output=True)  # fmt: skip
    return card


def step(card: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", SCRIPT, card], capture_output=True, text=True,
                          env=environment(**env), check=False)  # fmt: skip


def partitions(card: Path) -> list[dict]:
    out = subprocess.run([tools()["sfdisk"], "--json", card], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return json.loads(out)["partitiontable"]["partitions"]


def disk_id(card: Path) -> str:
    out = subprocess.run([tools()["sfdisk"], "--json", card], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return json.loads(out)["partitiontable"]["id"]


def superblock(card: Path, start: int) -> dict[str, str]:
    """dumpe2fs -h of the file system at byte start, field by field."""
    out = subprocess.run([tools()["dumpe2fs"], "-h", f"{card}?offset={start}"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}


def clean(card: Path, start: int) -> subprocess.CompletedProcess[str]:
    """e2fsck -fn: a full check that changes nothing; status 0 when clean."""
    return subprocess.run([tools()["e2fsck"], "-fn", f"{card}?offset={start}"],
                          capture_output=True, text=True, check=False)  # fmt: skip


def debugfs(card: Path, start: int, request: str) -> str:
    return subprocess.run([tools()["debugfs"], "-R", request, f"{card}?offset={start}"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def fs_bytes(card: Path, start: int) -> int:
    fields = superblock(card, start)
    return int(fields["Block count"]) * int(fields["Block size"])


def assert_finished(card: Path, card_mib: int = 400) -> None:
    """What a card must be once the step is done."""
    boot, root, state = partitions(card)
    assert disk_id(card) == DISK_ID  # every PARTUUID is kept
    assert (boot["start"], boot["size"], boot["type"]) == (BOOT_START // SECTOR,
                                                           BOOT_SIZE // SECTOR, "c")  # fmt: skip
    state_start, state_end = state["start"] * SECTOR, (state["start"] + state["size"]) * SECTOR
    # In the tail: 4 MiB aligned, 256 MiB, less than one alignment from the end.
    assert state["type"] == "83" and state["size"] * SECTOR == STATE
    assert state_start % ALIGN == 0 and 0 <= card_mib * MIB - state_end < ALIGN
    # The root starts where it did and reaches the state partition.
    assert root["start"] * SECTOR == ROOT_START
    assert (root["start"] + root["size"]) * SECTOR == state_start
    # The state partition: ext4 with a journal, data=journal by default, named.
    fields = superblock(card, state_start)
    assert fields["Filesystem volume name"] == "teletype-state"
    assert "has_journal" in fields["Filesystem features"].split()
    assert "journal_data" in fields["Default mount options"].split()
    assert fields["Total journal size"] == "16M"
    assert fs_bytes(card, state_start) == STATE
    listing = debugfs(card, state_start, "ls -l /")
    assert re.search(r"40755 .* gpt2\s", listing) and re.search(r"40755 .* network\s", listing)
    assert clean(card, state_start).returncode == 0
    # The root: grown to its partition, clean, its files as they were.
    assert fs_bytes(card, ROOT_START) == root["size"] * SECTOR
    assert clean(card, ROOT_START).returncode == 0, clean(card, ROOT_START).stdout
    assert debugfs(card, ROOT_START, "cat /etc/fstab") == FSTAB
    # The boot partition untouched.
    mtype = subprocess.run([tools()["mtype"], "-i", f"{card}@@{BOOT_START}", "::/cmdline.txt"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert mtype.replace("\r\n", "\n") == CMDLINE


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    card = make_card(tmp_path_factory.mktemp("made"))
    return card, step(card)


def test_the_state_partition_is_made_in_the_cards_tail(made):
    card, done = made
    assert done.returncode == 0, done.stdout + done.stderr
    assert_finished(card)


def test_a_second_run_writes_nothing(made):
    card, _ = made
    before = sha256(card)
    again = step(card)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "state partition already" in again.stdout
    assert sha256(card) == before


@pytest.mark.parametrize(
    ("card_mib", "root_mib"),
    [(40 + 64 + 200, 64), (400, 400 - 40)],
    ids=["a card with 200 MiB after the root", "a root grown to the end already"],
)
def test_no_room_is_refused_and_nothing_written(tmp_path, card_mib, root_mib):
    card = make_card(tmp_path, card_mib=card_mib, root_mib=root_mib)
    before = sha256(card)
    done = step(card)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "too small" in done.stdout and "nothing written" in done.stdout
    assert sha256(card) == before


@pytest.mark.parametrize("cut", ["after-mkfs", "after-table"])
def test_a_power_cut_is_finished_by_the_next_run(tmp_path, cut):
    card = make_card(tmp_path)
    cut_short = step(card, TELETYPE_STATE_CUT=cut)
    assert cut_short.returncode == 75, cut_short.stdout + cut_short.stderr
    # What the cut leaves boots: the root clean, at its size, within its partition.
    table = partitions(card)
    assert len(table) == (2 if cut == "after-mkfs" else 3)
    assert clean(card, ROOT_START).returncode == 0
    assert fs_bytes(card, ROOT_START) == ROOT_SIZE <= table[1]["size"] * SECTOR
    # The next boot is the first boot again, and runs the step again.
    done = step(card)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_finished(card)


def test_old_data_in_the_cards_tail_is_overwritten(tmp_path):
    # As a cut in the middle of mke2fs leaves it, or a card used before.
    card = make_card(tmp_path)
    with card.open("r+b") as f:
        for offset in range(144 * MIB, 400 * MIB, 8 * MIB):
            f.seek(offset)
            f.write(os.urandom(64 * 1024))
    done = step(card)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_finished(card)


def test_a_third_partition_not_ours_is_left_alone(tmp_path):
    card = make_card(tmp_path)
    run = tools()
    subprocess.run([run["sfdisk"], "--quiet", "--append", card], input="start=300MiB, type=83\n",
                   text=True, check=True)  # fmt: skip
    subprocess.run([run["mke2fs"], "-q", "-t", "ext4", "-L", "data", "-E", f"offset={300 * MIB}",
                    card, "16M"], check=True, capture_output=True)  # fmt: skip
    before = sha256(card)
    done = step(card)
    assert done.returncode == 1 and "not the state partition" in done.stdout
    assert sha256(card) == before


def test_raspberry_pi_os_grow_then_changes_nothing(made):
    # raspberrypi-sys-mods' first boot (local-premount/firstboot) runs this to
    # grow the root to the end of the card; partition 3 stands in its way.
    parted = shutil.which("parted", path=TOOL_PATH)
    if parted is None:
        pytest.skip("parted is not on this machine (Debian package parted)")
    card, _ = made
    before = sha256(card)
    end = card.stat().st_size // SECTOR - 1
    command = [parted, "-m", card, "u", "s", "resizepart", "2", str(end)]
    grow = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert grow.returncode != 0 and "overlapping" in grow.stderr
    assert sha256(card) == before


def test_the_initramfs_runs_it_before_raspberry_pi_os_grows_the_root():
    # initramfs-tools orders a folder's scripts by tsort of (prereq, script)
    # pairs, each script paired with itself; without prerequisites either way,
    # tsort gives them in sorted order.
    name = re.search(r"scripts/local-premount/(\S+?)\"", (STAGE / "00-run.sh").read_text())
    assert name is not None
    ours = name.group(1)
    prereqs = subprocess.run(["sh", STAGE / "files" / "teletype-state", "prereqs"],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert prereqs == []
    pairs = f"{ours} {ours}\nfirstboot firstboot\n"
    order = subprocess.run(["tsort"], input=pairs, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    assert order == [ours, "firstboot"]


def test_fstab_gets_the_state_partition_once(tmp_path, made):
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB.rstrip("\n"))  # no newline at its end
    for _ in range(2):
        subprocess.run(["sh", OVERLAY_SCRIPT, "fstab", fstab], check=True)
    lines = fstab.read_text().splitlines()
    assert lines[:3] == FSTAB.splitlines()
    state = [line.split() for line in lines[3:]]
    assert state == [
        ["LABEL=teletype-state", "/var/lib/teletype", "ext4", "defaults,noatime,data=journal",
         "0", "2"],
        ["/var/lib/teletype/gpt2", "/var/lib/teletype-gpt2", "none", "bind", "0", "0"],
        ["/var/lib/teletype/network", "/var/lib/teletype-network", "none", "bind", "0", "0"],
    ]  # fmt: skip
    # The label fstab names is the one the partition has.
    card, _ = made
    start = partitions(card)[2]["start"] * SECTOR
    assert f"LABEL={superblock(card, start)['Filesystem volume name']}" == state[0][0]


def loop_device(card: Path) -> str:
    """The card image as a block device (root only), or a skip saying why not."""
    losetup = shutil.which("losetup", path=TOOL_PATH)
    if os.geteuid() != 0 or losetup is None:
        pytest.skip("a loop device needs root and losetup (Debian package mount)")
    made = subprocess.run([losetup, "--show", "-f", "-P", card], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    return made.stdout.strip()


def test_on_a_block_device_as_on_the_card(tmp_path):
    # The branch the Pi takes: the card's own devices, the root grown through
    # its partition's device (the one the kernel mounts).
    card = make_card(tmp_path)
    device = loop_device(card)
    partx = shutil.which("partx", path=TOOL_PATH)
    try:
        assert partx is not None
        subprocess.run([partx, "-u", device], check=False, capture_output=True)
        subprocess.run([partx, "-a", device], check=False, capture_output=True)
        done = step(Path(device), TMPDIR=str(tmp_path))
        if done.returncode == 3:
            # A loop device without partition scanning (max_part=0) drops its
            # partitions when the table is re-read: as a kernel that has not
            # read the new table, the root is left; the next boot grows it.
            assert "has not read the new partition table" in done.stdout
            subprocess.run([partx, "-a", device], check=True, capture_output=True)
            done = step(Path(device), TMPDIR=str(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        before = sha256(card)
        again = step(Path(device), TMPDIR=str(tmp_path))
        assert again.returncode == 0 and "the root fills partition 2" in again.stdout
        assert sha256(card) == before
    finally:
        subprocess.run([shutil.which("losetup", path=TOOL_PATH) or "losetup", "-d", device],
                       check=False)  # fmt: skip
    assert_finished(card)
