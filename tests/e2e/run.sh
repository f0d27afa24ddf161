#!/usr/bin/env bash
# End-to-end test with a real XMPP server (issue 4 item 6, issue 8 item 5):
#
#   slixmpp client --XMPP--> Prosody --slot with signed URL / JWT--> client
#   client --PUT/GET (https)--> nginx --auth_request (FastCGI, decide-only)--> xmpp-http-upload
#
# nginx runs the site we ship (nginx/xmpp-http-upload.conf and its snippets, keep-alive
# FastCGI connections included), templated only for ports, paths, certificate and socket
# (lib.sh's e2e_shipped_nginx), so that what admins install is what this tests.
#
# Prosody is the one of the generation XHU_E2E_GENERATION (tests/e2e/generations.sh): stable
# (Debian 12's 0.12.3, the host's package) or backports (13.0.1, run through chroot in the
# root of tests/e2e/server-root.sh); the client checks the version the running server reports.
#
# Prosody runs three upload components side by side (tests/e2e/prosody.cfg.lua.in):
#   upload.localhost   mod_http_upload_external (prosody-modules), protocol v1  -> /share/
#   upload2.localhost  mod_http_upload_external, protocol v2                    -> /share/
#   share.localhost    mod_http_file_share (built in) with http_file_share_base_url
#                      and http_file_share_secret (JWT)                         -> /file_share/
#   share-short/-never the same with files expiring after 3 s / never           -> /file_share/
# Everything listens on 127.0.0.1 on free high ports, in a temporary directory; nothing
# touches the system's own Prosody or nginx.
#
# Usage: tests/e2e/run.sh [--keep]
#   XHU_E2E_GENERATION=stable|backports  the Prosody to test (default stable)
#   XHU_BIN=path        the binary under test (default: `cargo build`, target/debug)
#   CI=true             install missing Debian packages with apt-get (as root), or the
#                       pinned versions, or make the backports root; a missing dependency
#                       is then an error. XHU_E2E_INSTALL=1 installs too.
#   XHU_E2E_REPORT=file also copy the client's JSON report (what Prosody sent) there
#   XHU_E2E_KEEP=1 / --keep  keep the temporary directory (logs, configs, files)
# Exit status: 0 passed, 1 failed, 77 skipped (dependencies missing and not installing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${XHU_E2E_PYTHON:-/usr/bin/python3}  # Debian's, where python3-slixmpp installs
KEEP=${XHU_E2E_KEEP:-0}
[[ "${1:-}" == "--keep" ]] && KEEP=1

# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"

log() { echo "e2e: $*"; }

# ---------------------------------------------------------------- dependencies
e2e_select_generation
# The host needs nginx and the client; Prosody too when the generation is the host's own.
PKGS="nginx-light openssl python3-slixmpp python3-aiohttp"
[[ -n $SROOT ]] || PKGS="prosody prosody-modules lua-unbound $PKGS"

missing() {
    local m=()
    if [[ -z $SROOT ]]; then
        command -v prosody >/dev/null 2>&1 || m+=(prosody)
        command -v prosodyctl >/dev/null 2>&1 || m+=(prosodyctl)
        [[ -f /usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua ]] ||
            m+=(prosody-modules)
        [[ -f /usr/lib/prosody/modules/mod_http_file_share.lua ]] || m+=(mod_http_file_share)
    fi
    # shellcheck disable=SC2207
    m+=($(e2e_missing_common))
    echo "${m[*]:-}"
}

e2e_install_or_skip prosody
SERVICE=prosody e2e_pin_servers prosody prosody-modules

# ---------------------------------------------------------------- the binary
e2e_build_program

