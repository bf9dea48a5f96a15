#!/usr/bin/env bash
# Installs what the appliance image test needs: podman to build and run the image
# (with runc: crun fails on the CI machines), debootstrap to make the Debian base
# locally (base images cannot be pulled there), uidmap and slirp4netns for podman's
# namespaces.
set -euo pipefail
exec bash "$(dirname "$0")/system-deps.sh" podman runc debootstrap uidmap slirp4netns
