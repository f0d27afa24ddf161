#!/bin/bash
# bench/run.sh — the benchmark of issues 5 and 12, in one run, on loopback, behind real nginx.
#
# Runs the shipped nginx configuration (nginx/xmpp-http-upload.conf and its snippets, templated
# only for ports, socket and upload paths) in front of
#   - the program (xmpp-http-upload serve),
#   - examples/constant_responder.rs (a FastCGI responder on the program's own FastCGI layer
#     answering a constant 200: the ceiling for slot requests),
#   - examples/recording_responder.rs (the constant responder storing one slot per request through
#     the program's own store: the ceiling for a program that records its slots),
#   - examples/constant_authorizer.rs (the same layer allowing every `auth_request` decision:
#     the ceiling for authorized PUTs),
#   - examples/constant_responder_old_crate.rs (a constant responder on the `fastcgi` crate the
#     layer replaced, behind the config as it was then: `fastcgi_keep_conn off`, no upstream
#     keepalive — the anchor),
#   - the same nginx configuration without its `auth_request` line (nginx alone, for PUTs),
#   - nginx's own `return 200` on the same nginx instance (the ceiling of any upstream),
#   - the Django app we replace (django-xmpp-http-upload 1.0.0, Django 3.2, DRF 3.14.0, gunicorn
#     with 2 sync workers, its demo settings; bench/django/),
# and measures with wrk (bench/slot.lua, bench/put.lua) and curl:
#   slots    slot requests/s, p50/p99 at 1, 16, 64 connections (program, constant, old crate,
#            nginx return 200, Django, and the program with quota rules checked on every request)
#   put4k    4 KiB PUTs/s at 16 connections: nginx alone / auth_request -> program / -> constant
#            authorizer
#   put100m  MiB/s of 100 MiB PUTs, the same three, plus the program receiving the body itself
#            (fastcgi_request_buffering off; and as plain CGI), plus the Django app receiving it
#   rows     slot latency and database size per slot with 1k, 100k, 1M slots stored
#   cgi      one slot request as plain CGI (a process per request) against a constant CGI
#            (/usr/bin/printf) and the program's own --version (outside a CGI environment:
#            under CGI it would answer a request), with hyperfine; fsyncs per
#            request with strace
#   postgres slot requests/s at 16 and 64 connections on SQLite and on PostgreSQL (not in the
#            default phases: bench/run.sh postgres)
# Peak RSS (VmHWM, reset before each measurement through /proc/PID/clear_refs) of the program is
# recorded with every measurement. Raw results go to $XHU_BENCH_DIR/results.tsv; bench/report.py
# turns them into the tables of bench/RESULTS.md (medians of the rounds, ratios from this run).
#
# Usage: bench/run.sh [PHASE...]   (default: slots put4k put100m rows cgi; `hold` keeps it all running)
# Environment: ROUNDS (3), DURATION (5s), CONNS ("1 16 64"), BIG_PUTS (8 per variant),
#   XHU_BENCH_DIR (/tmp/xhu-bench/run: databases, sockets, logs — on disk, like a real install),
#   XHU_BENCH_SHM (/dev/shm/xhu-bench: upload root, nginx body buffers, PUT sources — tmpfs),
#   XHU_BENCH_VENV (bench/.venv: the Django virtualenv; NO_DJANGO=1 skips Django),
#   CARGO_TARGET_DIR (target), PORT_BASE (38000),
#   XHU_BENCH_REV (unset: build the work tree; a git revision, e.g. HEAD: build that revision's
#   src/ and examples/ from a clean export, so uncommitted work does not end up in the figures).
# Needs: nginx (with auth_request and dav: Debian's nginx / nginx-light), wrk, curl, sqlite3,
# python3 (venv), cargo, hyperfine and strace (phase cgi); run as root (nginx workers run as
# root to reach the sockets).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$REPO/bench
W=${XHU_BENCH_DIR:-/tmp/xhu-bench/run}
SHM=${XHU_BENCH_SHM:-/dev/shm/xhu-bench}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-"1 16 64"}
BIG_PUTS=${BIG_PUTS:-8}
VENV=${XHU_BENCH_VENV:-$BENCH/.venv}
PORT_BASE=${PORT_BASE:-38000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(slots put4k put100m rows cgi)

# Ports: <put server> and <slot server> of each nginx instance (the shipped file has both).
PUT_A=$((PORT_BASE + 80)) SLOT_A=$((PORT_BASE + 63))     # auth_request -> program
PUT_B=$((PORT_BASE + 81)) SLOT_B=$((PORT_BASE + 64))     # no auth_request (nginx alone)
PUT_C=$((PORT_BASE + 82)) SLOT_C=$((PORT_BASE + 65))     # auth_request -> constant responder
PUT_D=$((PORT_BASE + 83)) SLOT_D=$((PORT_BASE + 66))     # auth_request -> constant authorizer
PUT_E=$((PORT_BASE + 84)) SLOT_E=$((PORT_BASE + 67))     # old crate, keep_conn off (the anchor)
PUT_F=$((PORT_BASE + 85)) SLOT_F=$((PORT_BASE + 68))     # recording responder
DJANGO_PORT=$((PORT_BASE + 90))                          # nginx -> gunicorn
SELF_PORT=$((PORT_BASE + 91))                            # nginx -> program receives the body
RETURN_PORT=$((PORT_BASE + 92))                          # nginx `return 200` (instance A)
SOCK_PROG=$W/xhu.sock SOCK_CONST=$W/const.sock SOCK_DJANGO=$W/gunicorn.sock
SOCK_AUTHZ=$W/authz.sock SOCK_OLD=$W/old.sock SOCK_REC=$W/recording.sock
BIN=$CARGO_TARGET_DIR/release/xmpp-http-upload
CONST_BIN=$CARGO_TARGET_DIR/release/examples/constant_responder
AUTHZ_BIN=$CARGO_TARGET_DIR/release/examples/constant_authorizer
OLD_BIN=$CARGO_TARGET_DIR/release/examples/constant_responder_old_crate
REC_BIN=$CARGO_TARGET_DIR/release/examples/recording_responder
RESULTS=$W/results.tsv
BIG=$((100 * 1024 * 1024))

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in nginx wrk curl sqlite3 python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install nginx-light wrk curl sqlite3)"
done
[ -f "$REPO/nginx/xmpp-http-upload.conf" ] || die "nginx/xmpp-http-upload.conf is missing"

