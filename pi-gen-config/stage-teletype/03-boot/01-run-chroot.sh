#!/bin/bash -e
# Nobody logs in on the Teletype's port, and Bluetooth (moved off the UART
# by config.txt) does not try to attach to it.
for port in serial0 ttyAMA0 ttyS0; do
	systemctl mask "serial-getty@${port}.service"
done
if [ -e /lib/systemd/system/hciuart.service ]; then
	systemctl disable hciuart.service
fi
