#!/usr/bin/python3
"""XMPP client side of the end-to-end test (tests/e2e/run.sh).

Logs in to Prosody with slixmpp, checks that the server is the pinned version of the
generation under test (XEP-0092), asks each upload component for slots (XEP-0363),
records exactly what Prosody sent (URLs, headers, JWT claims), checks the signatures
independently (HMAC and JWT computed here from the shared secrets, not by the program),
PUTs the files through nginx + xmpp-http-upload the way XMPP clients do, downloads them
and compares the bytes. Also sends a few uploads that must be refused.

Prints one `ok` / `FAIL` line per check, writes everything it saw to --report (JSON) and
ends with `E2E RESULT: PASS` (exit 0) or `E2E RESULT: FAIL` (exit 1).
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import os
import time
import urllib.parse

# Before slixmpp is imported: it warns about its pure-Python stringprep on import.
logging.getLogger("slixmpp.stringprep").setLevel(logging.ERROR)

import aiohttp  # noqa: E402
import slixmpp  # noqa: E402
import slixmpp.exceptions  # noqa: E402
from slixmpp import JID  # noqa: E402
from e2e_common import check, check_server_version, http, run_to_end  # noqa: E402

REPORT = {"slixmpp": slixmpp.__version__, "aiohttp": aiohttp.__version__, "services": {}}



def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_hs256(secret, claims):
    """A token signed here, with a secret of our choice (for the negative tests)."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def examine_jwt(token, secret):
    """Decode Prosody's token and verify it independently."""
    head_b64, body_b64, sig_b64 = token.split(".")
    header = json.loads(b64url_decode(head_b64))
    claims = json.loads(b64url_decode(body_b64))
    mac = hmac.new(secret.encode(), f"{head_b64}.{body_b64}".encode(), hashlib.sha256).digest()
    return {
        "header": header,
        "claims": claims,
        "signature_valid": hmac.compare_digest(mac, b64url_decode(sig_b64)),
        "padding_free": "=" not in token,
    }


def examine_hmac(put_url, base_path, secret, size, content_type):
    """Recompute the MAC of a mod_http_upload_external URL (BEHAVIOUR.md §7)."""
    parts = urllib.parse.urlsplit(put_url)
    raw_path = parts.path
    assert raw_path.startswith(base_path), (raw_path, base_path)
    signed_path = urllib.parse.unquote(raw_path[len(base_path):], encoding="utf-8", errors="strict")
    query = urllib.parse.parse_qs(parts.query)
    out = {"raw_path": raw_path, "query": parts.query, "signed_path": signed_path}
    if "v2" in query:
        msg = f"{signed_path}\0{size}\0{content_type}"
        out["param"] = "v2"
        mac = query["v2"][0]
    else:
        msg = f"{signed_path} {size}"
        out["param"] = "v"
        mac = query["v"][0]
    expected = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()
    out["mac"] = mac
    out["mac_valid"] = hmac.compare_digest(expected, mac)
    out["mac_lowercase_hex"] = mac == mac.lower() and len(mac) == 64
    return out