# ---------------------------------------------------------------- processes we start, and stop
STARTED=()
NGINX_CONFS=()
cleanup() {
    local conf pid
    for conf in "${NGINX_CONFS[@]}"; do nginx -q -c "$conf" -p "$(dirname "$conf")" -s stop 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_socket() {   # PATH
    local i
    for i in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
    die "no socket at $1"
}

wait_for_port() {     # PORT
    local i
    for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
    die "nothing answers on port $1"
}

hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }   # KiB
rss_now() { local pid sum=0; for pid in "$@"; do sum=$((sum + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0))); done; echo "$sum"; }
reset_hwm() { for pid in "$@"; do echo 5 > "/proc/$pid/clear_refs" 2>/dev/null || true; done; }

PROG_PID=""
start_program() {     # CONFIG
    stop_program
    RUST_LOG=${RUST_LOG:-info} "$BIN" serve --config "$1" --listen "unix:$SOCK_PROG" \
        2>>"$W/program.log" &
    PROG_PID=$!
    STARTED+=("$PROG_PID")
    wait_for_socket "$SOCK_PROG"
}
stop_program() {
    if [ -n "$PROG_PID" ]; then kill "$PROG_PID" 2>/dev/null || true; wait "$PROG_PID" 2>/dev/null || true; fi
    PROG_PID=""
    rm -f "$SOCK_PROG"
}

# ---------------------------------------------------------------- setup
rm -rf "$W" "$SHM"
mkdir -p "$W/db" "$SHM/files"
BUILD_DIR=$REPO
if [ -n "${XHU_BENCH_REV:-}" ]; then
    BUILD_DIR=$W/src
    mkdir -p "$BUILD_DIR"
    git -C "$REPO" archive "$XHU_BENCH_REV" | tar -x -C "$BUILD_DIR"
fi
log "building $BUILD_DIR${XHU_BENCH_REV:+ at $XHU_BENCH_REV} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$BUILD_DIR" && cargo build -q --release --bin xmpp-http-upload --example constant_responder \
    --example constant_authorizer --example constant_responder_old_crate \
    --example recording_responder)
head -c "$BIG" /dev/urandom > "$SHM/put-100M.bin"
printf 'phase\ttarget\tconns\tround\trps\tp50_us\tp99_us\tnon2xx\tsockerr\trequests\trss_kib\textra\trss_before_kib\n' > "$RESULTS"

write_config() {      # FILE DATABASE
    cat > "$1" <<EOF
upload_root = "$SHM/files"
database = "$2"
base_url = "http://127.0.0.1:$PUT_A"
slot_prefix = "/http_upload"
put_prefix = "/upload"
put_timeout = "1d"        # slots for the PUT phases are made before the PUTs
webserver_download = true

[slot_api]
allow_from = ["127.0.0.1", "::1"]

[[rules]]
match = '^admin@example\.com\$'      # the Django demo's unrestricted JID: no limits

[[rules]]
match = '@example\.org\$'            # every limit checked on every slot, none reached
max_file_size = "1 GiB"
max_total_size = 1099511627776
bytes_per_window = { window = "1h", bytes = 1099511627776 }
uploads_per_window = { window = "1h", uploads = 100000000 }

[[rules]]
match = '.*'
deny = true
EOF
}
write_config "$W/config.toml" "$W/db/uploads.sqlite3"
write_config "$W/config-rows.toml" "$W/db/rows.sqlite3"

