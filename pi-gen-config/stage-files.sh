#!/bin/bash
# Put what the stage installs into its files/ folders (pi-gen's convention):
#   stage-files.sh WHEEL_DIR
# the wheels (the appliance's own, and any dependencies built here), the
# embedded model, and the boot-partition files from firmware/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
stage="$here/stage-teletype"
wheels=${1:?usage: stage-files.sh WHEEL_DIR}

rm -rf "$stage/02-appliance/files" "$stage/03-boot/files"
mkdir -p "$stage/02-appliance/files/wheels" "$stage/02-appliance/files/models" \
	"$stage/03-boot/files/firmware"
cp "$wheels"/*.whl "$stage/02-appliance/files/wheels/"
cp "$repo/models/teletype-tiny.q8_0.gguf" "$stage/02-appliance/files/models/"
cp "$repo/firmware/config.txt" "$repo/firmware/teletype.toml" "$repo/firmware/boot-setup.sh" \
	"$repo/firmware/99-teletype.rules" "$stage/03-boot/files/firmware/"
