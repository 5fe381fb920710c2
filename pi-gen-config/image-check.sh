#!/bin/bash
# `make image-check`: prove the image's own stage installs a working appliance,
# here, without building an SD-card image.
#
#   image-check.sh WHEEL_DIR
#   image-check.sh --base      (step 3's cached base root alone: it needs no
#                               wheels, so CI makes it while they build)
#
# 1. shellcheck on every script of the stage and the firmware;
# 2. the pi-gen config parsed, its required settings checked;
# 3. a real install: Debian bookworm for the Pi's architecture, arm64
#    (debootstrap through qemu-user-static and binfmt_misc, cached with the
#    stage's Debian packages and what a booted Pi has: a kernel, an
#    init, udev), then the
#    stage's sub-stages run the way pi-gen runs them (NN-run.sh on the
#    host with ROOTFS_DIR, NN-run-chroot.sh inside the chroot), with the
#    wheels built here and no package index (PIP_NO_INDEX);
# 4. checks in the result: the user and its groups, `teletype --version`,
#    the units enabled and `systemd-analyze verify --root` clean, the
#    serial console gone from cmdline.txt and the UART in config.txt, the
#    model present and generating.
#
# The root file system it leaves in build/image-check/rootfs is what
# `make boot-check` boots. Needs root (chroot, mounts), debootstrap,
# qemu-user-static and ShellCheck. The Debian mirror is the one this
# machine's apt uses.
set -euo pipefail
# chroot, debootstrap and update-binfmts live in sbin, not on every root's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
stage="$here/stage-teletype"
base_only=
if [ "${1:-}" = --base ]; then base_only=1; else
	wheels=$(cd "${1:?usage: image-check.sh WHEEL_DIR | --base}" && pwd)
fi
cache="${TELETYPE_GPT2_CACHE:-$HOME/.cache/teletype-gpt2}/image-check"
work="$repo/build/image-check"
release=bookworm
arch=arm64
failures=0

say() { printf '\n== %s\n' "$*"; }
pass() { printf '   ok    %s\n' "$*"; }
fail() {
	printf '   FAIL  %s\n' "$*"
	failures=$((failures + 1))
}
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@" >"$work/last.log" 2>&1; then pass "$what"; else
		fail "$what"
		sed 's/^/         /' "$work/last.log" | tail -20
	fi
}

[ "$(id -u)" = 0 ] || {
	echo "image-check: needs root (it uses chroot and mounts)" >&2
	exit 1
}
mkdir -p "$cache" "$work"

if [ -z "$base_only" ]; then
# --- 1. shellcheck ---------------------------------------------------------
say "shellcheck"
scripts=("$stage"/prerun.sh "$stage"/*/*.sh "$here"/*.sh "$here"/boot-check/*.sh "$repo"/firmware/*.sh)
check "${#scripts[@]} scripts" shellcheck -s bash "${scripts[@]}"
check "the initramfs's read-only root and state partition (POSIX sh)" shellcheck -s sh \
	"$stage"/04-read-only/files/teletype-read-only* "$stage"/04-read-only/files/teletype-state*
check "pi-gen config" shellcheck -s bash -e SC2034 "$here/config"

# --- 2. the pi-gen config --------------------------------------------------
say "pi-gen config"
check_config() {
	(
		set -u
		# shellcheck source=/dev/null
		. "$here/config"
		for name in IMG_NAME RELEASE TARGET_HOSTNAME FIRST_USER_NAME LOCALE_DEFAULT \
			TIMEZONE_DEFAULT ENABLE_SSH DEPLOY_COMPRESSION STAGE_LIST; do
			[ -n "${!name:-}" ] || {
				echo "$name is not set"
				exit 1
			}
		done
		# shellcheck disable=SC2153 # RELEASE comes from the config
		[ "$RELEASE" = "$release" ] || {
			echo "RELEASE=$RELEASE, but the stage is checked on $release"
			exit 1
		}
		[ "$DEPLOY_COMPRESSION" = xz ] || {
			echo "DEPLOY_COMPRESSION should be xz"
			exit 1
		}
		case " $STAGE_LIST " in *" stage-teletype "*) ;; *)
			echo "STAGE_LIST lacks stage-teletype"
			exit 1
			;;
		esac
		[ "$ENABLE_SSH" = 0 ] || {
			echo "SSH must be off by default"
			exit 1
		}
	)
}
check "required settings, RELEASE=$release, xz, SSH off, stage listed" check_config
fi

# --- 3. a root file system with the stage's packages (cached) --------------
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
packages=$(sed 's/#.*//' "$stage/00-system/00-packages" | xargs)
# What Raspberry Pi OS Lite has and debootstrap's minbase lacks, so that
# `make boot-check` can boot this root: an init, udev, a kernel (Debian's:
# the emulated board is QEMU's, not a Pi) with its initramfs, and fsck for
# the boot partition.
booting="systemd systemd-sysv udev kmod procps initramfs-tools dosfstools e2fsprogs"
kernel="linux-image-arm64"
# (base_recipe names how it is made, where that changes what it holds.)
base_recipe="initramfs-by-the-stage"
key=$(printf '%s %s %s %s %s %s' "$release" "$arch" "$packages" "$booting" "$kernel" "$base_recipe" |
	sha256sum | cut -c1-12)
base="$cache/rootfs-$release-$arch-$key.tar"
rootfs="$work/rootfs"

mounted=()
unmount_all() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
	mounted=()
}
trap unmount_all EXIT
mount_chroot() {
	local dir
	for dir in proc sys dev dev/pts; do
		mkdir -p "$rootfs/$dir"
		case $dir in
		proc) mount -t proc proc "$rootfs/proc" ;;
		*) mount --bind "/$dir" "$rootfs/$dir" ;;
		esac
		mounted+=("$rootfs/$dir")
	done
}

