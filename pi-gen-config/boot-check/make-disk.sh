#!/bin/bash
# An SD card for the emulated Pi, from the root file system `make
# image-check` left, laid out as Raspberry Pi OS lays out its card:
#
#   make-disk.sh ROOTFS TELETYPE_TOML OUT_DIR
#
# OUT_DIR/disk.img: an MBR disk, partition 1 a FAT boot partition (config.txt,
# cmdline.txt and TELETYPE_TOML as teletype.toml) mounted at /boot/firmware,
# partition 2 the ext4 root, partition 3 the appliance's state (ext4,
# data=journal, at /var/lib/teletype; STATE_MIB, 256 by default), all found
# by PARTUUID as pi-gen's fstab does.
# OUT_DIR/vmlinuz and OUT_DIR/initrd.img: the root's own Debian kernel and
# initramfs, for QEMU to start (it stands in for the Pi's firmware).
#
# The only things added to the root are what a real card has that a
# debootstrapped directory lacks (fstab, a machine id left for first boot,
# the first user, SSH and NetworkManager's state as pi-gen leaves them)
# and the boot check's agent (guest/), which is how the host looks inside.
# No loop mounts: mkfs.ext4 -d fills the root, mtools the FAT.
set -euo pipefail

rootfs=$(cd "${1:?usage: make-disk.sh ROOTFS TELETYPE_TOML OUT_DIR}" && pwd)
toml=${2:?usage: make-disk.sh ROOTFS TELETYPE_TOML OUT_DIR}
out=${3:?usage: make-disk.sh ROOTFS TELETYPE_TOML OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# A fixed disk identifier, as pi-gen gives each image one.
disk_id=7e1e7e33
# BOOT_MIB: the FAT partition's size; BOOT_EXTRA: a folder whose files go onto
# it too (a user's GGUF copied beside teletype.toml, for make board-fit).
boot_mib=${BOOT_MIB:-64}
boot_extra=${BOOT_EXTRA:-}
mkdir -p "$out"
# The state partition as the image's first boot makes it
# (stage-teletype/04-read-only/files/teletype-state-partition): 256 MiB, 4 KiB
# blocks, every inode table and the journal written at mkfs, so that what the
# card is measured to write (make sd-writes) is what the image's card writes.
state_mib=${STATE_MIB:-256}
staging="$out/root"
state="$out/state"
rm -rf "$staging" "$state" "$out/disk.img" "$out/boot.img" "$out/root.img" "$out/state.img"

cp -a "$rootfs" "$staging"
# What was in /boot/firmware goes onto the FAT partition instead.
boot_files=("$staging"/boot/firmware/*)
mkdir -p "$out/bootfs"
rm -rf "$out/bootfs"/*
cp "${boot_files[@]}" "$out/bootfs/"
cp "$toml" "$out/bootfs/teletype.toml"
if [ -n "$boot_extra" ]; then
	cp "$boot_extra"/* "$out/bootfs/"
fi
rm -rf "${staging:?}"/boot/firmware/*

# The units' state directories live on the state partition, bound where
# their StateDirectory= is; whatever the root had there goes with them.
mkdir -p "$state"
for dir in teletype-gpt2 teletype-network; do
	mkdir -p "$staging/var/lib/$dir"
	cp -a "$staging/var/lib/$dir" "$state/${dir#teletype-}"
	rm -rf "${staging:?}/var/lib/$dir"/*
done
mkdir -p "$staging/var/lib/teletype"

# data=journal: a write of the history or the job journal reaches the card
# whole or not at all (the files are replaced by rename, and the rename and
# the data are in the same journal transaction).
cat >"$staging/etc/fstab" <<FSTAB
proc            /proc           proc    defaults          0       0
PARTUUID=$disk_id-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$disk_id-02  /               ext4    defaults,noatime  0       1
PARTUUID=$disk_id-03  /var/lib/teletype  ext4  defaults,noatime,data=journal  0  2
/var/lib/teletype/gpt2     /var/lib/teletype-gpt2     none  bind  0  0
/var/lib/teletype/network  /var/lib/teletype-network  none  bind  0  0
FSTAB
echo teletype >"$staging/etc/hostname"
# Empty, as on a fresh card: systemd makes one at first boot.
: >"$staging/etc/machine-id"
# NetworkManager's Wi-Fi switch off, as pi-gen's stage2 leaves it on an image
# built without WPA_COUNTRY (ours: the country is the user's to set).
mkdir -p "$staging/var/lib/NetworkManager"
printf '[main]\nWirelessEnabled=false\n' >"$staging/var/lib/NetworkManager/NetworkManager.state"
# SSH off, as pi-gen's stage2 leaves it with ENABLE_SSH=0 (ours): Debian's
# package enabled it when it was installed.
systemctl --root="$staging" disable ssh.service >/dev/null 2>&1 || true
# The first user, uid 1000, as pi-gen's stage1 makes it (no password: Imager
# or userconf.txt gives it one); [network] ssh_key goes to this user.
if ! grep -q '^maker:' "$staging/etc/passwd"; then
	useradd --root "$staging" --uid 1000 --user-group --create-home --shell /bin/bash maker
fi

install -D -m 755 "$here/guest/agent.py" "$staging/usr/local/lib/boot-check/agent.py"
install -m 644 "$here/guest/boot-check-agent.service" "$staging/etc/systemd/system/"
mkdir -p "$staging/etc/systemd/system/sysinit.target.wants"
ln -sf /etc/systemd/system/boot-check-agent.service \
	"$staging/etc/systemd/system/sysinit.target.wants/boot-check-agent.service"

kernel=$(find "$staging/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -1)
initrd=$(find "$staging/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
	echo "make-disk: no kernel or initramfs in $rootfs/boot" >&2
	exit 1
fi
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

# The root: its contents plus room to work (a journal, the state, logs).
used_mib=$(du -sm "$staging" | cut -f1)
root_mib=$((used_mib + used_mib / 4 + 512))
mkfs.ext4 -q -L rootfs -d "$staging" "$out/root.img" "${root_mib}M" >/dev/null
mkfs.ext4 -q -b 4096 -L teletype-state -d "$state" \
	-E lazy_itable_init=0,lazy_journal_init=0 "$out/state.img" "${state_mib}M" >/dev/null
mkfs.vfat -n bootfs -C "$out/boot.img" $((boot_mib * 1024)) >/dev/null
mcopy -i "$out/boot.img" -s "$out/bootfs"/* ::/

truncate -s $((1 + boot_mib + root_mib + state_mib))M "$out/disk.img"
sfdisk --quiet "$out/disk.img" <<TABLE
label: dos
label-id: 0x$disk_id
start=1MiB, size=${boot_mib}MiB, type=c
start=$((1 + boot_mib))MiB, size=${root_mib}MiB, type=83
start=$((1 + boot_mib + root_mib))MiB, size=${state_mib}MiB, type=83
TABLE
dd if="$out/boot.img" of="$out/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$out/root.img" of="$out/disk.img" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
dd if="$out/state.img" of="$out/disk.img" bs=1M seek=$((1 + boot_mib + root_mib)) \
	conv=notrunc,sparse status=none
rm -rf "$staging" "$state" "$out/boot.img" "$out/root.img" "$out/state.img"
echo "$disk_id"
