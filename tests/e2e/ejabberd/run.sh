#!/usr/bin/env bash
# End-to-end test with a real ejabberd, so that INSTALL.md's "ejabberd" and "ejabberd with
# external_secret" examples are tested:
#
#   slixmpp client --XMPP--> ejabberd mod_http_upload
#       localhost      service_url --GET ?jid=&name=&size=&content_type=--> nginx --> program
#       ext.localhost  external_secret: ejabberd signs /share/<sha1>/<random>/<name>?v=<hmac>
#   client --PUT/GET (https)--> nginx --auth_request (FastCGI, decide-only)--> xmpp-http-upload
#
# nginx runs the site we ship (nginx/xmpp-http-upload.conf and its snippets, keep-alive
# FastCGI connections included): its loopback-only server is the slot API of service_url, its
# public server takes the uploads; templated only for ports, paths, certificate and socket
# (lib.sh's e2e_shipped_nginx), so that what admins install is what this tests.
#
# Everything listens on 127.0.0.1 on free high ports, in a temporary directory: ejabberd runs
# as the calling user (erl directly, not the ejabberdctl wrapper, which would `su ejabberd`),
# with its own spool, log, Erlang cookie ($HOME) and epmd (ERL_EPMD_PORT); nothing touches
# the system's own ejabberd, epmd or nginx.
#
# ejabberd is the one of the generation XHU_E2E_GENERATION (tests/e2e/generations.sh): stable
# (Debian 12's 23.01, the host's package) or backports (24.12, run through chroot in the root
# of tests/e2e/server-root.sh); the client checks the version the running server reports.
#
# Usage: tests/e2e/ejabberd/run.sh [--keep]
#   XHU_E2E_GENERATION=stable|backports  the ejabberd to test (default stable)
#   XHU_BIN=path        the binary under test (default: `cargo build`, target/debug)
#   CI=true             install missing Debian packages with apt-get (as root), or the
#                       pinned versions, or make the backports root; a missing dependency
#                       is then an error. XHU_E2E_INSTALL=1 installs too.
#   XHU_E2E_REPORT=file also copy the clients' JSON reports (what ejabberd sent) there
#   XHU_E2E_KEEP=1 / --keep  keep the temporary directory (logs, configs, files)
# Exit status: 0 passed, 1 failed, 77 skipped (dependencies missing and not installing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PY=${XHU_E2E_PYTHON:-/usr/bin/python3} # Debian's, where python3-slixmpp installs
KEEP=${XHU_E2E_KEEP:-0}
[[ "${1:-}" == "--keep" ]] && KEEP=1

# shellcheck source=tests/e2e/lib.sh
source "$HERE/../lib.sh"

log() { echo "e2e-ejabberd: $*"; }

# ---------------------------------------------------------------- dependencies
e2e_select_generation
# The host needs nginx and the client; ejabberd too when the generation is the host's own.
PKGS="nginx-light openssl python3-slixmpp python3-aiohttp"
[[ -n $SROOT ]] || PKGS="ejabberd $PKGS"
# Paths as ejabberd sees them (below $SROOT for a generation with a root).
EJ_LIBS=/usr/lib/x86_64-linux-gnu # where Debian installs ejabberd's Erlang applications
ERL=/usr/bin/erl
EPMD=/usr/bin/epmd

missing() {
    local m=()
    if [[ -z $SROOT ]]; then
        [[ -x $ERL && -x $EPMD ]] || m+=(erlang)
        compgen -G "$EJ_LIBS/ejabberd-*/ebin/ejabberd.app" >/dev/null || m+=(ejabberd)
    fi
    # shellcheck disable=SC2207
    m+=($(e2e_missing_common))
    echo "${m[*]:-}"
}

e2e_install_or_skip ejabberd
SERVICE=ejabberd e2e_pin_servers ejabberd

# ---------------------------------------------------------------- the binary
e2e_build_program

