#!/bin/bash -e
# The service user: no login, no home to speak of; may use the serial port
# (dialout) and the GPIO chips (gpio).
getent group gpio >/dev/null || groupadd --system gpio
if ! getent passwd teletype >/dev/null; then
	useradd --system --home-dir /var/lib/teletype-gpt2 --no-create-home \
		--shell /usr/sbin/nologin --user-group teletype
fi
usermod --append --groups dialout,gpio teletype
