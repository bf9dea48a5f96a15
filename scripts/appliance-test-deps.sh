#!/usr/bin/env bash
# Installs what the appliance image test needs: podman to build and run the image
# (with runc: crun fails on the CI machines), debootstrap to make the Debian base
# locally (base images cannot be pulled there), uidmap and slirp4netns for podman's
# namespaces. Idempotent like scripts/system-deps.sh: does nothing when all is present.
set -euo pipefail

packages=(podman runc debootstrap uidmap slirp4netns)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing system packages: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
