#!/usr/bin/env bash
# Everything a real node needs that is made once and cached (../shared/real-kubelet.md): the host
# packages (containerd, Debian's docker-registry, busybox-static, a C compiler), the kubelet built
# by build-kube.sh, the sandbox ("pause") image as an OCI archive, and the test app image in
# podman's store. hack/realnode.py starts and stops the node itself, per test session.
#
# Prints KEY=VALUE lines: KUBELET, PAUSE_ARCHIVE, PAUSE_IMAGE, APP_IMAGE, CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/podman-env.sh   # podman, its containers.conf, lib.sh

PAUSE_IMAGE=localhost/pause:3.4.1           # containerd's sandbox_image must be exactly this name
APP_IMAGE=localhost/pullwatch-test-app:busybox
IMAGES="$CACHE_ROOT/realnode-images"
PAUSE_ARCHIVE="$IMAGES/pause-3.4.1.oci.tar"

log() { echo "[realnode-setup] $*" >&2; }

ensure_packages containerd docker-registry busybox-static gcc libc6-dev containernetworking-plugins iproute2
KUBELET=$(bash hack/build-kube.sh kubelet | tail -n 1)

if [ ! -s "$PAUSE_ARCHIVE" ]; then
  log "building the sandbox image $PAUSE_IMAGE (static C, once)"
  ctx=$(mktemp -d)
  trap "rm -rf '$ctx'" EXIT
  cat >"$ctx/pause.c" <<'EOC'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void die(int s) { _exit(0); }
static void reap(int s) { while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, die); signal(SIGTERM, die); signal(SIGCHLD, reap);
  for (;;) pause();
}
EOC
  gcc -Os -static -o "$ctx/pause" "$ctx/pause.c" && strip "$ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Containerfile"
  podman build -q -t "$PAUSE_IMAGE" "$ctx" >&2
  mkdir -p "$IMAGES"
  podman save --format oci-archive -o "$PAUSE_ARCHIVE.tmp" "$PAUSE_IMAGE" >&2
  mv "$PAUSE_ARCHIVE.tmp" "$PAUSE_ARCHIVE"
fi

# One small app image (busybox, no base) is pushed under every name the tests use: a pod's
# command decides what it does (sleep, exit 1), the name decides which rule fires.
if ! podman image exists "$APP_IMAGE"; then
  log "building the app image $APP_IMAGE (busybox, once)"
  ctx=$(mktemp -d)
  cp /bin/busybox "$ctx/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "sh", "-c", "echo stand-in; exec /bin/busybox sleep 3600"]\n' \
    >"$ctx/Containerfile"
  podman build -q -t "$APP_IMAGE" "$ctx" >&2
  rm -rf "$ctx"
fi

echo "KUBELET=$KUBELET"
echo "PAUSE_ARCHIVE=$PAUSE_ARCHIVE"
echo "PAUSE_IMAGE=$PAUSE_IMAGE"
echo "APP_IMAGE=$APP_IMAGE"
echo "CONTAINERS_CONF=$CONTAINERS_CONF"
