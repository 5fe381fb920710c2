#!/bin/bash -e
# The boot partition: the UART for the Teletype, no serial console on it,
# the user's teletype.toml. And /dev/teletype.
files=files/firmware
sh "${files}/boot-setup.sh" "${ROOTFS_DIR}/boot/firmware" "${files}"
install -m 644 "${files}/99-teletype.rules" "${ROOTFS_DIR}/etc/udev/rules.d/99-teletype.rules"