# The shipped server block, templated for ports, socket and upload root only. KEEP=no turns
# FastCGI keep-alive off (the configuration before our own FastCGI layer, for the old crate).
nginx_instance() {    # NAME SOCKET PUT_PORT SLOT_PORT AUTH(yes|no) [EXTRA_SERVERS_FILE] [KEEP]
    local name=$1 sock=$2 put=$3 slot=$4 auth=$5 extra=${6:-} keep=${7:-yes}
    local dir=$W/nginx-$name
    mkdir -p "$dir/snippets" "$SHM/body-$name"
    cp "$REPO"/nginx/snippets/*.conf "$dir/snippets/"
    local sed_args=(
        -e "s#server unix:/run/xmpp-http-upload/fcgi.sock;#server unix:$sock;#"
        -e "s#listen 443 ssl http2;#listen 127.0.0.1:$put;#"
        -e "/listen \[::\]:443 ssl http2;/d"
        -e "/^[[:space:]]*ssl_certificate/d"
        -e "s#/var/lib/xmpp-http-upload/files/#$SHM/files/#g"
        -e "s#listen 127.0.0.1:9363;#listen 127.0.0.1:$slot;#"
    )
    if [ "$keep" = no ]; then
        sed_args+=(-e "/^[[:space:]]*keepalive /d" -e "/^[[:space:]]*keepalive_timeout /d")
        sed -i "s/^fastcgi_keep_conn on;/fastcgi_keep_conn off;/" "$dir/snippets/xmpp-http-upload-fastcgi.conf"
        grep -q "^fastcgi_keep_conn off;" "$dir/snippets/xmpp-http-upload-fastcgi.conf" \
            || die "nginx template: fastcgi_keep_conn line not found"
    fi
    sed "${sed_args[@]}" "$REPO/nginx/xmpp-http-upload.conf" > "$dir/site.conf"
    # Fail loudly if the shipped files changed shape and a substitution no longer applies.
    grep -q "server unix:$sock;" "$dir/site.conf" || die "nginx template: upstream socket line not found"
    grep -q "listen 127.0.0.1:$put;" "$dir/site.conf" || die "nginx template: listen 443 line not found"
    grep -q "listen 127.0.0.1:$slot;" "$dir/site.conf" || die "nginx template: loopback slot server not found"
    grep -q "alias $SHM/files/;" "$dir/site.conf" || die "nginx template: alias line not found"
    ! grep -v "^[[:space:]]*#" "$dir/site.conf" | grep -q "/var/lib/xmpp-http-upload" \
        || die "nginx template: a path left untemplated"
    # The `auth_request` line (in the files snippet, or in the server block in older versions).
    local auth_file
    auth_file=$(grep -l "^[[:space:]]*auth_request /_xmpp_http_upload_authorize;" "$dir/site.conf" \
        "$dir"/snippets/*.conf) || die "nginx template: no auth_request line found"
    if [ "$auth" != yes ]; then
        sed -i "/^[[:space:]]*auth_request \/_xmpp_http_upload_authorize;/d" $auth_file
        ! grep -q "auth_request /_xmpp_http_upload_authorize;" "$dir/site.conf" "$dir"/snippets/*.conf \
            || die "nginx template: auth_request still there"
    fi
    cat > "$dir/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log off;
    # Request bodies are buffered on the upload root's file system (tmpfs), so storing a PUT
    # is a rename, as the shipped config recommends.
    client_body_temp_path $SHM/body-$name;
    include $dir/site.conf;
    ${extra:+include $extra;}
}
EOF
    nginx -q -t -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" || die "nginx -t failed for $name"
    nginx -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
    NGINX_CONFS+=("$dir/nginx.conf")
    wait_for_port "$put"
}

# Servers that are not part of the shipped config: the Django app behind nginx, and the
# program receiving PUT bodies itself (the shared-hosting path, here through FastCGI).
cat > "$W/extra-servers.conf" <<EOF
server {
    listen 127.0.0.1:$DJANGO_PORT;
    client_max_body_size 0;
    location / {
        proxy_pass http://unix:$SOCK_DJANGO;
        proxy_set_header Host \$http_host;
        proxy_request_buffering off;
    }
}
server {
    listen 127.0.0.1:$RETURN_PORT;
    location / {
        return 200 "";
    }
}
server {
    listen 127.0.0.1:$SELF_PORT;
    location /upload/ {
        client_max_body_size 0;
        fastcgi_request_buffering off;
        include $W/nginx-A/snippets/xmpp-http-upload-fastcgi.conf;
        fastcgi_param CONTENT_LENGTH \$content_length;
        fastcgi_pass unix:$SOCK_PROG;
    }
}
EOF

log "starting the program, the constant responders and authorizer, and nginx"
start_program "$W/config.toml"
"$CONST_BIN" "unix:$SOCK_CONST" 2>>"$W/constant.log" &
CONST_PID=$!
STARTED+=("$CONST_PID")
"$AUTHZ_BIN" "unix:$SOCK_AUTHZ" 2>>"$W/authorizer.log" &
AUTHZ_PID=$!
STARTED+=("$AUTHZ_PID")
"$OLD_BIN" "unix:$SOCK_OLD" 2>>"$W/old-crate.log" &
OLD_PID=$!
STARTED+=("$OLD_PID")
"$REC_BIN" "unix:$SOCK_REC" "$W/db/recording.sqlite3" 2>>"$W/recording.log" &
REC_PID=$!
STARTED+=("$REC_PID")
wait_for_socket "$SOCK_CONST"
wait_for_socket "$SOCK_AUTHZ"
wait_for_socket "$SOCK_OLD"
wait_for_socket "$SOCK_REC"
nginx_instance A "$SOCK_PROG" "$PUT_A" "$SLOT_A" yes "$W/extra-servers.conf"
nginx_instance B "$SOCK_PROG" "$PUT_B" "$SLOT_B" no
nginx_instance C "$SOCK_CONST" "$PUT_C" "$SLOT_C" yes
nginx_instance D "$SOCK_AUTHZ" "$PUT_D" "$SLOT_D" yes
nginx_instance E "$SOCK_OLD" "$PUT_E" "$SLOT_E" yes "" no
nginx_instance F "$SOCK_REC" "$PUT_F" "$SLOT_F" yes

DJANGO_MASTER=""
if [ -z "${NO_DJANGO:-}" ]; then
    log "setting up the Django app in $VENV"
    "$BENCH/django/setup.sh" "$VENV"
    export XHU_BENCH_DJANGO_DIR=$W/django XHU_BENCH_DJANGO_MEDIA=$SHM/django-media \
        XHU_BENCH_DJANGO_TMP=$SHM/django-tmp
    mkdir -p "$SHM/django-media" "$SHM/django-tmp"
    mkdir -p "$XHU_BENCH_DJANGO_DIR"
    (cd "$BENCH/django" && DJANGO_SETTINGS_MODULE=demo.settings PYTHONPATH=. \
        "$VENV/bin/django-admin" migrate -v 0)
    (cd "$BENCH/django" && exec "$VENV/bin/gunicorn" --workers 2 --bind "unix:$SOCK_DJANGO" \
        --log-level warning --error-logfile "$W/gunicorn.log" --control-socket "$W/gunicorn.ctl" \
        demo.wsgi:application >>"$W/gunicorn.log" 2>&1) &
    DJANGO_MASTER=$!
    STARTED+=("$DJANGO_MASTER")
    wait_for_socket "$SOCK_DJANGO"
    sleep 1
fi
django_workers() { [ -n "$DJANGO_MASTER" ] && pgrep -P "$DJANGO_MASTER" | tr '\n' ' '; }

# Sanity: one slot from each, printed into the log.
for url in "http://127.0.0.1:$SLOT_A/http_upload/slot/?jid=admin%40example.com&name=check.jpg&size=10" \
           "http://127.0.0.1:$SLOT_C/http_upload/slot/?jid=admin%40example.com&name=check.jpg&size=10" \
           "http://127.0.0.1:$SLOT_E/http_upload/slot/?jid=admin%40example.com&name=check.jpg&size=10" \
           "http://127.0.0.1:$RETURN_PORT/" \
           ${DJANGO_MASTER:+"http://127.0.0.1:$DJANGO_PORT/http_upload/slot/?jid=admin%40example.com&name=check.jpg&size=10"}; do
    log "check: $(curl -s -w ' -> %{http_code}' "$url" | tr '\n' ' ')"
done

# ---------------------------------------------------------------- measuring
# wrk_run PHASE TARGET CONNS ROUND EXTRA URL SCRIPT [SCRIPT ARGS...]; the RSS column is the sum
# of the peaks of the PIDs in $WATCH (reset just before).
WATCH=""
wrk_run() {
    local phase=$1 target=$2 conns=$3 round=$4 extra=$5 url=$6 script=$7
    shift 7
    local threads=$((conns < 2 ? conns : 2)) out line rss=0 pid before
    # shellcheck disable=SC2086
    before=$(rss_now $WATCH)
    # shellcheck disable=SC2086
    reset_hwm $WATCH
    out=$(wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 10s -s "$script" "$url" -- "$@" 2>&1) \
        || die "wrk failed: $out"
    for pid in $WATCH; do rss=$((rss + $(hwm "$pid"))); done
    line=$(grep '^RESULT' <<<"$out") || die "wrk gave no result: $out"
    # RESULT rps=.. p50_us=.. p99_us=.. non2xx=.. sockerr=.. requests=..
    read -r rps p50 p99 non2xx sockerr requests < <(sed -E 's/[a-z0-9_]+=//g; s/^RESULT //' <<<"$line")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$target" "$conns" "$round" \
        "$rps" "$p50" "$p99" "$non2xx" "$sockerr" "$requests" "$rss" "$extra" "$before" >> "$RESULTS"
    log "$phase $target c=$conns r=$round: $rps/s p50=${p50}us p99=${p99}us non2xx=$non2xx sockerr=$sockerr rss=${rss}KiB"
}

sql() { sqlite3 -cmd ".timeout 10000" "$@"; }

# Inserts unused slots with tokens printf('%040x', BASE + thread * 1e6 + n), n = 1..COUNT, for
# threads 0 and 1 (bench/put.lua), size SIZE, name NAME.
make_put_slots() {    # DB BASE COUNT SIZE NAME
    sql "$1" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $3),
              t(k) AS (VALUES (0), (1))
              INSERT INTO slot (token, jid, name, size, content_type, created)
              SELECT printf('%040x', $2 + k * 1000000 + i), 'admin@example.com', '$5', $4, NULL,
                     CAST(strftime('%s', 'now') AS INTEGER) FROM t, n;"
}

clear_uploads() {
    # nginx may still be finishing the last bodies of a load that just ended: try again.
    local try
    for try in 1 2 3 4 5; do
        rm -rf "$SHM/files" "$SHM/django-media" 2>/dev/null && break
        sleep 0.5
    done
    rm -rf "$SHM/files" "$SHM/django-media"
    mkdir -p "$SHM/files" "$SHM/django-media" "$SHM/django-tmp"
}

phase_slots() {
    local r c
    for r in $(seq "$ROUNDS"); do
        for c in $CONNS; do
            WATCH=$PROG_PID
            wrk_run slots program "$c" "$r" "" "http://127.0.0.1:$SLOT_A/http_upload/slot/" \
                "$BENCH/slot.lua" admin@example.com
            WATCH=$CONST_PID
            wrk_run slots constant "$c" "$r" "" "http://127.0.0.1:$SLOT_C/http_upload/slot/" \
                "$BENCH/slot.lua" admin@example.com
            WATCH=$REC_PID
            wrk_run slots recording "$c" "$r" "" "http://127.0.0.1:$SLOT_F/http_upload/slot/" \
                "$BENCH/slot.lua" admin@example.com
            WATCH=$OLD_PID
            wrk_run slots old-crate "$c" "$r" "" "http://127.0.0.1:$SLOT_E/http_upload/slot/" \
                "$BENCH/slot.lua" admin@example.com
            WATCH=""
            wrk_run slots nginx-return "$c" "$r" "" "http://127.0.0.1:$RETURN_PORT/http_upload/slot/" \
                "$BENCH/slot.lua" admin@example.com
            if [ -n "$DJANGO_MASTER" ]; then
                WATCH=$(django_workers)
                wrk_run slots django "$c" "$r" "" "http://127.0.0.1:$DJANGO_PORT/http_upload/slot/" \
                    "$BENCH/slot.lua" admin@example.com
            fi
            WATCH=$PROG_PID
            wrk_run slots program-quota "$c" "$r" "" "http://127.0.0.1:$SLOT_A/http_upload/slot/" \
                "$BENCH/slot.lua" random:10000
        done
    done
}

phase_put4k() {
    local r base per=50000
    log "put4k: making $((ROUNDS * 2 * 2 * per)) slots"
    for r in $(seq "$ROUNDS"); do
        make_put_slots "$W/db/uploads.sqlite3" $((100000000 + r * 10000000)) "$per" 4096 file.bin
        make_put_slots "$W/db/uploads.sqlite3" $((200000000 + r * 10000000)) "$per" 4096 file.bin
    done
    for r in $(seq "$ROUNDS"); do
        base=$((r * 10000000))
        clear_uploads; WATCH=""
        wrk_run put4k nginx-alone 16 "$r" "" "http://127.0.0.1:$PUT_B/" "$BENCH/put.lua" $((300000000 + base)) 4096
        clear_uploads; WATCH=$PROG_PID
        wrk_run put4k program 16 "$r" "" "http://127.0.0.1:$PUT_A/" "$BENCH/put.lua" $((100000000 + base)) 4096
        clear_uploads; WATCH=$AUTHZ_PID
        wrk_run put4k constant 16 "$r" "" "http://127.0.0.1:$PUT_D/" "$BENCH/put.lua" $((200000000 + base)) 4096
    done
    clear_uploads
}

# One 100 MiB PUT with curl; appends a row (MiB/s in the rps column, seconds in extra).
big_put() {           # TARGET ROUND URL
    local target=$1 round=$2 url=$3 out code secs rss=0 pid before
    clear_uploads
    # shellcheck disable=SC2086
    before=$(rss_now $WATCH)
    # shellcheck disable=SC2086
    reset_hwm $WATCH
    out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -T "$SHM/put-100M.bin" \
        -H 'Content-Type: application/octet-stream' "$url")
    for pid in $WATCH; do rss=$((rss + $(hwm "$pid"))); done
    read -r code secs <<<"$out"
    local mibs
    mibs=$(python3 -c "print(f'{$BIG / 1048576 / $secs:.1f}')")
    local bad=0
    [[ $code == 2* ]] || bad=1
    printf 'put100m\t%s\t1\t%s\t%s\t%s\t%s\t%s\t0\t1\t%s\t\t%s\n' "$target" "$round" "$mibs" \
        "$(python3 -c "print(round($secs * 1e6))")" "$(python3 -c "print(round($secs * 1e6))")" "$bad" "$rss" \
        "$before" >> "$RESULTS"
    log "put100m $target #$round: HTTP $code, ${secs}s, ${mibs} MiB/s, rss=${rss}KiB"
}

phase_put100m() {
    local i tok
    make_put_slots "$W/db/uploads.sqlite3" 400000000 "$BIG_PUTS" "$BIG" big.bin   # auth -> program
    make_put_slots "$W/db/uploads.sqlite3" 500000000 "$BIG_PUTS" "$BIG" big.bin   # program receives
    for i in $(seq "$BIG_PUTS"); do
        WATCH=""
        big_put nginx-alone "$i" "http://127.0.0.1:$PUT_B/upload/$(printf '%040x' $((600000000 + i)))/big.bin"
        WATCH=$PROG_PID
        big_put program "$i" "http://127.0.0.1:$PUT_A/upload/$(printf '%040x' $((400000000 + i)))/big.bin"
        WATCH=$AUTHZ_PID
        big_put constant "$i" "http://127.0.0.1:$PUT_D/upload/$(printf '%040x' $((700000000 + i)))/big.bin"
        WATCH=$PROG_PID
        big_put program-receives-fastcgi "$i" "http://127.0.0.1:$SELF_PORT/upload/$(printf '%040x' $((500000000 + i)))/big.bin"
        if [ -n "$DJANGO_MASTER" ]; then
            local put_url
            put_url=$(curl -s "http://127.0.0.1:$DJANGO_PORT/http_upload/slot/?jid=admin%40example.com&name=big$i.bin&size=$BIG" | head -n1)
            WATCH=$(django_workers)
            big_put django-receives "$i" "$put_url"
        fi
    done
    # The CGI path (shared hosting): one process per request, the body on stdin through a pipe
    # (as a web server's CGI module feeds it). No web server in between: an upper bound.
    make_put_slots "$W/db/uploads.sqlite3" 800000000 "$BIG_PUTS" "$BIG" big.bin
    for i in $(seq "$BIG_PUTS"); do
        clear_uploads
        tok=$(printf '%040x' $((800000000 + i)))
        local t0 t1 out secs kib status
        t0=$(date +%s.%N)
        out=$( { env -i PATH="$PATH" GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=PUT \
            REQUEST_URI="/upload/$tok/big.bin" CONTENT_LENGTH=$BIG \
            CONTENT_TYPE=application/octet-stream REMOTE_ADDR=127.0.0.1 HTTP_HOST=127.0.0.1 \
            XMPP_HTTP_UPLOAD_CONFIG="$W/config.toml" \
            /usr/bin/time -f 'MAXRSS %M' "$BIN" \
            < <(cat "$SHM/put-100M.bin") 2>&1 >"$W/cgi.out"; } | grep '^MAXRSS' || true)
        t1=$(date +%s.%N)
        kib=${out#MAXRSS }
        status=$(head -n1 "$W/cgi.out" | tr -d '\r')
        secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
        local bad=0
        [[ $status == "Status: 201"* ]] || bad=1
        printf 'put100m\tprogram-receives-cgi\t1\t%s\t%s\t%s\t%s\t%s\t0\t1\t%s\t\t0\n' "$i" \
            "$(python3 -c "print(f'{$BIG / 1048576 / $secs:.1f}')")" "$(python3 -c "print(round($secs * 1e6))")" \
            "$(python3 -c "print(round($secs * 1e6))")" "$bad" "$kib" >> "$RESULTS"
        log "put100m cgi #$i: $status, ${secs}s, maxrss=${kib}KiB"
    done
    clear_uploads
}

# Fills the rows database up to N slots (uploaded files of 10,000 JIDs over the last 30 days),
# then measures slot requests at 1 and 16 connections; the slots wrk made are deleted before
# each measurement, so each starts from exactly N rows.
phase_rows() {
    local db=$W/db/rows.sqlite3 have=0 n r c target
    start_program "$W/config-rows.toml"
    curl -s -o /dev/null "http://127.0.0.1:$SLOT_A/http_upload/max_size/?jid=admin%40example.com"
    for n in 1000 100000 1000000; do
        log "rows: filling to $n"
        sleep 1
        sql "$db" "DELETE FROM slot WHERE name NOT LIKE 'prefill-%';"
        sql "$db" "WITH RECURSIVE s(i) AS (SELECT $((have + 1)) UNION ALL SELECT i + 1 FROM s WHERE i < $n)
                   INSERT INTO slot (token, jid, name, size, content_type, created, authorized, uploaded)
                   SELECT lower(hex(randomblob(20))), 'user' || (i % 10000) || '@example.org',
                          'prefill-' || i || '.jpg', 20000 + (i * 7919) % 5000000, 'image/jpeg',
                          t, t + 2, t + 5
                   FROM (SELECT i, CAST(strftime('%s', 'now') AS INTEGER) - abs(random() % 2592000) AS t FROM s);"
        have=$n
        sql "$db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
        local bytes rows
        read -r bytes rows < <(sql -separator ' ' "$db" \
            "SELECT (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size()),
                    (SELECT count(*) FROM slot);")
        printf 'dbsize\tprogram\t0\t0\t\t\t\t\t\t%s\t\t%s\t\n' "$rows" "$bytes" >> "$RESULTS"
        log "rows: $rows slots, $bytes bytes, $((bytes / rows)) bytes/slot"
        for r in $(seq "$ROUNDS"); do
            for c in 1 16; do
                for target in admin quota; do
                    sleep 1   # requests nginx still had in flight when wrk stopped
                    sql "$db" "DELETE FROM slot WHERE name NOT LIKE 'prefill-%';"
                    WATCH=$PROG_PID
                    if [ $target = admin ]; then
                        wrk_run rows "no-limits" "$c" "$r" "$n" "http://127.0.0.1:$SLOT_A/http_upload/slot/" \
                            "$BENCH/slot.lua" admin@example.com
                    else
                        wrk_run rows "quota" "$c" "$r" "$n" "http://127.0.0.1:$SLOT_A/http_upload/slot/" \
                            "$BENCH/slot.lua" random:10000
                    fi
                done
            done
        done
    done
    stop_program
    start_program "$W/config.toml"
}

# Plain CGI (shared hosting): one process per request. hyperfine runs each command directly
# (no shell), the same `env -i` in front of each; the database is on disk ($W/db), as installed.
phase_cgi() {
    command -v hyperfine >/dev/null || die "hyperfine is missing (apt-get install hyperfine)"
    command -v strace >/dev/null || die "strace is missing (apt-get install strace)"
    local cfg=$W/config-cgi.toml env_args json target cmd n
    write_config "$cfg" "$W/db/cgi.sqlite3"
    # Under CGI the program reads no argument (cgi.rs): the configuration comes from the
    # environment, as on a shared host (`--config` below is ignored).
    env_args=(env -i "XMPP_HTTP_UPLOAD_CONFIG=$cfg" GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET
        "REQUEST_URI=/http_upload/slot/?jid=admin%40example.com&name=cgi.txt&size=10"
        REMOTE_ADDR=127.0.0.1 HTTP_HOST=127.0.0.1 RUST_LOG=warn)
    "${env_args[@]}" "$BIN" serve --config "$cfg" >/dev/null   # creates the database
    # What is timed must be a granted slot, not an error page.
    # (captured whole: under pipefail, `| head` would stop the program with EPIPE)
    local answer
    answer=$("${env_args[@]}" "$BIN" serve --config "$cfg")
    [[ $answer == "Status: 200"* ]] || die "the CGI slot request is not answered 200: ${answer%%$'\n'*}"
    for r in $(seq "$ROUNDS"); do
        json=$W/cgi-$r.json
        hyperfine -N -w 10 -r "${CGI_RUNS:-300}" --export-json "$json" \
            -n program "${env_args[*]} $BIN serve --config $cfg" \
            -n constant "${env_args[*]} /usr/bin/printf 'Status: 200 OK\r\n\r\n'" \
            -n version "env -i $BIN --version" >/dev/null
        python3 - "$json" "$r" >> "$RESULTS" <<'PY'
import json, sys
for res in json.load(open(sys.argv[1]))["results"]:
    mean, median = res["mean"] * 1e6, res["median"] * 1e6
    cpu = (res["user"] + res["system"]) * 1e6
    print(f"cgi\tcgi-{res['command']}\t1\t{sys.argv[2]}\t{1e6 / mean:.1f}\t{median:.0f}\t{mean:.0f}"
          f"\t0\t0\t{len(res['times'])}\t\t\t{cpu:.0f}")
PY
        log "cgi #$r: $(grep -P "^cgi\t" "$RESULTS" | grep -P "\t$r\t" | cut -f2,7 | tr '\n\t' '  ')"
    done
    # fsyncs per request over 100 requests (in a row, as a busy shared host would see them).
    n=0
    for i in $(seq 100); do
        strace -f -e trace=fsync,fdatasync -o "$W/cgi-strace.txt" "${env_args[@]}" "$BIN" serve --config "$cfg" >/dev/null
        n=$((n + $(grep -cE 'fsync|fdatasync' "$W/cgi-strace.txt" || true)))
    done
    printf 'cgi\tcgi-fsyncs-per-100\t1\t1\t%s\t\t\t0\t0\t100\t\t\t\n' "$n" >> "$RESULTS"
    log "cgi: $n fsyncs in 100 slot requests"
}

# PostgreSQL beside SQLite (issue 16): slot requests at 16 and 64 connections (PG_CONNS) with
# the program on a fresh SQLite file and then on a fresh PostgreSQL database, each with no
# limits (admin@example.com), quotas over 10,000 JIDs (random:10000), and quotas of one JID
# (user1@example.org: every request waits for the same per-JID lock). PostgreSQL is Debian's
# (PG_BIN, newest /usr/lib/postgresql/*/bin), a cluster of its own in $W/pg with initdb's
# defaults (fsync and synchronous_commit on, like SQLite's database on disk), owned by `nobody`
# when run as root, on a loopback TCP port, as another host would reach it. Rows: phase
# `postgres`, targets <store>-<no-limits|quota|one-jid>; a table in $W/postgres.md. PG_STORES
# ("sqlite postgres") picks the stores.
phase_postgres() {
    local pg_bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
    [ -x "$pg_bin/postgres" ] || die "PostgreSQL is missing (apt-get install postgresql)"
    local pg_port=$((PORT_BASE + 95)) data=$W/pg as=() store r c mode label
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then chown nobody:nogroup "$data"; as=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
    "${as[@]}" "$pg_bin/initdb" -D "$data/data" -U xhu --auth=trust -E UTF8 --locale=C >/dev/null
    "${as[@]}" "$pg_bin/pg_ctl" -D "$data/data" -l "$data/log" -w \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data -c max_connections=200" start >/dev/null
    "${as[@]}" "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U xhu -d postgres -c "CREATE DATABASE uploads"
    write_config "$W/config-postgres.toml" "postgres://xhu@127.0.0.1:$pg_port/uploads"
    write_config "$W/config-postgres-sqlite.toml" "$W/db/postgres-phase.sqlite3"
    for store in ${PG_STORES:-sqlite postgres}; do
        if [ $store = sqlite ]; then start_program "$W/config-postgres-sqlite.toml"
        else start_program "$W/config-postgres.toml"; fi
        for r in $(seq "$ROUNDS"); do
            for c in ${PG_CONNS:-16 64}; do
                for mode in admin@example.com random:10000 user1@example.org; do
                    case $mode in admin*) label=no-limits ;; random*) label=quota ;; *) label=one-jid ;; esac
                    WATCH=$PROG_PID
                    wrk_run postgres "$store-$label" "$c" "$r" "" \
                        "http://127.0.0.1:$SLOT_A/http_upload/slot/" "$BENCH/slot.lua" "$mode"
                done
            done
        done
    done
    echo "postgres: $("$pg_bin/postgres" --version)" >> "$W/machine.txt"
    "${as[@]}" "$pg_bin/pg_ctl" -D "$data/data" -m fast -w stop >/dev/null
    start_program "$W/config.toml"
    python3 - "$RESULTS" > "$W/postgres.md" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if r["phase"] == "postgres"]
