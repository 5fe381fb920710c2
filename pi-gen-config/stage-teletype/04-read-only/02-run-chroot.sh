#!/bin/bash -e
# pi-gen's resize2fs_once (stage2) grows the mounted root at the second
# boot: the first boot has grown it already (ours, or Raspberry Pi OS's), and
# on the read-only root it would fail at every boot (/ is the overlay).
if [ -e /etc/init.d/resize2fs_once ]; then
	update-rc.d -f resize2fs_once remove
	rm /etc/init.d/resize2fs_once
fi
