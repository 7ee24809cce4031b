#!/bin/sh
# Builds a python:3.11-slim stand-in from Debian's own packages, for machines that cannot reach a
# public image registry:  sh deploy/docker/debian-base.sh [TAG]   (default localhost/stylecast-base:bookworm)
# 1. debootstrap a minimal Debian 12 root file system (needs root and the debootstrap package;
#    installed here with apt-get when missing) and import it as an image;
# 2. add Debian's python3 (3.11), venv and pip, and the CA certificates of this machine (so pip works
#    inside builds behind a TLS-inspecting proxy too).
# Nothing happens when TAG exists already. ENGINE=docker works as well as podman (the default).
set -eu
TAG=${1:-localhost/stylecast-base:bookworm}
ENGINE=${ENGINE:-podman}
if $ENGINE image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG exists"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "debian-base.sh: debootstrap needs root (or pass BASE_IMAGE=...)" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
nice -n 10 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" \
  || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/cache/apt/archives/*.deb
tar -C "$WORK/rootfs" -c . | $ENGINE import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG-rootfs"
mkdir -p "$WORK/ctx/ca"
cp /usr/local/share/ca-certificates/*.crt "$WORK/ctx/ca/" 2>/dev/null || true
cat > "$WORK/ctx/Containerfile" <<EOC
FROM $TAG-rootfs
RUN DEBIAN_FRONTEND=noninteractive apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      python3 python3-venv python3-pip python-is-python3 ca-certificates \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOC
nice -n 10 $ENGINE build -t "$TAG" "$WORK/ctx"
$ENGINE rmi "$TAG-rootfs" >/dev/null 2>&1 || true
echo "built $TAG"
