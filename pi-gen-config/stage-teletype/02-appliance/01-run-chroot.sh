#!/bin/bash -e
# The appliance in its own venv (seeing the system's python3-systemd), the
# `teletype` command on the PATH, the units enabled.
venv=/opt/teletype-gpt2/venv
python3 -m venv --system-site-packages "${venv}"
# Every wheel was built for the Pi on the build host (`make wheels-arm64`:
# llama.cpp cross-compiled for ARMv8.0-A, the rest pinned in
# pi-gen-config/requirements-arm64.lock), so nothing is compiled here and no
# package index is asked: what was checked is what is installed.
wheels=/var/cache/teletype-wheels
# The appliance by its file, never by name: a package index must not be able
# to offer another "teletype-gpt2".
"${venv}/bin/pip" install --no-cache-dir --no-index --find-links "${wheels}" \
	"${wheels}"/teletype_gpt2-*.whl
rm -rf "${wheels}"
ln -sf "${venv}/bin/teletype" /usr/local/bin/teletype

units=$("${venv}/bin/python" -c \
	'import appliance, pathlib; print(pathlib.Path(appliance.__file__).parent / "systemd")')
install -m 644 "${units}"/*.service "${units}"/*.timer "${units}"/*.target /etc/systemd/system/
# The retry timer starts the chat bridge again some minutes after its start
# limit marked it failed (teletype-chat-retry.timer says why).
systemctl enable teletype.target teletype-engine.service teletype-button.service \
	teletype-chat.service teletype-network.service teletype-chat-retry.timer