groups = {}
for r in rows:
    groups.setdefault((r["target"], int(r["conns"])), []).append(r)
med = lambda rs, f: statistics.median(float(r[f]) for r in rs)
print("| connections | limits | SQLite req/s (p50 / p99 ms) | PostgreSQL req/s (p50 / p99 ms) | PostgreSQL ÷ SQLite |")
print("|---|---|---|---|---|")
for conns in sorted({c for _, c in groups}):
    for label in ("no-limits", "quota", "one-jid"):
        cells = []
        for store in ("sqlite", "postgres"):
            rs = groups.get((f"{store}-{label}", conns), [])
            cells.append((med(rs, "rps"), med(rs, "p50_us") / 1000, med(rs, "p99_us") / 1000) if rs else None)
        shown = [f"{c[0]:,.0f} ({c[1]:.1f} / {c[2]:.1f})" if c else "–" for c in cells]
        ratio = f"{cells[1][0] / cells[0][0]:.2f}" if all(cells) else "–"
        print(f"| {conns} | {label} | {shown[0]} | {shown[1]} | {ratio} |")
bad = sum(int(r["non2xx"]) + int(r["sockerr"]) for r in rows)
print(f"\nNon-2xx answers and socket errors: {bad} of {sum(int(r['requests']) for r in rows):,}.")
PY
    cat "$W/postgres.md" >&2
}