class E2EClient(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0128")
        self.register_plugin("xep_0363")
        self.register_plugin("xep_0092")
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.done = asyncio.Event()
        self.captured_slots = []
        # Capture the slot IQs that slixmpp's own upload_file() receives.
        plugin = self.plugin["xep_0363"]
        original = plugin.request_slot

        def request_slot(*a, **kw):
            fut = original(*a, **kw)
            fut.add_done_callback(
                lambda f: self.captured_slots.append(f.result()) if not f.exception() else None
            )
            return fut

        plugin.request_slot = request_slot

    def on_failed_auth(self, _event):
        check(False, "XMPP login", "authentication failed")
        self.done.set()

    async def start(self, _event):
        try:
            check(True, "XMPP login", str(self.boundjid))
            if not await check_server_version(self, self.args.expect_server, self.args.generation):
                return  # the wrong server: nothing else it says would count
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                if self.args.role == "denied":
                    await self.denied_user(session)
                    return
                try:
                    await self.short_lived(session)
                except Exception as e:  # noqa: BLE001
                    logging.exception("short-lived upload")
                    check(False, "share-short.localhost: no exception", repr(e))
                try:
                    await self.never_expiring(session)
                except Exception as e:  # noqa: BLE001
                    logging.exception("never-expiring upload")
                    check(False, "share-never.localhost: no exception", repr(e))
                for service, kind in [
                    ("upload.localhost", "hmac"),
                    ("upload2.localhost", "hmac"),
                    ("share.localhost", "jwt"),
                ]:
                    try:
                        await self.exercise(session, service, kind)
                    except Exception as e:  # noqa: BLE001 - report and go on
                        logging.exception("service %s", service)
                        check(False, f"{service}: no exception", repr(e))
        finally:
            self.disconnect()
            try:
                await asyncio.wait_for(self.disconnected, timeout=5)
            except asyncio.TimeoutError:
                pass
            self.done.set()

    async def short_lived(self, session):
        """An upload whose token says `expires` = iat + 3 s; run.sh runs the cleanup later."""
        body = b"this file expires in 3 seconds\n"
        s = await self.slot("share-short.localhost", "short lived.txt", len(body), "text/plain")
        claims = examine_jwt(s["headers"]["Authorization"][len("Bearer "):], self.args.jwt_secret)["claims"]
        st, _, msg = await http(session, "PUT", s["put"], body, {"Content-Type": "text/plain", **s["headers"]})
        check(st == 201, "share-short.localhost: PUT -> 201", f"{st} {msg[:80]!r}")
        st, _, data = await http(session, "GET", s["get"])
        check(st == 200 and data == body, "share-short.localhost: GET returns the same bytes", str(st))
        REPORT["short_lived"] = {"get": s["get"], "expires": claims.get("expires"), "iat": claims.get("iat"),
                                 "path": urllib.parse.unquote(urllib.parse.urlsplit(s["get"]).path)}

    async def never_expiring(self, session):
        """http_file_share_expires_after = -1 (never): the token carries no `expires` at all,
        and the program takes the upload all the same (it keeps such a file until its
        `retention`; run.sh's cleanup must leave it)."""
        body = b"this file never expires\n"
        s = await self.slot("share-never.localhost", "kept.txt", len(body), "text/plain")
        e = examine_jwt(s["headers"]["Authorization"][len("Bearer "):], self.args.jwt_secret)
        c = e["claims"]
        REPORT["never_expiring"] = {"claims": c}
        check(e["signature_valid"], "share-never.localhost: JWT HS256 signature verified independently")
        check("expires" not in c, "share-never.localhost: no `expires` claim when files never expire",
              json.dumps(c, ensure_ascii=False))
        check(c.get("exp", 0) - c.get("iat", 0) == self.args.jwt_ttl,
              f"share-never.localhost: exp = iat + {self.args.jwt_ttl}")
        st, _, msg = await http(session, "PUT", s["put"], body, {"Content-Type": "text/plain", **s["headers"]})
        check(st == 201, "share-never.localhost: PUT -> 201", f"{st} {msg[:80]!r}")
        st, _, data = await http(session, "GET", s["get"])
        check(st == 200 and data == body, "share-never.localhost: GET returns the same bytes", str(st))

    async def denied_user(self, session):
        """A user whom the program's rules deny: Prosody still grants slots (it does not know
        our rules), but only the JWT protocol tells the program who uploads (`sub`), so only
        that upload is refused; the HMAC URL names nobody and is accepted."""
        me = self.args.jid
        body = b"from a denied user\n"
        s = await self.slot("share.localhost", "denied.txt", len(body), "text/plain")
        REPORT["services"]["share.localhost (denied user)"] = s
        st, _, msg = await http(session, "PUT", s["put"], body, {"Content-Type": "text/plain", **s["headers"]})
        s["put_result"] = st
        check(st == 403, f"share.localhost: PUT by {me} (denied by the rules, JWT sub) refused (403)",
              f"{st} {msg[:80]!r}")
        st, _, _ = await http(session, "GET", s["get"])
        check(st == 404, f"share.localhost: nothing stored for {me}", str(st))
        s = await self.slot("upload.localhost", "denied.txt", len(body), "text/plain")
        REPORT["services"]["upload.localhost (denied user)"] = s
        st, _, msg = await http(session, "PUT", s["put"], body, {"Content-Type": "text/plain"})
        s["put_result"] = st
        check(st == 201, f"upload.localhost: PUT by {me} accepted (HMAC URLs carry no JID)",
              f"{st} {msg[:80]!r}")

    async def slot(self, service, name, size, ctype):
        iq = await self.plugin["xep_0363"].request_slot(JID(service), name, size, ctype, timeout=15)
        slot = iq["http_upload_slot"]
        put = slot["put"]["url"]
        get = slot["get"]["url"]
        headers = {h["name"]: h["value"] for h in slot["put"]["headers"]}
        return {"put": put, "get": get, "headers": headers, "xml": str(slot)}

    async def exercise(self, session, service, kind):
        rep = REPORT["services"].setdefault(service, {"kind": kind})
        info = await self.plugin["xep_0030"].get_info(jid=JID(service), timeout=15)
        forms = [f.get_values() for f in info["disco_info"].iterables]
        rep["disco"] = {
            "identities": [list(i) for i in info["disco_info"]["identities"]],
            "forms": forms,
        }
        check(
            "urn:xmpp:http:upload:0" in info["disco_info"]["features"],
            f"{service}: disco advertises urn:xmpp:http:upload:0",
        )

        # 0. Over Prosody's own size limit (10 MiB in the e2e config): what does Prosody answer?
        try:
            await self.plugin["xep_0363"].request_slot(JID(service), "big.bin", 20 * 1048576, timeout=3)
            over = "a slot"
        except slixmpp.exceptions.IqError as e:
            over = "error " + e.iq["error"]["condition"] + " " + str(e.iq["error"])
        except slixmpp.exceptions.IqTimeout:
            over = "no reply within 3 s"
        rep["over_limit_slot_request"] = over
        if kind == "jwt":
            check(over.startswith("error not-acceptable"), f"{service}: over-limit slot request -> not-acceptable",
                  over[:60])
        else:
            print(f"note  {service}: over-limit slot request -> {over[:100]}")

        # 1. A text file with a name that needs escaping, through a request built here.
        name = "Привет мир (1) ;x!~*'&=+$,:@.txt"
        body = "Здравствуй, мир! hello\n".encode() * 3
        ctype = "text/plain; charset=utf-8"
        s = await self.slot(service, name, len(body), ctype)
        rep["slot_text"] = s
        examined = self.examine(service, kind, s, len(body), ctype, name)
        rep["slot_text"]["examined"] = examined

        put_headers = {"Content-Type": ctype, **s["headers"]}
        # Refused first: wrong size (one byte more than the slot's), then a tampered signature.
        st, _, msg = await http(session, "PUT", s["put"], body + b"!", put_headers)
        rep["slot_text"]["put_wrong_size"] = st
        # The shipped nginx site answers with the program's own status (XHU-Status): the HMAC
        # covers the size (403), the JWT names it (413).
        want = 403 if kind == "hmac" else 413
        check(st == want, f"{service}: PUT with another size refused ({want})", f"{st} {msg[:80]!r}")
        if kind == "hmac":
            mac = examined["mac"]
            bad = mac[:-1] + ("0" if mac[-1] != "0" else "1")
            st, _, msg = await http(session, "PUT", s["put"].replace(mac, bad), body, put_headers)
            rep["slot_text"]["put_bad_mac"] = st
            check(st == 403, f"{service}: PUT with a tampered MAC refused (403)", f"{st} {msg[:80]!r}")
            st, _, msg = await http(session, "PUT", s["put"].split("?")[0], body, put_headers)
            rep["slot_text"]["put_no_mac"] = st
            check(st == 403, f"{service}: PUT without MAC refused (403)", f"{st} {msg[:80]!r}")
        else:
            st, hdrs, msg = await http(session, "PUT", s["put"], body, {"Content-Type": ctype})
            rep["slot_text"]["put_no_authorization"] = [st, hdrs.get("WWW-Authenticate")]
            check(st == 401 and hdrs.get("WWW-Authenticate", "").startswith("Bearer"),
                  f"{service}: PUT without Authorization -> 401 + WWW-Authenticate: Bearer",
                  f"{st} {hdrs.get('WWW-Authenticate')}")
            forged = jwt_hs256("not the secret", examined["claims"])
            st, _, msg = await http(
                session, "PUT", s["put"], body, {"Content-Type": ctype, "Authorization": "Bearer " + forged}
            )
            rep["slot_text"]["put_wrong_secret"] = st
            check(st == 401, f"{service}: PUT with a token of another secret -> 401", f"{st}")
            # A genuine token of another slot (Prosody's, for another file) does not fit this URL.
            other = await self.slot(service, "other.txt", len(body), ctype)
            st, _, _ = await http(session, "PUT", s["put"], body, {"Content-Type": ctype, **other["headers"]})
            rep["slot_text"]["put_token_of_other_slot"] = st
            check(st == 400, f"{service}: PUT with the token of another slot refused (400)", f"{st}")
            st, _, _ = await http(session, "PUT", s["put"], body, {"Content-Type": "image/png", **s["headers"]})
            rep["slot_text"]["put_other_type"] = st
            check(st == 415, f"{service}: PUT with another Content-Type refused (415)", f"{st}")

        # Now the real upload: exactly the slot's URL and headers.
        st, hdrs, msg = await http(session, "PUT", s["put"], body, put_headers)
        rep["slot_text"]["put_result"] = [st, msg.decode(errors="replace")]
        check(st == 201, f"{service}: PUT with the slot's URL and headers -> 201", f"{st} {msg[:120]!r}")
        st, hdrs, data = await http(session, "GET", s["get"])
        rep["slot_text"]["download"] = {"status": st, "headers": hdrs}
        check(st == 200 and data == body, f"{service}: GET returns the same bytes", f"{st}, {len(data)} bytes")
        check(
            hdrs.get("X-Content-Type-Options") == "nosniff",
            f"{service}: download has X-Content-Type-Options: nosniff",
        )
        check(hdrs.get("Content-Type", "").startswith("text/plain")
              and hdrs.get("Content-Disposition", "").startswith("inline"),
              f"{service}: text/plain download is shown inline",
              f"{hdrs.get('Content-Type')}; {hdrs.get('Content-Disposition')}")
        st, hdrs, _ = await http(session, "HEAD", s["get"])
        check(
            st == 200 and hdrs.get("Content-Length") == str(len(body)),
            f"{service}: HEAD 200 with Content-Length",
            f"{st} {hdrs.get('Content-Length')}",
        )
        st, _, msg = await http(session, "PUT", s["put"], b"X" * len(body), put_headers)
        rep["slot_text"]["put_again"] = st
        check(st == 409, f"{service}: second PUT to the same slot refused (409)", f"{st} {msg[:80]!r}")
        st, _, data = await http(session, "GET", s["get"])
        check(data == body, f"{service}: file unchanged after the second PUT")

        # 1b. A slot request without content-type (slixmpp always sends one, so this IQ is
        # built by hand): Prosody signs / claims application/octet-stream; the client PUTs
        # without a Content-Type header.
        iq = self.make_iq_get(ito=JID(service))
        iq["http_upload_request"]["filename"] = "untyped"
        iq["http_upload_request"]["size"] = "5"
        del iq["http_upload_request"]["content-type"]
        slot = (await iq.send(timeout=15))["http_upload_slot"]
        s3 = {"put": slot["put"]["url"], "get": slot["get"]["url"],
              "headers": {h["name"]: h["value"] for h in slot["put"]["headers"]},
              "request": str(iq)}
        s3["examined"] = self.examine(service, kind, s3, 5, "application/octet-stream", "untyped")
        st, _, msg = await http(session, "PUT", s3["put"], b"12345", s3["headers"])
        s3["put_without_content_type"] = st
        rep["slot_untyped"] = s3
        check(st == 201, f"{service}: slot requested without type, PUT without Content-Type -> 201",
              f"{st} {msg[:80]!r}")

        # 2. A 1.5 MB binary through slixmpp's own XEP-0363 helper (what a bot would do):
        # no content type given, so Prosody signs/claims application/octet-stream.
        blob = os.urandom(1536 * 1024)
        plugin = self.plugin["xep_0363"]
        plugin.upload_service = JID(service)
        plugin.max_file_size = 10485760
        n = len(self.captured_slots)
        try:
            url = await plugin.upload_file("data 2.bin", input_file=io.BytesIO(blob), timeout=30)
            check(True, f"{service}: slixmpp upload_file() of 1.5 MB succeeded")
        except Exception as e:  # noqa: BLE001
            url = None
            check(False, f"{service}: slixmpp upload_file() of 1.5 MB succeeded", repr(e))
        if len(self.captured_slots) > n:
            slot = self.captured_slots[n]["http_upload_slot"]
            s2 = {
                "put": slot["put"]["url"],
                "get": slot["get"]["url"],
                "headers": {h["name"]: h["value"] for h in slot["put"]["headers"]},
            }
            s2["examined"] = self.examine(service, kind, s2, len(blob), "application/octet-stream", "data 2.bin")
            rep["slot_binary"] = s2
        if url:
            st, hdrs, data = await http(session, "GET", url)
            rep.setdefault("slot_binary", {})["download"] = {"status": st, "headers": hdrs}
            check(st == 200 and data == blob, f"{service}: GET of the 1.5 MB file returns the same bytes",
                  f"{st}, {len(data)} bytes")
            check(hdrs.get("Content-Disposition", "").startswith("attachment"),
                  f"{service}: application/octet-stream download is an attachment",
                  hdrs.get("Content-Disposition"))

    def examine(self, service, kind, s, size, ctype, name):
        a = self.args
        base = f"https://127.0.0.1:{a.nginx_port}"
        if kind == "hmac":
            check(s["get"] == s["put"].split("?")[0], f"{service}: GET URL = PUT URL without the query")
            check(not s["headers"], f"{service}: no PUT headers in the slot", str(s["headers"]))
            e = examine_hmac(s["put"], "/share/", a.hmac_secret, size, ctype)
            check(e["mac_valid"], f"{service}: {e['param']}= MAC verified independently", e["query"][:20])
            check(e["mac_lowercase_hex"], f"{service}: MAC is 64 lower-case hex digits")
            segs = e["signed_path"].split("/")
            check(len(segs) == 2 and segs[1] == name, f"{service}: signed path is <uuid>/<name>", e["signed_path"])
            check(s["put"].startswith(base + "/share/"), f"{service}: URL under the configured base")
            return e
        auth = s["headers"].get("Authorization", "")
        check(auth.startswith("Bearer "), f"{service}: slot carries Authorization: Bearer <JWT>")
        e = examine_jwt(auth[len("Bearer "):], a.jwt_secret)
        c = e["claims"]
        path = urllib.parse.urlsplit(s["put"]).path
        e["raw_path"] = path
        check(s["get"] == s["put"], f"{service}: GET URL = PUT URL")
        check("?" not in s["put"], f"{service}: no query string")
        check(e["signature_valid"], f"{service}: JWT HS256 signature verified independently")
        check(e["header"] == {"alg": "HS256", "typ": "JWT"}, f"{service}: JWT header", json.dumps(e["header"]))
        check(e["padding_free"], f"{service}: JWT base64url without padding")
        check(c.get("sub") == a.jid, f"{service}: sub is the uploader's bare JID", c.get("sub"))
        ttl = a.jwt_ttl  # the generation's: 300 for Prosody 0.12, 600 for 13
        check(c.get("exp", 0) - c.get("iat", 0) == ttl, f"{service}: exp = iat + {ttl}",
              f"exp - iat = {c.get('exp', 0) - c.get('iat', 0)}")
        check(c.get("expires", 0) - c.get("iat", 0) == 86400, f"{service}: expires = iat + expires_after")
        check(abs(c.get("iat", 0) - time.time()) < 60, f"{service}: iat is now")
        check(c.get("filename") == name and c.get("filesize") == size and c.get("filetype") == ctype,
              f"{service}: filename/filesize/filetype claims", f"{c.get('filetype')}")
        segs = path[len("/file_share/"):].split("/")
        check(path.startswith("/file_share/") and len(segs) == 2 and segs[0] == c.get("slot"),
              f"{service}: path is /file_share/<slot>/<name>", path)
        check(urllib.parse.unquote(segs[-1]) == name, f"{service}: last segment decodes to the name")
        return e


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--nginx-port", type=int, required=True)
    p.add_argument("--hmac-secret", required=True)
    p.add_argument("--jwt-secret", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--role", choices=["main", "denied"], default="main")
    p.add_argument("--generation", required=True, help="stable or backports (tests/e2e/generations.sh)")
    p.add_argument("--expect-server", required=True, help="name and version the server must report")
    p.add_argument("--jwt-ttl", type=int, required=True, help="exp - iat of the generation's tokens")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s")

    run_to_end(E2EClient(a), a.host, a.port, REPORT, a.report)


if __name__ == "__main__":
    main()
