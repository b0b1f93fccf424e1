#!/usr/bin/env bash
# Builds (once) real Kubernetes components from Debian's own source package: the kube-apiserver
# for the end-to-end tests and the demo (../shared/real-apiserver.md), the kubelet for the
# real-node tests (../shared/real-kubelet.md). There is no Docker engine and no binary download
# here, so this is the only way to get them. Each binary is cached outside the repo, keyed by
# version; what is cached is not built again, and what is missing is built in one pass over one
# source tree. Also installs the host tools the components need (etcd, kubectl, ...).
#
#   bash hack/build-kube.sh [kube-apiserver] [kubelet]    # default: kube-apiserver
#
# Prints the path of each binary asked for, one per line, in the order asked.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

K8S_VERSION=1.20.2
COMPONENTS=("${@:-kube-apiserver}")

log() { echo "[build-kube] $*" >&2; }
bin_of() { echo "$CACHE_ROOT/$1-$K8S_VERSION/$1"; }

for c in "${COMPONENTS[@]}"; do
  case "$c" in kube-apiserver|kubelet) ;; *) log "unknown component: $c"; exit 2 ;; esac
done

missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$(bin_of "$c")" ] || missing+=("$c"); done

host_tools=(etcd:etcd-server openssl:openssl kubectl:kubernetes-client)
[ ${#missing[@]} -eq 0 ] || host_tools+=(go:golang-go rsync:rsync)
ensure_commands "${host_tools[@]}"
# kubectl's built-in kustomize before 1.21 (v2) cannot read manifests/ (a directory in resources:).
kubectl_minor=$(kubectl version --client -o json 2>/dev/null |
  sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
if [ -n "$kubectl_minor" ] && [ "$kubectl_minor" -lt 21 ]; then
  log "kubectl $(command -v kubectl) is 1.$kubectl_minor: pullwatch's manifests need kubectl 1.21 or newer"
  exit 1
fi

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

  local what="" c
  for c in "${missing[@]}"; do what+="cmd/$c "; done
  log "building ${what}(minutes on 2 cores: ~4 for the API server, ~7 for the kubelet)"
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
  local gohome
  gohome=$(mktemp -d)
  (cd "$tree" && GOPATH="$tree/.go" CGO_ENABLED=0 HOME="$gohome" make WHAT="${what% }" >&2)
  rm -rf "$gohome"
  for c in "${missing[@]}"; do
    local bin
    bin=$(bin_of "$c")
    mkdir -p "$(dirname "$bin")"
    cp "$tree/_output/bin/$c" "$bin.tmp"
    mv "$bin.tmp" "$bin"   # atomic: a half-copied binary is never taken for a cached one
    log "built $bin"
  done
}

[ ${#missing[@]} -eq 0 ] || build
for c in "${COMPONENTS[@]}"; do bin_of "$c"; done
