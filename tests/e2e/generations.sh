# tests/e2e/generations.sh — the two generations of XMPP servers that admins run on Debian 12,
# each pinned to exact versions, which the end-to-end drivers (run.sh, ejabberd/run.sh) test
# one at a time (XHU_E2E_GENERATION). Sourced, not run. docs/xmpp-servers.md says what each
# version sends.
#
#   stable     Debian 12's own packages, installed on this machine (the host)
#   backports  bookworm-backports, in a bookworm root of their own (tests/e2e/server-root.sh)
#              where the servers run through chroot(8): the host's stable packages stay as
#              they are, and loopback is shared, so nginx, the program and the client run
#              outside as for stable.
#
# A pin is a Debian package version. The upstream part (before the last `-`) must match
# exactly — the drivers refuse to run another one, and the clients check the version the
# running server reports (XEP-0092) — so that a machine with the other generation installed
# cannot silently test the wrong one. Only the Debian revision (after the last `-`) may differ,
# when the archive has replaced the pinned one by a security or point-release update: the
# drivers then say so and test what is there.

# Sets, for generation $1: GEN (its name), GEN_SUITE (the apt suite that gives its servers),
# GEN_ROOT ("" for the host, else the directory of its root), and the pins GEN_PROSODY_DEB,
# GEN_PROSODY_MODULES_DEB, GEN_EJABBERD_DEB with GEN_PROSODY and GEN_EJABBERD, the versions
# the servers report, and GEN_PROSODY_JWT_TTL, the `exp - iat` of Prosody's upload tokens.
# Returns 1 for an unknown name.
e2e_generation() {
    GEN=$1
    case $GEN in
    stable)
        GEN_SUITE=bookworm
        GEN_ROOT=""
        GEN_PROSODY=0.12.3
        GEN_PROSODY_DEB=0.12.3-1+deb12u1
        GEN_PROSODY_MODULES_DEB=0.0~hg20230223.556bf57d6417+dfsg-1
        GEN_PROSODY_JWT_TTL=300 # mod_http_file_share: exp = iat + 300
        GEN_EJABBERD=23.01
        GEN_EJABBERD_DEB=23.01-1
        ;;
    backports)
        GEN_SUITE=bookworm-backports
        GEN_ROOT=${XHU_E2E_ROOTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/e2e-roots}/bookworm-backports
        GEN_PROSODY=13.0.1
        GEN_PROSODY_DEB=13.0.1-1~bpo12+1
        GEN_PROSODY_MODULES_DEB=0.0~hg20250402.f315edc39f3d+dfsg-1~bpo12+1
        GEN_PROSODY_JWT_TTL=600 # util.jwt's default_ttl, as mod_http_file_share sets it
        GEN_EJABBERD=24.12
        GEN_EJABBERD_DEB=24.12-3~bpo12+1
        ;;
    *)
        echo "unknown XMPP server generation '$GEN' (stable or backports)" >&2
        return 1
        ;;
    esac
}

# The upstream part of Debian version $1 (without epoch handling: none of the pins has one).
e2e_upstream() { echo "${1%-*}"; }

# The version of package $1 installed in root $2 ("" = the host), or nothing.
e2e_installed_version() {
    local admindir=${2:+$2}/var/lib/dpkg
    dpkg-query --admindir="$admindir" -W -f '${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null |
        sed -n 's/^ii  *//p'
}

# Prints, for each pinned package of the generation that is not installed in $GEN_ROOT with
# the pinned upstream version, "package=pinned-version". Nothing: all there.
e2e_generation_mismatches() { # packages (of prosody, prosody-modules, ejabberd)...
    local pkg pin have
    for pkg in "$@"; do
        case $pkg in
        prosody) pin=$GEN_PROSODY_DEB ;;
        prosody-modules) pin=$GEN_PROSODY_MODULES_DEB ;;
        ejabberd) pin=$GEN_EJABBERD_DEB ;;
        *) continue ;;
        esac
        have=$(e2e_installed_version "$pkg" "$GEN_ROOT")
        [[ -n $have && $(e2e_upstream "$have") == "$(e2e_upstream "$pin")" ]] || echo "$pkg=$pin"
    done
}

# Prints "package=version" to install for pin $1 (package=version) from the lists of apt as
# run by "$APT_CACHE" (apt-cache on the host, `chroot ROOT apt-cache` for a root): the pinned
# version when the archive still has it, else the newest of the same upstream version (with
# a note on stderr), else nothing and returns 1.
e2e_pick_version() {
    local pkg=${1%%=*} pin=${1#*=} all have
    all=$($APT_CACHE madison "$pkg" 2>/dev/null | awk -F' *[|] *' '!seen[$2]++ { print $2 }')
    if grep -qxF -- "$pin" <<<"$all"; then
        echo "$pkg=$pin"
        return 0
    fi
    have=$(grep -F -- "$(e2e_upstream "$pin")-" <<<"$all" | head -n1)
    if [[ -n $have && $(e2e_upstream "$have") == "$(e2e_upstream "$pin")" ]]; then
        echo "note: the archive no longer has $pkg $pin, installing $have (same upstream version; update tests/e2e/generations.sh)" >&2
        echo "$pkg=$have"
        return 0
    fi
    echo "the archive has no $pkg of upstream version $(e2e_upstream "$pin") (pinned: $pin; it has: $(echo $all))" >&2
    return 1
}
