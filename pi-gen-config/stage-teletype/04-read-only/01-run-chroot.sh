#!/bin/bash -e
# The initramfs again, now with the overlay script and its modules (for every
# kernel installed; on Raspberry Pi OS its post-update hook copies each to the
# boot partition, where auto_initramfs=1 makes the firmware load it).
update-initramfs -u -k all