# Keeps everything running for poking at by hand (bench/run.sh hold); Ctrl-C ends it.
phase_hold() {
    log "holding: slots http://127.0.0.1:$SLOT_A/http_upload/slot/ (program), :$SLOT_C (constant),"
    log "  :$SLOT_F (constant storing a slot each), :$SLOT_E (old crate), :$RETURN_PORT (nginx return 200),"
    log "  :$PUT_D (auth -> constant authorizer),"
    log "  :$DJANGO_PORT (Django); PUTs :$PUT_A (auth -> program), :$PUT_B (nginx alone),"
    log "  :$PUT_C (auth -> constant), :$SELF_PORT (program receives); program pid $PROG_PID"
    while true; do sleep 3600 & wait $!; done
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    if [ -n "${XHU_BENCH_REV:-}" ]; then
        echo "program: $(git -C "$REPO" rev-parse --short "$XHU_BENCH_REV")"
    else
        echo "program: $(git -C "$REPO" rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src examples Cargo.toml Cargo.lock .cargo || echo ' + uncommitted changes')"
    fi
    echo "nginx config: $(git -C "$REPO" log -1 --format=%h -- nginx/xmpp-http-upload.conf 2>/dev/null | grep . || echo 'work tree, not yet committed')$(cd "$REPO" && git diff --quiet HEAD -- nginx 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "cpu: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel: $(uname -r)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "wrk: $(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
    echo "rounds: $ROUNDS x $DURATION"
} > "$W/machine.txt"

for phase in "${PHASES[@]}"; do
    log "phase $phase"
    "phase_$phase"
done

log "program log: $(grep -c ' ERROR ' "$W/program.log" || true) error lines, $(grep -ci 'panic' "$W/program.log" || true) panic lines"
grep -i -m5 'panic\| ERROR ' "$W/program.log" >&2 || true
python3 "$BENCH/report.py" "$W" | tee "$W/report.md"
