# tests/e2e/lib.sh — what the end-to-end drivers (run.sh for Prosody, ejabberd/run.sh) share:
# installing or skipping on missing packages, the generation of XMPP servers under test and
# its pinned versions (generations.sh), building the program, free ports, waiting, and
# starting the program and nginx in the test directory. Sourced, not run. The driver defines
# log(), missing() (which may call e2e_missing_common), show_logs(), and sets PKGS, ROOT, PY.

# The packages every driver needs besides its XMPP server: nginx (and openssl for its
# certificate) and the slixmpp client.
e2e_missing_common() {
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || echo nginx
    command -v openssl >/dev/null 2>&1 || echo openssl
    [[ -x $PY ]] && $PY -c 'import slixmpp' >/dev/null 2>&1 || echo python3-slixmpp
    [[ -x $PY ]] && $PY -c 'import aiohttp, yarl' >/dev/null 2>&1 || echo python3-aiohttp
}

# Installs $PKGS when `missing` names anything and CI=true (or XHU_E2E_INSTALL=1, as root);
# otherwise exits 77 (skip). $1: the system service the packages may start, stopped afterwards.
# Sets NGINX.
e2e_install_or_skip() {
    local service=$1 missing_now
    missing_now=$(missing)
    if [[ -n "$missing_now" ]]; then
        if [[ "${CI:-}" == "true" || "${XHU_E2E_INSTALL:-}" == "1" ]]; then
            if [[ $(id -u) != 0 ]]; then
                log "missing: $missing_now; installing needs root"
                exit 1
            fi
            log "installing $PKGS (missing: $missing_now)"
            export DEBIAN_FRONTEND=noninteractive
            # shellcheck disable=SC2086
            if ! apt-get install -y -qq --no-install-recommends $PKGS >/dev/null; then
                apt-get update -qq
                apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
            fi
            # The packages may start their system services; this test runs its own instances.
            service "$service" stop >/dev/null 2>&1 || true
            service nginx stop >/dev/null 2>&1 || true
            missing_now=$(missing)
            if [[ -n "$missing_now" ]]; then
                log "still missing after apt-get: $missing_now"
                exit 1
            fi
        else
            log "SKIP: missing $missing_now (Debian: apt-get install $PKGS; or run with CI=true or XHU_E2E_INSTALL=1 as root)"
            exit 77
        fi
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# Sets XHU_BIN: as given, or a fresh debug build of the repository.
e2e_build_program() {
    if [[ -z "${XHU_BIN:-}" ]]; then
        log "building the program"
        (cd "$ROOT" && cargo build --quiet)
        XHU_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/xmpp-http-upload"
    fi
    [[ -x "$XHU_BIN" ]] || { log "no binary at $XHU_BIN"; exit 1; }
}

# Prints $1 free loopback ports, space-separated.
# N TCP ports free on 127.0.0.1, from below Linux's ephemeral range (32768-60999), as
# tests/common/mod.rs free_port: a port from that range may be taken by an outgoing
# connection of a parallel test by the time a server binds it.
e2e_free_ports() {
    $PY - "$1" <<'PYEOF'
import random, socket, sys
found, held = [], []
for port in random.sample(range(20000, 32000), 12000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
    found.append(port)
    if len(found) == int(sys.argv[1]):
        break
print(" ".join(str(p) for p in found))
PYEOF
}

wait_for() { # tries (0.1 s each), description, command...
    local n=$1 what=$2
    shift 2
    for _ in $(seq 1 "$n"); do
        if "$@" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "timed out waiting for $what"
    return 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Checks $D/config.toml and serves it on $D/fcgi.sock (log: $D/xhu.log); adds the pid to PIDS.
e2e_start_program() {
    log "program: $XHU_BIN"
    if ! "$XHU_BIN" check-config --config "$D/config.toml" >"$D/check-config.out" 2>&1; then
        cat "$D/check-config.out"
        log "check-config refused the e2e config"
        exit 1
    fi
    RUST_LOG=${RUST_LOG:-debug} "$XHU_BIN" serve --config "$D/config.toml" --listen "unix:$D/fcgi.sock" \
        >"$D/xhu.log" 2>&1 &
    PIDS+=($!)
    wait_for 100 "the program's socket" test -S "$D/fcgi.sock" || { show_logs; exit 1; }
}

# `text` of file $1 with each literal $2k replaced by $2k+1, into file $2 (after $1 and $2:
# from, to, from, to...). A `from` missing from the file is an error: a changed shipped file
# must not silently escape the templating (as tests/common/web.rs's template() does).
e2e_template() {
    local src=$1 out=$2 text from to
    shift 2
    text=$(<"$src")
    while (($# >= 2)); do
        from=$1 to=$2
        shift 2
        if [[ $text != *"$from"* ]]; then
            log "templating $src: expected '$from' in it (templating anchor)"
            exit 1
        fi
        text=${text//"$from"/"$to"}
    done
    printf '%s\n' "$text" >"$out"
}

# The nginx site we ship (nginx/xmpp-http-upload.conf and nginx/snippets/, with the
# upstream's keepalive and `fastcgi_keep_conn on`), set up in $D as tests/common/web.rs sets
# it up for the Rust tests: templated only for the ports (public server on $1 with TLS,
# loopback slot-API server on $2), the certificate (made here for 127.0.0.1, also
# $E2E_CA_FILE, which the clients trust through SSL_CERT_FILE), the FastCGI socket
# ($D/fcgi.sock) and the upload root ($UPLOAD_ROOT), in the process-level frame of
# tests/e2e/nginx-frame.conf.in. Then starts nginx and waits for both ports.
e2e_shipped_nginx() {
    local public_port=$1 slot_port=$2 s
    mkdir -p "$D/tls" "$D/snippets"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$D/tls/key.pem" -out "$D/tls/cert.pem" >"$D/openssl.out" 2>&1 ||
        { cat "$D/openssl.out"; exit 1; }
    E2E_CA_FILE="$D/tls/cert.pem"
    for s in "$ROOT"/nginx/snippets/*.conf; do cp "$s" "$D/snippets/"; done
    e2e_template "$ROOT/nginx/xmpp-http-upload.conf" "$D/site.conf" \
        "listen 443 ssl http2;" "listen 127.0.0.1:$public_port ssl http2;" \
        $'    listen [::]:443 ssl http2;\n' "" \
        "listen 127.0.0.1:9363;" "listen 127.0.0.1:$slot_port;" \
        "/etc/letsencrypt/live/upload.example.org/fullchain.pem" "$D/tls/cert.pem" \
        "/etc/letsencrypt/live/upload.example.org/privkey.pem" "$D/tls/key.pem" \
        "unix:/run/xmpp-http-upload/fcgi.sock" "unix:$D/fcgi.sock" \
        "/var/lib/xmpp-http-upload/files/" "$UPLOAD_ROOT/"
    e2e_template "$(dirname "${BASH_SOURCE[0]}")/nginx-frame.conf.in" "$D/nginx.conf" \
        "@NGINX_USER_LINE@" "$NGINX_USER_LINE" "@NGINX_SLOT_PORT@" "$slot_port" "@DIR@" "$D"
    e2e_start_nginx "$public_port" "$slot_port"
    # What the Rust tests (prosody_e2e, ejabberd_e2e) look for: the site as shipped, FastCGI
    # connections kept open between requests.
    if grep -qx "fastcgi_keep_conn on;" "$D/snippets/xmpp-http-upload-fastcgi.conf" &&
        grep -qE "^ +keepalive [0-9]+;" "$D/site.conf"; then
        log "nginx: the shipped site (nginx/xmpp-http-upload.conf), fastcgi_keep_conn on, upstream keepalive"
    else
        log "nginx: the shipped site no longer keeps FastCGI connections open (fastcgi_keep_conn, keepalive)"
    fi
}

# Starts nginx on $D/nginx.conf and waits for each port given.
e2e_start_nginx() {
    "$NGINX" -t -q -p "$D" -c "$D/nginx.conf" -e "$D/nginx-error.log" || { show_logs; exit 1; }
    "$NGINX" -p "$D" -c "$D/nginx.conf" -e "$D/nginx-error.log"
    local port
    for port in "$@"; do
        wait_for 100 "nginx on $port" port_open "$port" || { show_logs; exit 1; }
    done
}

# ---------------------------------------------------------------- the generation under test
# The drivers test one generation of XMPP servers per run (tests/e2e/generations.sh):
# XHU_E2E_GENERATION=stable (default: the host's packages) or backports (a root of its own,
# tests/e2e/server-root.sh, where the servers run through chroot). Sets what generations.sh's
# e2e_generation sets, and SROOT (the servers' root, "" = the host) and SRV (the command
# prefix that runs a program there: empty or `chroot $SROOT`). Paths the servers read are
# their own view: a directory $D made below $SROOT is "${D#"$SROOT"}" to them.
e2e_select_generation() {
    # shellcheck source=tests/e2e/generations.sh
    source "$(dirname "${BASH_SOURCE[0]}")/generations.sh"
    e2e_generation "${XHU_E2E_GENERATION:-stable}" || exit 1
    SROOT=$GEN_ROOT
    SRV=()
    [[ -z $SROOT ]] || SRV=(chroot "$SROOT")
}

# The generation's server packages ($@ of prosody, prosody-modules, ejabberd) must have the
# pinned upstream versions, in the root or on the host. Missing or other versions: under
# CI=true (or XHU_E2E_INSTALL=1, as root) the root is made (server-root.sh) or the host's
# packages are installed at the pinned versions; otherwise a missing root skips (77) and the
# host's other versions fail: a machine with the other generation installed must not pass
# for this one. $SERVICE: the system service the host's packages may start, stopped after.
e2e_pin_servers() {
    local install=0 wrong picked pin p=()
    [[ "${CI:-}" == "true" || "${XHU_E2E_INSTALL:-}" == "1" ]] && install=1
    if [[ -n $SROOT ]]; then
        if [[ $(id -u) != 0 ]]; then
            log "SKIP: the $GEN generation's servers run through chroot, which needs root"
            [[ $install == 1 ]] && exit 1
            exit 77
        fi
        if [[ ! -f $SROOT/.xhu-e2e-ready || -n $(e2e_generation_mismatches "$@") ]]; then
            if [[ $install == 1 ]]; then
                bash "$(dirname "${BASH_SOURCE[0]}")/server-root.sh" "$GEN" || exit 1
            elif [[ -f $SROOT/.xhu-e2e-ready ]]; then
                log "FAIL: the $GEN root has $(e2e_versions "$@"); pinned: $(e2e_generation_mismatches "$@") (update it: tests/e2e/server-root.sh $GEN)"
                exit 1
            else
                log "SKIP: no $GEN root at $SROOT (make it as root: tests/e2e/server-root.sh $GEN; or run with CI=true or XHU_E2E_INSTALL=1)"
                exit 77
            fi
        fi
    else
        wrong=$(e2e_generation_mismatches "$@")
        if [[ -n $wrong && $install == 1 && $(id -u) == 0 ]]; then
            log "installing the $GEN generation's pinned versions on the host (have: $(e2e_versions "$@"))"
            export DEBIAN_FRONTEND=noninteractive
            APT_CACHE=apt-cache
            for pin in $wrong; do
                picked=$(e2e_pick_version "$pin") || { apt-get update -qq; picked=$(e2e_pick_version "$pin"); } || exit 1
                p+=("$picked")
            done
            apt-get install -y -qq --no-install-recommends --allow-downgrades "${p[@]}" >/dev/null || exit 1
            service "${SERVICE:-none}" stop >/dev/null 2>&1 || true
            wrong=$(e2e_generation_mismatches "$@")
        fi
        if [[ -n $wrong ]]; then
            log "FAIL: the host's packages are not the $GEN generation's: have $(e2e_versions "$@"); pinned: $wrong (tests/e2e/generations.sh)"
            exit 1
        fi
    fi
    log "generation $GEN: $(e2e_versions "$@")${SROOT:+ (in $SROOT, through chroot)}"
}

# "package version, ..." of the packages $@ as installed for the generation.
e2e_versions() {
    local pkg v out=()
    for pkg in "$@"; do
        v=$(e2e_installed_version "$pkg" "$SROOT")
        out+=("$pkg ${v:-(not installed)}")
    done
    local IFS=,
    echo "${out[*]}" | sed 's/,/, /g'
}