# ---------------------------------------------------------------- the directory
# Below the servers' root when they have one; DS is ejabberd's view of the same directory.
D=$(mktemp -d "${SROOT:-${TMPDIR:-/tmp}}${SROOT:+/tmp}/xhu-e2e-ej.XXXXXX")
DS=${D#"$SROOT"}
chmod 755 "$D"
UPLOAD_ROOT="$D/files"
mkdir -p "$UPLOAD_ROOT/share" "$D/nginx-tmp" "$D/ejabberd-spool" "$D/ejabberd-log" "$D/erlang-home"
chmod 700 "$D/erlang-home"

# Four free loopback ports, and a unique Erlang node name.
read -r C2S_PORT NGINX_PORT NGINX_SLOT_PORT EPMD_PORT < <(e2e_free_ports 4)
NODE="xhu-e2e-$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')@localhost"
HMAC_SECRET="hmac-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
NGINX_USER_LINE=""
[[ $(id -u) == 0 ]] && NGINX_USER_LINE="user root root;"

# The environment ejabberdctl would set up (/usr/sbin/ejabberdctl), pointed at $D (as
# ejabberd sees it: $DS). Our own epmd on its own port: a system epmd (or another test's) is
# never used nor killed.
export HOME="$DS/erlang-home" # the Erlang cookie ($HOME/.erlang.cookie), shared with the ctl calls
export ERL_EPMD_PORT=$EPMD_PORT
export ERL_LIBS=$EJ_LIBS
export ERL_INETRC=/etc/ejabberd/inetrc # "localhost" = 127.0.0.1 for the node name
[[ -f $SROOT$ERL_INETRC ]] || unset ERL_INETRC
export EJABBERD_CONFIG_PATH="$DS/ejabberd.yml"
export EJABBERD_LOG_PATH="$DS/ejabberd-log/ejabberd.log"
export ERL_CRASH_DUMP="$DS/ejabberd-log/erl_crash.dump"
export CONTRIB_MODULES_PATH="$DS/ejabberd-contrib"
export CONTRIB_MODULES_CONF_DIR="$DS/ejabberd-contrib-conf"
EJ_LOG="$D/ejabberd-log/ejabberd.log" # the same log, as this script sees it

EJ_PID=""
PIDS=()
cleanup() {
    local rc=$?
    [[ -f "$D/nginx.pid" ]] && kill "$(cat "$D/nginx.pid")" 2>/dev/null || true
    if [[ -n $EJ_PID ]]; then
        ejctl stop >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do kill -0 "$EJ_PID" 2>/dev/null || break; sleep 0.1; done
        kill "$EJ_PID" 2>/dev/null || true
        wait "$EJ_PID" 2>/dev/null || true
    fi
    # Only our epmd: the one on $ERL_EPMD_PORT, which the node above started.
    "${SRV[@]}" "$EPMD" -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
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

fill() {
    sed -e "s|@DIR@|$D|g" -e "s|@UPLOAD_ROOT@|$UPLOAD_ROOT|g" \
        -e "s|@C2S_PORT@|$C2S_PORT|g" -e "s|@NGINX_SLOT_PORT@|$NGINX_SLOT_PORT|g" \
        -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@HMAC_SECRET@|$HMAC_SECRET|g" "$1" >"$2"
}
fill "$HERE/ejabberd.yml.in" "$D/ejabberd.yml"
fill "$HERE/config.toml.in" "$D/config.toml"

# What `ejabberdctl <command>` runs, without its `su ejabberd`.
ejctl() {
    "${SRV[@]}" env -C "$DS/ejabberd-spool" \
        "$ERL" -sname "ctl-$$-$RANDOM@localhost" -hidden -noinput -s ejabberd_ctl -extra "$NODE" "$@"
}

show_logs() {
    for f in xhu.log nginx-error.log nginx-access.log nginx-slot.log ejabberd.out; do
        [[ -s "$D/$f" ]] || continue
        echo "---- $f (last 40 lines)"
        tail -n 40 "$D/$f"
    done
    if [[ -s "$EJ_LOG" ]]; then
        echo "---- ejabberd.log (warnings, errors, http_upload)"
        grep -E "warning|error|http_upload|critical" "$EJ_LOG" | tail -n 40 || true
    fi
}

# ---------------------------------------------------------------- the program, nginx
e2e_start_program
e2e_shipped_nginx "$NGINX_PORT" "$NGINX_SLOT_PORT"

# ---------------------------------------------------------------- ejabberd
# In the foreground (as `ejabberdctl foreground` does), so that we hold its pid: a simple
# command, so that $! is erl itself (chroot and env exec it).
"${SRV[@]}" env -C "$DS/ejabberd-spool" \
    "$ERL" -sname "$NODE" -noinput +K true +P 250000 -env ERL_CRASH_DUMP_BYTES 0 \
    -mnesia dir "\"$DS/ejabberd-spool\"" -s ejabberd >"$D/ejabberd.out" 2>&1 &
EJ_PID=$!
# ejabberd needs a few seconds (Mnesia); give it 60.
wait_for 600 "ejabberd c2s on $C2S_PORT" port_open "$C2S_PORT" || { show_logs; exit 1; }
# The listener opens before ejabberd has finished starting (the more so with two ejabberds
# starting side by side): ask until `status` says it is running (each ask is an Erlang VM).
ejabberd_running() { ejctl status >"$D/ejctl-status.out" 2>&1; }
wait_for 60 "ejabberd's status 'running'" ejabberd_running || { cat "$D/ejctl-status.out"; show_logs; exit 1; }
PASSWORD="pw-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
for jid in alice@localhost mallory@localhost alice@ext.localhost; do
    ejctl register "${jid%@*}" "${jid#*@}" "$PASSWORD" >>"$D/ejctl.out" 2>&1 ||
        { cat "$D/ejctl.out"; show_logs; exit 1; }
done
log "$(head -n1 "$D/ejctl-status.out" | tr -d '\n'); $(sed -n 's/.*\(ejabberd [^ ]* is running\).*/\1/p' "$D/ejctl-status.out")" \
    "c2s 127.0.0.1:$C2S_PORT, nginx https://127.0.0.1:$NGINX_PORT (slot API http://127.0.0.1:$NGINX_SLOT_PORT), dir $D"

# ---------------------------------------------------------------- the clients
client() { # role, jid, service, report
    SSL_CERT_FILE=$E2E_CA_FILE timeout 170 "$PY" "$HERE/client.py" --role "$1" --port "$C2S_PORT" --jid "$2" --password "$PASSWORD" \
        --service "$3" --nginx-port "$NGINX_PORT" --hmac-secret "$HMAC_SECRET" \
        --generation "$GEN" --expect-server "ejabberd $GEN_EJABBERD" \
        --report "$4" ${XHU_E2E_DEBUG:+--debug}
}
set +e
RC=0
log "mod_http_upload with service_url (the program's slot API):"
client slot alice@localhost upload.localhost "$D/report-slot.json" || RC=1
log "mod_http_upload with external_secret (HMAC):"
client external alice@ext.localhost upload.ext.localhost "$D/report-external.json" || RC=1
log "a user the program's rules deny (service_url):"
client denied mallory@localhost upload.localhost "$D/report-denied.json" || RC=1
set -e

# What ejabberd thinks of the configuration (both 23.01 and 24.12 call service_url deprecated).
grep -o "Option '[a-z_]*' is deprecated.*" "$EJ_LOG" 2>/dev/null | sort -u | sed "s/^/e2e-ejabberd: note  /" || true

# What ejabberd sent to the slot API (nginx's log of the raw request line and headers).
log "slot requests as nginx received them from ejabberd:"
sed "s/^/e2e-ejabberd:   /" "$D/nginx-slot.log" || true
log "the program's log of them:"
grep -E "slot granted|refused GET /http_upload" "$D/xhu.log" | sed "s/^/e2e-ejabberd:   /" || true

if [[ -n "${XHU_E2E_REPORT:-}" ]]; then
    $PY -c '
import json, sys
out = {}
for role in ("slot", "external", "denied"):
    try:
        out[role] = json.load(open(f"{sys.argv[1]}/report-{role}.json"))
    except OSError:
        pass
out["slot_requests"] = open(f"{sys.argv[1]}/nginx-slot.log").read().splitlines()
json.dump(out, open(sys.argv[2], "w"), indent=2, ensure_ascii=False)' "$D" "$XHU_E2E_REPORT"
fi
if [[ $RC != 0 ]]; then
    show_logs
    exit 1
fi

# Every slot request came from ejabberd on loopback, as INSTALL.md describes it.
if ! grep -q 'SLOT-REQUEST 127.0.0.1 "GET /http_upload/slot/?jid=alice%40localhost&name=' "$D/nginx-slot.log"; then
    log "FAIL: no slot request of the shape INSTALL.md describes"
    exit 1
fi
# The refusals the client saw were the program's 409 twice, one per mode (the file exists, or
# — when nginx writes the body — the slot's one PUT was allowed already), and its 413 (another
# size than the slot's).
N409=$(grep -cE 'refused PUT .*: 409 .*(has been uploaded already|was allowed already)' "$D/xhu.log" || true)
if [[ $N409 -lt 2 ]] || ! grep -q 'refused PUT /upload/.*: 413 ' "$D/xhu.log"; then
    log "FAIL: the program did not log its 409 (twice) and 413 for the refused PUTs"
    exit 1
fi
# The files are where the program expects them (docs/INTERFACE.md).
find "$UPLOAD_ROOT" -type f | sort | sed "s|^$UPLOAD_ROOT/|e2e-ejabberd: stored |"
log "ok    all ejabberd end-to-end checks passed"
exit 0
