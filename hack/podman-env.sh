# Sourced by the scripts that use podman (image build, real-node tests): podman installed, and the
# private containers.conf that makes it work on this kind of machine (see
# ../shared/container-image.md: crun cannot run in hybrid cgroups here, and setting rlimits is not
# permitted). Also, from lib.sh: as_root, ensure_packages, debian_mirror, CACHE_ROOT.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages podman runc
mkdir -p "$CACHE_ROOT"
export CONTAINERS_CONF="$CACHE_ROOT/containers.conf"
printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' >"$CONTAINERS_CONF"
