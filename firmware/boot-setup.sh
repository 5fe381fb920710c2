#!/bin/sh
# Apply the appliance's boot-partition settings to a Raspberry Pi boot
# partition: boot-setup.sh BOOT_DIR [FIRMWARE_DIR]
#
# - config.txt gets firmware/config.txt's block (the UART on GPIO14/15),
#   once: running this again changes nothing;
# - cmdline.txt loses its serial console (console=serial0,... and the
#   like), so the kernel never prints on the Teletype; the other consoles
#   and every other option stay as they were;
# - teletype.toml, the user's settings, is put there unless one already is.
set -eu

boot=${1:?usage: boot-setup.sh BOOT_DIR [FIRMWARE_DIR]}
here=$(dirname "$0")
firmware=${2:-$here}
marker="# --- teletype-gpt2:"

config="$boot/config.txt"
touch "$config"
if ! grep -q "^$marker" "$config"; then
	printf '\n' >>"$config"
	cat "$firmware/config.txt" >>"$config"
fi

cmdline="$boot/cmdline.txt"
if [ -f "$cmdline" ]; then
	# One line, as the firmware wants it; serial consoles out, spaces tidied.
	sed -E \
		-e ':again' \
		-e 's/(^| )console=(serial[0-9]|ttyAMA[0-9]+|ttyS[0-9]+)(,[0-9a-zA-Z]*)?( |$)/\1\4/' \
		-e 't again' \
		-e 's/  +/ /g' -e 's/^ //' -e 's/ $//' \
		"$cmdline" >"$cmdline.new"
	mv "$cmdline.new" "$cmdline"
fi

if [ ! -f "$boot/teletype.toml" ]; then
	cp "$firmware/teletype.toml" "$boot/teletype.toml"
fi
