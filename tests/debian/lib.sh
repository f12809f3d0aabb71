# Shared by tests/debian/run-unit and tests/debian/build-image (sourced, not run).
#
# No image can be pulled here, so a Debian root is made with debootstrap and
# `docker import`ed. It is cached twice: as a Docker image whose tag carries a
# hash of what went into it (reused while present), and as a tarball in the
# cache directory (re-imported when the image is gone, e.g. after the engine's
# data was wiped). The root carries this machine's CA bundle, because TLS to
# PyPI may be intercepted.
#
# The caller sets, before calling debian_image:
#   say_prefix   prefix of messages ("debian13")
#   suite        Debian suite (trixie, bookworm)
#   include      debootstrap --include list
#   repository   image repository the root is tagged in (the tag is the hash)
#   recipe       a line naming how the root is made; bump it to drop old caches
#   import_changes  array of `docker import --change` values
#   import_message  optional `docker import --message` (the image's comment)
# and may define customize_root ROOT (run as root on the fresh root, before
# it is archived). debian_image sets `image` to the image's tag.
#
# Environment: SMS_BOT_TEST_CACHE    cache directory (default /var/cache/sms-bot-test
#                                    as root, else ~/.cache/sms-bot-test)
#              SMS_BOT_DEBIAN_MIRROR Debian mirror (default http://deb.debian.org/debian)
# Making the root needs root and debootstrap; a cached image or tarball does not.
# shellcheck shell=bash

mirror="${SMS_BOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
ca_bundle=/etc/ssl/certs/ca-certificates.crt

say() { echo "${say_prefix:-debian}: $*" >&2; }
die() { say "$*"; exit 1; }

# Sets `cache` and makes it (with its pip/ download cache).
debian_cache_dir() {
  if [ -n "${SMS_BOT_TEST_CACHE:-}" ]; then
    cache="$SMS_BOT_TEST_CACHE"
  elif [ "$(id -u)" = 0 ]; then
    cache=/var/cache/sms-bot-test
  else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/sms-bot-test"
  fi
  mkdir -p "$cache/pip"
}

# The engine answers and the CA bundle is there; nothing else is worth starting without them.
debian_preflight() {
  docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info fails); .ci/run starts one"
  [ -r "$ca_bundle" ] || die "$ca_bundle is missing; install ca-certificates"
}

_debian_make_root() {
  local tarball="$1" stem="$2"
  [ "$(id -u)" = 0 ] || die "making the Debian $suite root needs root (debootstrap); run as root once, or set SMS_BOT_TEST_CACHE to a cache made by root"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing; apt-get install debootstrap"
  [ -r "$keyring" ] || die "$keyring is missing; apt-get install debian-archive-keyring"
  local root log="$cache/debootstrap-$stem.log"
  # Left by an interrupted run. --one-file-system: never into a /dev or /proc still mounted there.
  rm -rf --one-file-system "$cache"/root-"$stem".*
  root="$(mktemp -d "$cache/root-$stem.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf --one-file-system '$root'" EXIT
  say "making a Debian $suite root with debootstrap from $mirror (once; cached in $cache)"
  if ! debootstrap --variant=minbase --include="$include" --keyring="$keyring" \
    "$suite" "$root" "$mirror" >"$log" 2>&1; then
    tail -30 "$log" >&2
    die "debootstrap failed; the whole log is in $log"
  fi
  if declare -F customize_root >/dev/null; then
    customize_root "$root"
  fi
  # Last: an upgrade of ca-certificates in customize_root would replace it.
  mkdir -p "$root/etc/ssl/certs"
  cp "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  rm -f "$cache/$stem"-*.tar
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf --one-file-system "$root"
  trap - EXIT
}

# Sets `image`: the root's Docker image, made, or imported from the tarball, when missing.
debian_image() {
  local stem="${repository##*/}" hash tarball change
  hash="$( { echo "$recipe"; sha256sum <"$ca_bundle"; } | sha256sum | cut -c1-16)"
  image="$repository:$hash"
  tarball="$cache/$stem-$hash.tar"
  local args=()
  [ -n "${import_message:-}" ] && args+=(--message "$import_message")
  for change in "${import_changes[@]}"; do
    args+=(--change "$change")
  done
  # One run at a time makes or imports the root; the others wait and reuse it.
  exec 9>"$cache/.lock"
  flock 9
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    [ -f "$tarball" ] || _debian_make_root "$tarball" "$stem"
    say "importing $tarball as $image"
    docker import "${args[@]}" "$tarball" "$image" >/dev/null
    # Older roots (another CA bundle or recipe) are no longer used.
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$repository" | grep -vxF "$image" |
      xargs -r docker image rm >/dev/null 2>&1 || true
  fi
  flock -u 9
}