# Another architecture's programs run through qemu-user-static, which the
# kernel finds through binfmt_misc (registered with the F flag, so it works
# inside the chroot too).
foreign_arch() {
	[ "$arch" != "$(dpkg --print-architecture)" ] || return 0
	local qemu
	case $arch in arm64) qemu="qemu-aarch64" ;; *)
		echo "image-check: no emulator known for $arch" >&2
		return 1
		;;
	esac
	[ -e /proc/sys/fs/binfmt_misc/register ] ||
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	[ -e "/proc/sys/fs/binfmt_misc/$qemu" ] || update-binfmts --enable "$qemu"
	grep -qx enabled "/proc/sys/fs/binfmt_misc/$qemu" || {
		echo "image-check: binfmt_misc has $qemu, but disabled" >&2
		return 1
	}
}
foreign_arch

if [ ! -f "$base" ]; then
	say "debootstrap $release/$arch (cold cache: a few minutes, once)"
	rm -rf "$rootfs"
	started=$SECONDS
	debootstrap --variant=minbase --arch="$arch" "$release" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{
			tail -30 "$work/debootstrap.log"
			exit 1
		}
	mount_chroot
	# The kernel last and alone, and without an initramfs (INITRD=No, read by
	# initramfs-tools' kernel hook): making one takes ten minutes under emulation,
	# and the stage's 04-read-only makes it again with its own scripts. An empty
	# file stands in its place, so that the stage's `update-initramfs -u -k all`
	# finds the kernel (it updates only the initramfs that exist) and makes the
	# one the image has, as on a Pi.
	# shellcheck disable=SC2086 # lists of package names
	chroot "$rootfs" /bin/bash -ec "export DEBIAN_FRONTEND=noninteractive; apt-get update -q;
		apt-get install -y -q --no-install-recommends $booting $packages;
		INITRD=No apt-get install -y -q --no-install-recommends $kernel; apt-get clean;
		for image in /boot/vmlinuz-*; do touch /boot/initrd.img-\${image#/boot/vmlinuz-}; done" \
		>"$work/apt.log" 2>&1 || {
		tail -30 "$work/apt.log"
		exit 1
	}
	unmount_all
	tar -C "$rootfs" -cf "$base.part" . && mv "$base.part" "$base"
	echo "   base root file system cached in $((SECONDS - started)) s: $base"
fi
if [ -n "$base_only" ]; then
	say "image-check --base: the base root file system is in $base"
	exit 0
fi

say "the stage, as pi-gen runs it"
rm -rf "$rootfs"
mkdir -p "$rootfs"
tar -C "$rootfs" -xf "$base"
# The boot partition as stage1 leaves it (pi-gen mounts it at /boot/firmware).
mkdir -p "$rootfs/boot/firmware"
cp "$here/check/cmdline.txt" "$here/check/config.txt" "$rootfs/boot/firmware/"

"$here/stage-files.sh" "$wheels"

# The one step that only runs update-initramfs takes 10 to 25 minutes under
# qemu-user. Its result depends on the base root (its key) and on what the
# stage put in /etc/initramfs-tools alone, so it is kept under those and
# reused while none of them changes. The overlay's own script is copied into
# the initramfs verbatim (scripts/local-bottom/, by initramfs-tools itself),
# so it is left out of the key and put into the kept initramfs as it is now.
initramfs_step=04-read-only/01-run-chroot.sh
overlay_script=scripts/local-bottom/teletype-read-only
initramfs_file() {
	local inputs
	inputs=$(cd "$rootfs" && find etc/initramfs-tools usr/local/sbin/teletype-state-partition -type f \
		! -path "etc/initramfs-tools/$overlay_script" \
		-print0 | sort -z | xargs -0 sha256sum)
	echo "$cache/initrd-$(printf '%s\n%s' "$key" "$inputs" | sha256sum | cut -c1-12).img"
}
initramfs_cached() {
	local kept initrds
	kept=$(initramfs_file)
	initrds=("$rootfs"/boot/initrd.img-*)
	[ -f "$kept" ] && [ ${#initrds[@]} = 1 ] || return 1
	# A gzip'd newc cpio (COMPRESS falls back to gzip here): the one file replaced.
	python3 - "$kept" "${initrds[0]}" "$overlay_script" "$rootfs/etc/initramfs-tools/$overlay_script" <<'PY'
import gzip, sys
kept, out, name, source = sys.argv[1:]
data, new, i, replaced = gzip.open(kept).read(), bytearray(), 0, False
pad = lambda n: (4 - n % 4) % 4
while True:
    head = data[i:i + 110]
    namesize, size = int(head[94:102], 16), int(head[54:62], 16)
    start = i + 110 + namesize + pad(110 + namesize)
    entry = data[i + 110:i + 110 + namesize - 1].decode()
    body = data[start:start + size]
    if entry == name:
        body, replaced = open(source, "rb").read(), True
        head = head[:54] + b"%08X" % len(body) + head[62:]
    new += data[i:start].replace(data[i:i + 110], head, 1) + body + b"\0" * pad(len(body))
    i = start + size + pad(size)
    if entry == "TRAILER!!!":
        break
if not replaced:
    sys.exit(f"{name} is not in the kept initramfs")
with gzip.open(out, "wb", compresslevel=6) as f:
    f.write(bytes(new))
PY
}
initramfs_keep() {
	local initrds
	initrds=("$rootfs"/boot/initrd.img-*)
	if [ ${#initrds[@]} = 1 ]; then cp "${initrds[0]}" "$(initramfs_file).part" &&
		mv "$(initramfs_file).part" "$(initramfs_file)"; fi
}

export ROOTFS_DIR="$rootfs" STAGE_DIR="$stage" IMG_NAME=teletype-gpt2
mount_chroot
run_started=$SECONDS
for sub in "$stage"/[0-9][0-9]-*/; do
	for i in $(seq -w 0 99); do
		if [ -x "$sub/$i-run.sh" ]; then
			echo "   $(basename "$sub")/$i-run.sh"
			(cd "$sub" && "./$i-run.sh") || {
				fail "$(basename "$sub")/$i-run.sh"
				exit 1
			}
		fi
		if [ "$(basename "$sub")/$i-run-chroot.sh" = "$initramfs_step" ] && initramfs_cached; then
			echo "   $initramfs_step: the initramfs from the cache (the same inputs)"
		elif [ -f "$sub/$i-run-chroot.sh" ]; then
			echo "   $(basename "$sub")/$i-run-chroot.sh (in the chroot)"
			PIP_NO_INDEX=1 chroot "$rootfs" /usr/bin/env PIP_NO_INDEX=1 /bin/bash -e \
				<"$sub/$i-run-chroot.sh" || {
				fail "$(basename "$sub")/$i-run-chroot.sh"
				exit 1
			}
			if [ "$(basename "$sub")/$i-run-chroot.sh" = "$initramfs_step" ]; then
				initramfs_keep
			fi
		fi
	done
done
echo "   the stage ran in $((SECONDS - run_started)) s"

# --- 4. what a user gets ---------------------------------------------------
say "the installed appliance"
in_root() { chroot "$rootfs" /bin/bash -ec "$*"; }
check "user teletype exists, in dialout and gpio" \
	in_root 'id -nG teletype | tr " " "\n" | grep -qx dialout && id -nG teletype | tr " " "\n" | grep -qx gpio'
check "teletype --version runs from the venv" in_root '/usr/local/bin/teletype --version | grep -q teletype-gpt2'
for unit in teletype.target teletype-engine.service teletype-button.service teletype-chat.service \
	teletype-network.service teletype-chat-retry.timer; do
	check "$unit enabled" in_root "systemctl is-enabled $unit | grep -qx enabled"
done
verify() {
	local out
	out=$(systemd-analyze verify --root="$rootfs" \
		"$rootfs"/etc/systemd/system/teletype-*.service \
		"$rootfs"/etc/systemd/system/teletype-*.timer 2>&1) || {
		echo "$out"
		return 1
	}
	[ -z "$out" ] || {
		echo "$out"
		return 1
	}
}
check "systemd-analyze verify --root: nothing to say" verify
# The first boot's state partition (README: a read-only root, and power cuts).
# shellcheck disable=SC2016 # expanded in the chroot
check "the initramfs makes the state partition at the first boot (script and tools in it)" in_root \
	'files=$(lsinitramfs /boot/initrd.img-*); for f in scripts/local-premount/00-teletype-state \
		usr/local/sbin/teletype-state-partition sfdisk mke2fs resize2fs e2fsck; do
		grep -q "$f\$" <<<"$files" || { echo "not in the initramfs: $f"; exit 1; }; done'
check "pi-gen's resize2fs_once is gone (it would fail on the read-only root)" \
	test ! -e "$rootfs/etc/init.d/resize2fs_once"
check "serial console gone from cmdline.txt, the rest kept" \
	bash -c "! grep -Eq 'console=(serial|ttyAMA|ttyS)' '$rootfs/boot/firmware/cmdline.txt' &&
		grep -q 'console=tty1' '$rootfs/boot/firmware/cmdline.txt' &&
		grep -q 'rootwait' '$rootfs/boot/firmware/cmdline.txt' &&
		[ \$(wc -l <'$rootfs/boot/firmware/cmdline.txt') = 1 ]"
check "UART lines in config.txt, once" \
	bash -c "grep -qx 'enable_uart=1' '$rootfs/boot/firmware/config.txt' &&
		grep -qx 'dtparam=uart0=on' '$rootfs/boot/firmware/config.txt' &&
		[ \$(grep -c '^# --- teletype-gpt2:' '$rootfs/boot/firmware/config.txt') = 1 ]"
check "teletype.toml on the boot partition is read as the config" \
	in_root '/usr/local/bin/teletype config | head -1 | grep -q /boot/firmware/teletype.toml'
# shellcheck disable=SC2016 # expanded in the chroot
check "serial-getty masked on the Teletype's port" \
	in_root 'for p in serial0 ttyAMA0 ttyS0; do systemctl is-enabled serial-getty@$p.service | grep -qx masked; done'
# The test kit (fakes and checkers) is left out of the appliance's wheel.
# shellcheck disable=SC2016 # expanded in the chroot
check "the test kit (appliance.testing) is not installed" \
	in_root 'test -z "$(find /opt/teletype-gpt2/venv -path "*/appliance/testing*")"'
# (The udev rule's syntax and priorities are checked by tests/test_firmware.py.)
check "the embedded model is installed and generates" in_root \
	'cd / && /opt/teletype-gpt2/venv/bin/python -c "
from appliance.engine.generator import find_model, load_generator
from appliance.config import Config
path = find_model()
assert str(path).startswith(\"/usr/share/teletype-gpt2/models/\"), path
g = load_generator(Config().model)
text = g.generate(\"The clutch\", 60, seed=1)
assert len(text.split()) >= 5, text
print(text)
"'
unmount_all

say "image-check: $([ $failures = 0 ] && echo "all passed" || echo "$failures failed")"
[ $failures = 0 ]
