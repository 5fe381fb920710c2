#!/bin/bash -e
# The appliance in its own venv (seeing the system's python3-lgpio and
# python3-systemd), the `teletype` command on the PATH, the units enabled.
venv=/opt/teletype-gpt2/venv
python3 -m venv --system-site-packages "${venv}"
# Wheels from files/ first; what is not there (llama-cpp-python on arm64)
# comes from the package index and is built here, once.
wheels=/var/cache/teletype-wheels
# Built here for a Pi, not for the machine that makes the image: without this
# llama.cpp tunes itself to the build host's CPU (under emulation it may find
# SVE or i8mm) and a Pi 3 or 4 would die of an illegal instruction.
export CMAKE_ARGS="-DGGML_NATIVE=OFF"
if [ "$(uname -m)" = aarch64 ]; then
	CMAKE_ARGS="${CMAKE_ARGS} -DGGML_CPU_ARM_ARCH=armv8-a"
fi
# The appliance by its file, never by name: a package index must not be able
# to offer another "teletype-gpt2".
"${venv}/bin/pip" install --no-cache-dir --find-links "${wheels}" \
	"${wheels}"/teletype_gpt2-*.whl
rm -rf "${wheels}"
ln -sf "${venv}/bin/teletype" /usr/local/bin/teletype

units=$("${venv}/bin/python" -c \
	'import appliance, pathlib; print(pathlib.Path(appliance.__file__).parent / "systemd")')
install -m 644 "${units}"/*.service "${units}"/*.target /etc/systemd/system/
systemctl enable teletype.target teletype-engine.service teletype-button.service \
	teletype-chat.service