# ---------------------------------------------------------------- the directory
# Below the servers' root when they have one; DS is Prosody's view of the same directory.
D=$(mktemp -d "${SROOT:-${TMPDIR:-/tmp}}${SROOT:+/tmp}/xhu-e2e.XXXXXX")
DS=${D#"$SROOT"}
chmod 755 "$D"
UPLOAD_ROOT="$D/files"
mkdir -p "$UPLOAD_ROOT/share" "$UPLOAD_ROOT/file_share" "$D/nginx-tmp" "$D/certs" "$D/prosody-data"

PIDS=()
cleanup() {
    local rc=$?
    [[ -f "$D/nginx.pid" ]] && kill "$(cat "$D/nginx.pid")" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ $rc != 0 || $KEEP == 1 ]]; then
        log "kept $D"
    else
        rm -rf "$D"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Four free loopback ports (the site's loopback slot-API server is not used by Prosody, but
# the shipped site has it).
read -r C2S_PORT PROSODY_HTTP_PORT NGINX_PORT NGINX_SLOT_PORT < <(e2e_free_ports 4)
HMAC_SECRET="hmac-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
JWT_SECRET="jwt-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
NGINX_USER_LINE=""
[[ $(id -u) == 0 ]] && NGINX_USER_LINE="user root root;"

fill() {
    sed -e "s|@DIR@|$D|g" -e "s|@SERVER_DIR@|$DS|g" -e "s|@UPLOAD_ROOT@|$UPLOAD_ROOT|g" \
        -e "s|@C2S_PORT@|$C2S_PORT|g" -e "s|@PROSODY_HTTP_PORT@|$PROSODY_HTTP_PORT|g" \
        -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@HMAC_SECRET@|$HMAC_SECRET|g" \
        -e "s|@JWT_SECRET@|$JWT_SECRET|g" "$1" >"$2"
}
fill "$HERE/prosody.cfg.lua.in" "$D/prosody.cfg.lua"
fill "$HERE/config.toml.in" "$D/config.toml"

show_logs() {
    for f in xhu.log nginx-error.log nginx-access.log prosody.out; do
        [[ -s "$D/$f" ]] || continue
        echo "---- $f (last 40 lines)"
        tail -n 40 "$D/$f"
    done
    if [[ -s "$D/prosody.log" ]]; then
        echo "---- prosody.log (warnings, errors, upload modules)"
        grep -E "warn|error|http_upload|file_share" "$D/prosody.log" | grep -v "certmanager" | tail -n 40 || true
    fi
}

# ---------------------------------------------------------------- the program, nginx
e2e_start_program
e2e_shipped_nginx "$NGINX_PORT" "$NGINX_SLOT_PORT"

# ---------------------------------------------------------------- Prosody
PASSWORD="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
for user in alice mallory; do
    "${SRV[@]}" prosodyctl --config "$DS/prosody.cfg.lua" register "$user" localhost "$PASSWORD" \
        >>"$D/prosodyctl.out" 2>&1 || { cat "$D/prosodyctl.out"; exit 1; }
done
# A simple command, so that $! is Prosody itself (chroot execs it).
"${SRV[@]}" prosody --config "$DS/prosody.cfg.lua" -F >"$D/prosody.out" 2>&1 &
PIDS+=($!)
wait_for 100 "Prosody c2s on $C2S_PORT" port_open "$C2S_PORT" || { show_logs; exit 1; }
log "prosody $("${SRV[@]}" prosodyctl --config "$DS/prosody.cfg.lua" about 2>/dev/null | sed -n 's/^Prosody \(.*\)$/\1/p' | head -n1)," \
    "c2s 127.0.0.1:$C2S_PORT, nginx https://127.0.0.1:$NGINX_PORT, dir $D"

# ---------------------------------------------------------------- the client
client() { # role, jid, report
    SSL_CERT_FILE=$E2E_CA_FILE timeout 170 "$PY" "$HERE/client.py" --role "$1" --port "$C2S_PORT" --jid "$2" --password "$PASSWORD" \
        --nginx-port "$NGINX_PORT" --hmac-secret "$HMAC_SECRET" --jwt-secret "$JWT_SECRET" \
        --generation "$GEN" --expect-server "Prosody $GEN_PROSODY" --jwt-ttl "$GEN_PROSODY_JWT_TTL" \
        --report "$3" ${XHU_E2E_DEBUG:+--debug}
}
set +e
# alice@localhost may upload (config.toml.in); mallory@localhost is denied by the rules.
client main alice@localhost "$D/report.json"
RC=$?
log "a user the rules deny:"
client denied mallory@localhost "$D/report-denied.json" || RC=1
set -e
if [[ -n "${XHU_E2E_REPORT:-}" && -f "$D/report.json" ]]; then
    cp "$D/report.json" "$XHU_E2E_REPORT"
fi
if [[ $RC != 0 ]]; then
    show_logs
    exit 1
fi
# The files are where the program expects them (docs/INTERFACE.md).
find "$UPLOAD_ROOT" -type f | sort | sed "s|^$UPLOAD_ROOT/|e2e: stored |"

# ---------------------------------------------------------------- cleanup at `expires`
# share-short.localhost's token said expires = iat + 3 s. Once that has passed, `cleanup`
# must delete that file (nginx wrote it, the program recorded `expires` when it authorized
# the PUT) and nothing else.
read -r SHORT_EXPIRES SHORT_PATH < <($PY -c '
import json, sys
r = json.load(open(sys.argv[1]))["short_lived"]
print(r["expires"], r["path"].lstrip("/"))' "$D/report.json")
while (($(date +%s) <= SHORT_EXPIRES)); do sleep 0.5; done
BEFORE=$(find "$UPLOAD_ROOT" -type f | sort)
"$XHU_BIN" cleanup --config "$D/config.toml" >"$D/cleanup.out" 2>&1 || { cat "$D/cleanup.out"; exit 1; }
AFTER=$(find "$UPLOAD_ROOT" -type f | sort)
GONE=$(comm -23 <(echo "$BEFORE") <(echo "$AFTER"))
if [[ "$GONE" != "$UPLOAD_ROOT/$SHORT_PATH" ]]; then
    cat "$D/cleanup.out"
    log "FAIL: cleanup after expires should delete exactly $SHORT_PATH; it deleted: ${GONE:-nothing}"
    exit 1
fi
STATUS=$(SSL_CERT_FILE=$E2E_CA_FILE $PY -c '
import sys, urllib.error, urllib.parse, urllib.request
url = "https://127.0.0.1:%s/%s" % (sys.argv[1], urllib.parse.quote(sys.argv[2]))
try:
    print(urllib.request.urlopen(url).status)
except urllib.error.HTTPError as e:
    print(e.code)' "$NGINX_PORT" "$SHORT_PATH")
[[ $STATUS == 404 ]] || { log "FAIL: GET of the expired file: $STATUS, expected 404"; exit 1; }
log "ok    cleanup deleted the expired $SHORT_PATH (token expires), kept the $(echo "$AFTER" | wc -l) other files"
exit 0
