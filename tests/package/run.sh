#!/usr/bin/env bash
# The Debian package, installed for real (CI, as root, Debian 12): build it with cargo-deb,
# lintian it, apt-get install it, check the user, the directories and their modes, the
# conffiles and check-config; then drive the installed binary, running as the package's
# user on the unit's socket path, behind a real nginx (workers as www-data, as Debian runs
# it) with the installed snippets and site; then upgrade to a rebuilt package with an edited
# config, remove, purge. systemd is not PID 1 here: the socket is made the way
# xmpp-http-upload.socket makes it and handed over as fd 0 (StandardInput=socket).
# Prints "N passed, N failed" at the end; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

user=_xmpp-http-upload
state=/var/lib/xmpp-http-upload
config=/etc/xmpp-http-upload/config.toml
work=$(mktemp -d /tmp/xhu-package.XXXXXX)
passed=0
failed=0
nginx_pid=
program_pid=

ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAILED: $1"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# is DESCRIPTION EXPECTED ACTUAL
# contains DESCRIPTION TEXT PART: passes when TEXT contains PART.
contains() { if [[ "$2" == *"$3"* ]]; then ok "$1"; else bad "$1: '$3' not in '$2'"; fi; }
is() { if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: expected '$2', got '$3'"; fi; }
mode_of() { stat -c '%U:%G %a' "$1" 2>/dev/null || echo missing; }
as_user() { runuser -u "$user" -- "$@"; }

stop_servers() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    [ -n "$program_pid" ] && kill "$program_pid" 2>/dev/null && wait "$program_pid" 2>/dev/null
    nginx_pid=
    program_pid=
}
finish() {
    stop_servers
    if [ "$failed" -ne 0 ]; then
        for log in "$work"/*.log; do echo "--- $log"; tail -n 30 "$log"; done
    fi
    rm -rf "$work"
}
trap finish EXIT

# A machine that ran this before may still have the package.
apt-get purge -y -qq xmpp-http-upload >/dev/null 2>&1 || true

echo "== cargo deb"
start=$(date +%s)
cargo deb 2>&1 | tail -n 1
deb=target/debian/xmpp-http-upload_$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')-1_amd64.deb
check "the package was built: $deb" test -f "$deb"
echo "   ($(($(date +%s) - start)) s)"

echo "== lintian"
lintian "$deb" >"$work/lintian.log" 2>&1
cat "$work/lintian.log"
# Expected warnings (INSTALL.md, "The Debian package"): initial-upload-closes-no-bugs,
# non-standard-file-perm (config.toml is 0640: it may hold secrets),
# package-contains-upstream-installation-documentation (INSTALL.md sets up the web server).
check "lintian reports no error" bash -c "! grep -q '^E:' '$work/lintian.log'"
unexpected=$(grep '^W:' "$work/lintian.log" | grep -v -e initial-upload-closes-no-bugs \
    -e 'non-standard-file-perm 0640 != 0644 \[etc/xmpp-http-upload/config.toml\]' \
    -e package-contains-upstream-installation-documentation || true)
is "lintian reports no unexplained warning" "" "$unexpected"

echo "== apt-get install ./$deb"
check "apt-get install" apt-get install -y -qq "./$deb"
check "the binary is in /usr/bin" test -x /usr/bin/xmpp-http-upload
is "--version" "xmpp-http-upload 0.1.0" "$(xmpp-http-upload --version)"
check "man page xmpp-http-upload(8)" test -f /usr/share/man/man8/xmpp-http-upload.8.gz
check "man page xmpp-http-upload.toml(5)" test -f /usr/share/man/man5/xmpp-http-upload.toml.5.gz

echo "== user, directories, modes, conffiles"
check "system user $user" getent passwd "$user"
is "its shell" /usr/sbin/nologin "$(getent passwd "$user" | cut -d: -f7)"
check "its uid is a system uid" test "$(id -u "$user")" -lt 1000
check "$user is in group www-data (the upload tree's group)" bash -c "id -nG $user | tr ' ' '\n' | grep -qx www-data"
check "www-data is not in group $user (cannot read the config)" bash -c "! id -nG www-data | tr ' ' '\n' | grep -qx $user"
is "$state" "$user:www-data 750" "$(mode_of "$state")"
is "$state/files (setgid upload root)" "$user:www-data 2770" "$(mode_of "$state/files")"
is "$state/db" "$user:$user 700" "$(mode_of "$state/db")"
is "$config" "root:$user 640" "$(mode_of "$config")"
conffiles=$(dpkg-query --showformat='${Conffiles}\n' --show xmpp-http-upload | awk 'NF { print $1 }' | sort | tr '\n' ' ')
is "conffiles" "/etc/apache2/sites-available/xmpp-http-upload.conf /etc/nginx/sites-available/xmpp-http-upload /etc/nginx/snippets/xmpp-http-upload-fastcgi.conf /etc/nginx/snippets/xmpp-http-upload-files.conf /etc/nginx/snippets/xmpp-http-upload-slot-api.conf /etc/xmpp-http-upload/config.toml " "$conffiles"
check "the nginx site is not enabled" test ! -e /etc/nginx/sites-enabled/xmpp-http-upload
for unit in xmpp-http-upload.socket xmpp-http-upload-cleanup.timer; do
    check "$unit is enabled" test -L "/etc/systemd/system/$(grep -h '^WantedBy=' "/lib/systemd/system/$unit" | cut -d= -f2).wants/$unit"
done
check "xmpp-http-upload.service is not enabled (its socket starts it)" test ! -e /etc/systemd/system/multi-user.target.wants/xmpp-http-upload.service
check "systemd-analyze verify" systemd-analyze verify --man=no /lib/systemd/system/xmpp-http-upload.socket \
    /lib/systemd/system/xmpp-http-upload.service /lib/systemd/system/xmpp-http-upload-cleanup.service \
    /lib/systemd/system/xmpp-http-upload-cleanup.timer
for unit in xmpp-http-upload.service xmpp-http-upload-cleanup.service; do
    systemd-analyze security --offline=true "/lib/systemd/system/$unit" 2>/dev/null | tail -n 1
done

echo "== check-config"
check "check-config as $user" as_user xmpp-http-upload check-config
as_user xmpp-http-upload check-config | head -n 1
out=$(runuser -u nobody -- xmpp-http-upload check-config 2>&1)
check "check-config as nobody fails: it cannot read the config ($out)" bash -c "! runuser -u nobody -- xmpp-http-upload check-config >/dev/null 2>&1"
# A config nobody can read, naming the package's directories: nobody cannot reach them.
chmod 711 "$work"
cp "$config" "$work/readable.toml" && chmod 644 "$work/readable.toml"
out=$(runuser -u nobody -- xmpp-http-upload check-config --config "$work/readable.toml" 2>&1)
contains "check-config as nobody says it cannot reach the upload root" "$out" \
    "upload_root $state/files: this user cannot reach it"
out=$(as_user xmpp-http-upload serve --listen unix:/nonexistent/xhu/fcgi.sock 2>&1)
contains "serve names the socket path it cannot listen on" "$out" "cannot listen on unix:/nonexistent/xhu/fcgi.sock"

echo "== the installed binary as $user, behind nginx with the installed snippets"
# As xmpp-http-upload.socket: /run/xmpp-http-upload (0755), the socket $user:www-data 0660,
# handed over as fd 0; as the service: user $user, UMask=0007.
mkdir -p -m 0755 /run/xmpp-http-upload
python3 - "$user" >"$work/program.log" 2>&1 <<'PY' &
import grp, os, pwd, socket, sys
user = sys.argv[1]
path = "/run/xmpp-http-upload/fcgi.sock"
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam("www-data").gr_gid)
os.chmod(path, 0o660)
s.listen(1024)
os.dup2(s.fileno(), 0)
os.umask(0o007)
os.environ["RUST_LOG"] = "info"
os.execvp("setpriv", ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                      "/usr/bin/xmpp-http-upload", "serve", "--config", "/etc/xmpp-http-upload/config.toml"])
PY
program_pid=$!
# The health check below must not race the socket's creation (python starting, then binding).
for _ in $(seq 100); do
    [ -S /run/xmpp-http-upload/fcgi.sock ] && break
    sleep 0.05
done

port=$((20000 + RANDOM % 20000))
slot_port=$((port + 1))
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=upload.example.org \
    -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1
# The installed site, only its ports and certificate changed.
sed -e "s|listen 443 ssl http2;|listen 127.0.0.1:$port ssl http2;|" \
    -e "s|listen \[::\]:443 ssl http2;||" \
    -e "s|listen 127.0.0.1:9363;|listen 127.0.0.1:$slot_port;|" \
    -e "s|/etc/letsencrypt/live/upload.example.org/fullchain.pem|$work/cert.pem|" \
    -e "s|/etc/letsencrypt/live/upload.example.org/privkey.pem|$work/key.pem|" \
    /etc/nginx/sites-available/xmpp-http-upload >"$work/site.conf"
cat >"$work/nginx.conf" <<NGINX
user www-data;
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log info;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log $work/nginx-access.log;
    include $work/site.conf;
}
NGINX
ln -s /etc/nginx/snippets "$work/snippets"
check "nginx -t with the installed site and snippets" nginx -q -t -c "$work/nginx.conf"
nginx -c "$work/nginx.conf" >"$work/nginx.log" 2>&1 &
nginx_pid=$!
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$slot_port/" && break
    sleep 0.1
done

public=(--connect-to "upload.example.org:443:127.0.0.1:$port" -k)
max=$(curl -s "http://127.0.0.1:$slot_port/http_upload/max_size/?jid=user@example.org")
is "health check: max_size of user@example.org (100 MiB)" 104857600 "$max"
echo 'hello from the package' >"$work/hello.txt"
size=$(stat -c %s "$work/hello.txt")
slot=$(curl -s "http://127.0.0.1:$slot_port/http_upload/slot/?jid=user@example.org&name=hello.txt&size=$size&content_type=text/plain")
put_url=$(echo "$slot" | sed -n 1p)
get_url=$(echo "$slot" | sed -n 2p)
check "a slot ($put_url)" bash -c "[[ '$put_url' == https://upload.example.org/upload/* ]]"
status=$(curl -s -o /dev/null -w '%{http_code}' "${public[@]}" -T "$work/hello.txt" -H 'Content-Type: text/plain' "$put_url")
is "PUT through nginx" 201 "$status"
body=$(curl -s "${public[@]}" "$get_url")
is "GET through nginx" "hello from the package" "$body"
status=$(curl -s -o /dev/null -w '%{http_code}' "${public[@]}" -T "$work/hello.txt" -H 'Content-Type: text/plain' "$put_url")
is "a second PUT to the slot is refused" 409 "$status"
denied=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$slot_port/http_upload/slot/?jid=stranger@elsewhere.example&name=a.txt&size=1")
is "a JID the default rules do not allow gets no slot" 403 "$denied"
token_dir=$(dirname "$state/files/${put_url#https://upload.example.org/upload/}")
is "the token directory (the program's, setgid)" "$user:www-data 2770" "$(mode_of "$token_dir")"
is "the uploaded file (nginx's)" "www-data:www-data 660" "$(mode_of "$token_dir/hello.txt")"
# nginx stored the body; the program learns of it at the next cleanup (until then `check`
# reports an unconfirmed upload).
check "cleanup as $user" as_user xmpp-http-upload cleanup
check "check as $user: database and upload root agree" as_user xmpp-http-upload check
check "the file is still there (within retention)" test -f "$token_dir/hello.txt"
stop_servers

echo "== upgrade to a rebuilt package, with an edited config"
sed -i 's|^retention = "30d"|retention = "7d"   # edited by the admin|' "$config"
cargo deb --no-build --deb-revision 2 2>&1 | tail -n 1
check "apt-get install the rebuilt package" apt-get install -y -qq "./${deb%-1_amd64.deb}-2_amd64.deb"
is "installed version" "0.1.0-2" "$(dpkg-query --showformat='${Version}' --show xmpp-http-upload)"
check "the admin's edit is kept" grep -q 'edited by the admin' "$config"
is "$config after the upgrade" "root:$user 640" "$(mode_of "$config")"
check "the upload survived the upgrade" test -f "$token_dir/hello.txt"
check "check-config after the upgrade" as_user xmpp-http-upload check-config

echo "== remove (config and data stay), purge (both go)"
check "apt-get remove" apt-get remove -y -qq xmpp-http-upload
check "the binary is gone" test ! -e /usr/bin/xmpp-http-upload
check "the config stays" grep -q 'edited by the admin' "$config"
check "the uploads stay" test -f "$token_dir/hello.txt"
check "apt-get purge" apt-get purge -y -qq xmpp-http-upload
check "the config is gone" test ! -e /etc/xmpp-http-upload
check "the data is gone" test ! -e "$state"
check "the nginx snippets are gone" bash -c "! ls /etc/nginx/snippets/xmpp-http-upload-* 2>/dev/null"
check "the user stays (a reused uid must not own leftovers)" getent passwd "$user"
check "dpkg forgot the package" bash -c "! dpkg-query --show xmpp-http-upload >/dev/null 2>&1"

echo "package: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
