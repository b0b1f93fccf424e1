#!/usr/bin/env bash
# Builds (once) a real kube-apiserver from Debian's own source package and makes sure etcd and the
# other host tools are present. There is no Docker engine and no binary download here, so this is the
# only way to get a real control plane for the end-to-end tests and the demo (see
# ../shared/real-apiserver.md). The binary is cached outside the repo, keyed by version; a second run
# is a no-op that prints the cached path.
#
# Prints the path of the kube-apiserver binary on its last line of stdout.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_ROOT="${PULLWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullwatch}"
OUT_DIR="$CACHE_ROOT/kube-apiserver-$K8S_VERSION"
BIN="$OUT_DIR/kube-apiserver"

log() { echo "[build-kube-apiserver] $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1; fi
}

ensure_host_tools() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v kubectl >/dev/null || missing+=(kubernetes-client)
  if [ ! -x "$BIN" ]; then
    command -v go >/dev/null || missing+=(golang-go)
    command -v rsync >/dev/null || missing+=(rsync)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# The mirror is whatever the system's own apt sources use: never hard-code a host.
debian_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { log "cannot find the Debian mirror in the apt sources"; exit 1; }
  echo "$uri"
}

build() {
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/pullwatch-k8s-build.XXXXXX")
  # Expanded now: $work is local to this function but the trap runs at exit.
  trap "rm -rf '$work'" EXIT
  log "fetching the Debian source package 'kubernetes' into $work"
  echo "deb-src $(debian_mirror) bookworm main" >"$work/src.list"
  mkdir -p "$work/lists/partial"
  local aptopts=(-o Dir::Etc::SourceList="$work/src.list" -o Dir::Etc::SourceParts=/dev/null
                 -o Dir::State::Lists="$work/lists")
  apt-get "${aptopts[@]}" update -qq >&2
  (cd "$work" && apt-get "${aptopts[@]}" source --download-only kubernetes >&2)

  log "unpacking"
  (cd "$work" && tar xzf kubernetes_*.orig.tar.gz)
  local tree
  tree=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
  [ -n "$tree" ] || { log "no kubernetes-* tree in the orig tarball"; exit 1; }

  # reflect2 1.0.1 (vendored by 1.20) faults under Go >= 1.18 on the first custom resource write;
  # Debian's 1.0.2 does not. Swap the non-test sources.
  log "swapping vendored modern-go/reflect2 for Debian's 1.0.2"
  (cd "$work" && apt-get download golang-github-modern-go-reflect2-dev >&2)
  dpkg-deb -x "$work"/golang-github-modern-go-reflect2-dev_*.deb "$work/reflect2"
  local src="$work/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2"
  local dst="$tree/vendor/github.com/modern-go/reflect2"
  find "$dst" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -delete
  find "$src" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$dst/" \;

  log "building cmd/kube-apiserver (a few minutes on 2 cores)"
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
  local gohome
  gohome=$(mktemp -d)
  (cd "$tree" && GOPATH="$tree/.go" CGO_ENABLED=0 HOME="$gohome" \
      make WHAT=cmd/kube-apiserver >&2)
  rm -rf "$gohome"
  mkdir -p "$OUT_DIR"
  cp "$tree/_output/bin/kube-apiserver" "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"   # atomic: a half-copied binary is never taken for a cached one
  log "built $BIN"
}

ensure_host_tools
[ -x "$BIN" ] || build
echo "$BIN"
