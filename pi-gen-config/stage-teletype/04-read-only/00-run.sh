#!/bin/bash -e
# A read-only root: the initramfs puts a RAM overlay over the card's root at
# each boot (teletype.toml's [system] read_only_root; README: read-only root),
# the journal lives in RAM, and the appliance's state has its own partition,
# mounted at /var/lib/teletype (ext4, data=journal) with the units' state
# directories bound into it.
install -D -m 755 files/teletype-read-only-hook \
	"${ROOTFS_DIR}/etc/initramfs-tools/hooks/teletype-read-only"
install -D -m 755 files/teletype-read-only \
	"${ROOTFS_DIR}/etc/initramfs-tools/scripts/local-bottom/teletype-read-only"
# The state partition, made at the first boot in the card's tail (pi-gen's
# image has two partitions; README: a read-only root, and power cuts); its
# lines go into /etc/fstab then, once it is there.
install -D -m 755 files/teletype-state-partition "${ROOTFS_DIR}/usr/local/sbin/teletype-state-partition"
install -D -m 755 files/teletype-state \
	"${ROOTFS_DIR}/etc/initramfs-tools/scripts/local-premount/00-teletype-state"
install -D -m 644 files/journald.conf "${ROOTFS_DIR}/etc/systemd/journald.conf.d/teletype.conf"
# Mount points on the read-only root (nothing can make them later).
install -d -m 755 "${ROOTFS_DIR}/var/lib/teletype" "${ROOTFS_DIR}/var/lib/teletype-gpt2" \
	"${ROOTFS_DIR}/var/lib/teletype-network"
