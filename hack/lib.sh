# Sourced by the hack/ scripts: where the caches live, running as root, Debian packages, the mirror.
set -euo pipefail

CACHE_ROOT="${PULLWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullwatch}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; exit 1; fi
}

# Installs the Debian packages (by package name) that are not installed yet.
ensure_packages() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# The mirror is whatever the system's own apt sources use: never hard-code a host.
debian_mirror() {
  local uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "cannot find the Debian mirror in the apt sources" >&2; exit 1; }
  echo "$uri"
}

# Installs, for each "command:package" pair whose command is missing, that Debian package (a
# command may come from elsewhere: kubectl from Kubernetes' own apt repository, say).
ensure_commands() {
  local pair packages=()
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || packages+=("${pair#*:}"); done
  [ ${#packages[@]} -eq 0 ] || ensure_packages "${packages[@]}"
}
