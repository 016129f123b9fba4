#!/usr/bin/env bash
# Builds the runtime image's root file system without a container engine: Debian 12 (minbase, as
# debian:12-slim) with the packages of deploy/image/runtime-packages, and the netprobe binary at
# /usr/local/bin/netprobe, as the Containerfile's runtime stage does.
#
#   sudo deploy/image/build-rootfs.sh [BINARY [DIR]]
#   BINARY  default target/release/netprobe;  DIR  default target/rootfs
#
# Then, to see that the image holds every library the binary needs:
#   sudo unshare --net chroot target/rootfs /usr/local/bin/netprobe --version
# or pack it as an image: sudo tar -C target/rootfs -c . | podman import - netprobe:0.1.0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-target/release/netprobe}
dir=${2:-target/rootfs}
[ -x "$binary" ] || { echo "build-rootfs.sh: no binary at $binary (cargo build --release)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "build-rootfs.sh: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 3; }
packages=$(grep -v '^#' "$here/runtime-packages" | grep . | paste -sd, -)
rm -rf "$dir"
# The documentation, manual pages and translations stay out, as in debian:12-slim.
mmdebstrap --mode=root --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$dir" >&2
install -D -m 0755 "$binary" "$dir/usr/local/bin/netprobe"
echo "$dir"
