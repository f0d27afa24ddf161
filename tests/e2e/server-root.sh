#!/usr/bin/env bash
# Makes (or checks) the Debian 12 root in which a generation's XMPP servers run for the
# end-to-end tests (tests/e2e/generations.sh): a minimal bookworm made by debootstrap, with
# bookworm-backports in its apt sources and the pinned Prosody, prosody-modules and ejabberd
# installed the way an admin does (`apt-get install -t bookworm-backports ...`). The drivers
# run `prosody` and `erl` in it through chroot(8); nothing of it is mounted, no service of it
# is started (policy-rc.d), and the host's own packages are not touched.
#
# Usage (as root): tests/e2e/server-root.sh [GENERATION]   (default: backports)
#   XHU_E2E_ROOTS=dir   where the roots live (default: target/e2e-roots of the repository)
# Idempotent: a root whose packages already have the pinned versions is left as it is. A root
# whose debootstrap did not finish is made anew; one whose installation did not finish is
# installed again. Concurrent calls (two drivers at once) wait for each other.
# Exit status: 0 ready, 1 failed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/generations.sh
source "$HERE/generations.sh"
e2e_generation "${1:-backports}"
log() { echo "server-root: $*"; }

if [[ -z $GEN_ROOT ]]; then
    log "generation $GEN uses the host's packages: no root to make"
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    log "making $GEN_ROOT needs root (debootstrap, chroot)"
    exit 1
fi
PKGS=(prosody prosody-modules ejabberd)
READY="$GEN_ROOT/.xhu-e2e-ready"
BOOTSTRAPPED="$GEN_ROOT/.xhu-e2e-debootstrapped"

mkdir -p "$(dirname "$GEN_ROOT")"
exec 9>"$GEN_ROOT.lock"
flock 9

if [[ -f $READY && -z $(e2e_generation_mismatches "${PKGS[@]}") ]]; then
    log "$GEN_ROOT is ready ($GEN: $(cat "$READY"))"
    exit 0
fi
START=$(date +%s)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

if [[ ! -f $BOOTSTRAPPED ]]; then
    # An unfinished root from an earlier run. Nothing is ever mounted in one; refuse to
    # delete a directory that has a mount below it all the same.
    if [[ -e $GEN_ROOT ]]; then
        if grep -qF " $GEN_ROOT/" /proc/self/mounts; then
            log "something is mounted below $GEN_ROOT: not deleting it"
            exit 1
        fi
        log "removing the unfinished $GEN_ROOT"
        rm -rf --one-file-system "$GEN_ROOT"
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
    fi
    # The host's Debian mirror when it has one for bookworm (debootstrap's default otherwise).
    MIRROR=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 'Codename: bookworm' 2>/dev/null |
        head -n1 || true)
    log "debootstrap bookworm into $GEN_ROOT ${MIRROR:+from $MIRROR}"
    # shellcheck disable=SC2086
    debootstrap --variant=minbase bookworm "$GEN_ROOT" $MIRROR >"$GEN_ROOT.debootstrap.log" 2>&1 ||
        { tail -n 20 "$GEN_ROOT.debootstrap.log"; log "debootstrap failed"; exit 1; }
    touch "$BOOTSTRAPPED"
fi

# bookworm-backports from the mirror debootstrap wrote into sources.list.
if [[ $GEN_SUITE != bookworm ]]; then
    sed -n "s/^deb \([^ ]*\) bookworm main\$/deb \1 $GEN_SUITE main/p" "$GEN_ROOT/etc/apt/sources.list" \
        >"$GEN_ROOT/etc/apt/sources.list.d/$GEN_SUITE.list"
    [[ -s "$GEN_ROOT/etc/apt/sources.list.d/$GEN_SUITE.list" ]] ||
        { log "no 'deb <mirror> bookworm main' line in $GEN_ROOT/etc/apt/sources.list"; exit 1; }
fi
# No package may start a service in the root (ejabberd's, prosody's postinst would).
printf '#!/bin/sh\n# tests/e2e/server-root.sh: no services in this root\nexit 101\n' >"$GEN_ROOT/usr/sbin/policy-rc.d"
chmod 755 "$GEN_ROOT/usr/sbin/policy-rc.d"
# debootstrap writes no /etc/hosts; Erlang's node name @localhost and Prosody need one.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$GEN_ROOT/etc/hosts"

log "apt-get update in the root"
chroot "$GEN_ROOT" apt-get update -qq
APT_CACHE="chroot $GEN_ROOT apt-cache"
PICKED=()
for pin in $(e2e_generation_mismatches "${PKGS[@]}"); do
    picked=$(e2e_pick_version "$pin") || exit 1
    PICKED+=("$picked")
done
log "installing ${PICKED[*]:+${PICKED[*]} }lua-unbound from $GEN_SUITE"
chroot "$GEN_ROOT" apt-get install -y -qq --no-install-recommends --allow-downgrades -t "$GEN_SUITE" \
    "${PICKED[@]}" lua-unbound >"$GEN_ROOT.apt.log" 2>&1 ||
    { tail -n 30 "$GEN_ROOT.apt.log"; log "apt-get install in the root failed"; exit 1; }
chroot "$GEN_ROOT" apt-get clean

left=$(e2e_generation_mismatches "${PKGS[@]}")
if [[ -n $left ]]; then
    log "still not the pinned versions after apt-get: $left"
    exit 1
fi
for pkg in "${PKGS[@]}"; do
    echo "$pkg $(e2e_installed_version "$pkg" "$GEN_ROOT")"
done | paste -sd, - | sed 's/,/, /g' >"$READY"
log "$GEN_ROOT is ready in $(($(date +%s) - START)) s ($GEN: $(cat "$READY")), $(du -sh "$GEN_ROOT" | cut -f1)"
