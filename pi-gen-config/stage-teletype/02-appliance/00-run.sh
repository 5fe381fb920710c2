#!/bin/bash -e
# Into the image: the wheels to install, and the embedded model.
# (`make image` or `make image-check` has put them in files/ first.)
# (Not /tmp: pi-gen mounts a fresh tmpfs there for each chroot step.)
install -d "${ROOTFS_DIR}/var/cache/teletype-wheels"
install -m 644 files/wheels/* "${ROOTFS_DIR}/var/cache/teletype-wheels/"
install -d "${ROOTFS_DIR}/usr/share/teletype-gpt2/models"
install -m 644 files/models/*.gguf "${ROOTFS_DIR}/usr/share/teletype-gpt2/models/"
