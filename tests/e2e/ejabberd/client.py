#!/usr/bin/python3
"""XMPP client side of the ejabberd end-to-end test (tests/e2e/ejabberd/run.sh).

Logs in to ejabberd with slixmpp, checks that the server is the pinned version of the
generation under test (XEP-0092), asks its mod_http_upload for slots (XEP-0363), records
exactly which URLs ejabberd handed out, PUTs the files through nginx + xmpp-http-upload the
way XMPP clients do (the URL byte for byte as received), downloads them and compares bytes.

Roles:
  slot      alice@localhost, upload.localhost: mod_http_upload with service_url, i.e. ejabberd
            asks the program's slot API for every slot (INSTALL.md, "ejabberd")
  external  alice@ext.localhost, upload.ext.localhost: mod_http_upload with external_secret;
            ejabberd signs the URLs itself (INSTALL.md, "ejabberd with external_secret")
  denied    mallory@localhost, upload.localhost: the program's rules deny this JID

Prints one `ok` / `FAIL` line per check, writes everything it saw to --report (JSON) and ends
with `E2E RESULT: PASS` (exit 0) or `E2E RESULT: FAIL` (exit 1).
"""

import argparse
import asyncio
import hashlib
import hmac
import io
import logging
import os
import re
import sys
import urllib.parse

# Before slixmpp is imported: it warns about its pure-Python stringprep on import.
logging.getLogger("slixmpp.stringprep").setLevel(logging.ERROR)

import aiohttp  # noqa: E402
import slixmpp  # noqa: E402
import slixmpp.exceptions  # noqa: E402
from slixmpp import JID  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_common import check, check_server_version, http, run_to_end  # noqa: E402

REPORT = {"slixmpp": slixmpp.__version__, "aiohttp": aiohttp.__version__, "slots": []}

CYRILLIC = "Тест файл №1.txt"  # a space and "№": ejabberd's sanitiser turns both into "_"
MAX = 10 * 1048576  # max_size in ejabberd.yml.in and the program's limit for alice




def sanitize(name):
    """ejabberd's name sanitiser in external_secret mode (BEHAVIOUR.md §7), and the program's own
    for slot-API names (src/name.rs): letters and digits of any script, `_.-` stay."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


class E2EClient(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0363")
        self.register_plugin("xep_0092")
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.done = asyncio.Event()

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
                try:
                    await {"slot": self.slot_api, "external": self.external,
                           "denied": self.denied}[self.args.role](session)
                except Exception as e:  # noqa: BLE001 - report it as a failed check
                    logging.exception("role %s", self.args.role)
                    check(False, f"{self.args.role}: no exception", repr(e))
        finally:
            self.disconnect()
            try:
                await asyncio.wait_for(self.disconnected, timeout=5)
            except asyncio.TimeoutError:
                pass
            self.done.set()

    # ------------------------------------------------------------------ helpers
    async def slot(self, name, size, ctype):
        iq = await self.plugin["xep_0363"].request_slot(JID(self.args.service), name, size, ctype, timeout=15)
        slot = iq["http_upload_slot"]
        s = {"name": name, "size": size, "content_type": ctype,
             "put": slot["put"]["url"], "get": slot["get"]["url"],
             "headers": {h["name"]: h["value"] for h in slot["put"]["headers"]}}
        REPORT["slots"].append(s)
        print(f"slot  {name!r} {size} {ctype!r}\n      put {s['put']}\n      get {s['get']}", flush=True)
        return s

    async def slot_error(self, name, size, ctype=None):
        """Ask for a slot that must be refused; return the error condition (or what happened)."""
        try:
            iq = await self.plugin["xep_0363"].request_slot(JID(self.args.service), name, size, ctype, timeout=10)
            return "a slot: " + iq["http_upload_slot"]["put"]["url"]
        except slixmpp.exceptions.IqError as e:
            REPORT.setdefault("errors", []).append({"name": name, "size": size, "error": str(e.iq["error"])})
            return e.iq["error"]["condition"]
        except slixmpp.exceptions.IqTimeout:
            return "no reply"

    async def disco(self):
        service = self.args.service
        info = await self.plugin["xep_0030"].get_info(jid=JID(service), timeout=15)
        forms = [f.get_values() for f in info["disco_info"].iterables]
        REPORT["disco"] = {"features": list(info["disco_info"]["features"]), "forms": forms}
        check("urn:xmpp:http:upload:0" in info["disco_info"]["features"],
              f"{service}: disco advertises urn:xmpp:http:upload:0")
        sizes = [f.get("max-file-size") for f in forms if f.get("max-file-size")]
        check(sizes and str(sizes[0]) == str(MAX), f"{service}: disco max-file-size is ejabberd's max_size",
              str(sizes))

    async def upload(self, session, s, body, ctype, what):
        """PUT (with the slot's headers), GET, compare; return the PUT status."""
        headers = dict(s["headers"])
        if ctype:
            headers["Content-Type"] = ctype
        st, _, msg = await http(session, "PUT", s["put"], body, headers)
        s["put_status"] = st
        check(st == 201, f"{what}: PUT -> 201", f"{st} {msg[:100]!r}")
        st, hdrs, data = await http(session, "GET", s["get"])
        s["get_status"] = st
        s["get_headers"] = {k: v for k, v in hdrs.items()
                            if k in ("Content-Type", "Content-Disposition", "Content-Length")}
        check(st == 200 and data == body, f"{what}: GET returns the same bytes", f"{st}, {len(data)} bytes")
        return st, hdrs

    async def upload_file_helper(self, session, what):
        """A 1.5 MB binary through slixmpp's own XEP-0363 helper (what a bot would do)."""
        blob = os.urandom(1536 * 1024)
        plugin = self.plugin["xep_0363"]
        plugin.upload_service = JID(self.args.service)
        plugin.max_file_size = MAX
        try:
            url = await plugin.upload_file("data 2.bin", input_file=io.BytesIO(blob), timeout=30)
            check(True, f"{what}: slixmpp upload_file() of 1.5 MB succeeded", url)
        except Exception as e:  # noqa: BLE001
            check(False, f"{what}: slixmpp upload_file() of 1.5 MB succeeded", repr(e))
            return
        REPORT["upload_file_url"] = url
        st, _, data = await http(session, "GET", url)
        check(st == 200 and data == blob, f"{what}: GET of the 1.5 MB file returns the same bytes",
              f"{st}, {len(data)} bytes")

    # ------------------------------------------------------------------ service_url
    async def slot_api(self, session):
        """ejabberd asks the program's slot API (service_url) and hands out its URLs."""
        base = f"https://127.0.0.1:{self.args.nginx_port}/upload/"
        what = "service_url"
        await self.disco()

        body = b"hello from ejabberd's service_url\n"
        s = await self.slot("hello.txt", len(body), "text/plain")
        check(s["put"].startswith(base) and s["get"].startswith(base), f"{what}: URLs are the program's base_url",
              s["put"])
        check(not s["headers"], f"{what}: no PUT headers in the slot", str(s["headers"]))
        await self.upload(session, s, body, "text/plain", f"{what} hello.txt")

        # A Cyrillic name with a space and "№": the program makes it safe (Тест_файл__1.txt) and
        # answers with it unencoded, ejabberd percent-encodes it; it must be encoded exactly once.
        body = "Привет, мир\n".encode()
        ctype = "text/plain; charset=utf-8"
        s = await self.slot(CYRILLIC, len(body), ctype)
        for url, which in ((s["put"], "PUT"), (s["get"], "GET")):
            path = urllib.parse.urlsplit(url).path
            check("%25" not in url, f"{what}: {which} URL is not double-encoded (no %25)", url)
            check(re.fullmatch(r"[A-Za-z0-9/%._~-]*", path) is not None,
                  f"{what}: {which} URL path is plain ASCII, percent-encoded", path)
            segs = path[len("/upload/"):].split("/")
            check(len(segs) == 2 and re.fullmatch(r"[0-9a-f]{40}", segs[0]) is not None
                  and urllib.parse.unquote(segs[1], errors="strict") == sanitize(CYRILLIC),
                  f"{what}: {which} URL decodes once to /upload/<token>/<the name made safe>",
                  urllib.parse.unquote(path))
        check("?" not in s["put"], f"{what}: no query string")
        st, hdrs = await self.upload(session, s, body, ctype, f"{what} {CYRILLIC}")
        check(hdrs.get("Content-Disposition", "").startswith("inline"),
              f"{what}: text/plain download is inline", hdrs.get("Content-Disposition"))
        REPORT["stored_name_check"] = CYRILLIC

        # The same URL again: the file exists, never overwritten. The program answers 409, and the
        # shipped nginx site passes its status on (@xmpp_http_upload_refused, from XHU-Status);
        # run.sh checks the program's log for the 409 too.
        st, _, _ = await http(session, "PUT", s["put"], body, {"Content-Type": ctype})
        check(st == 409, f"{what}: second PUT to the same slot refused (409)", str(st))
        s["second_put_status"] = st

        # A body of another size than the slot's.
        body = b"twelve bytes"
        s = await self.slot("size.txt", len(body), "text/plain")
        st, _, _ = await http(session, "PUT", s["put"], body + b"!!", {"Content-Type": "text/plain"})
        s["wrong_size_put_status"] = st
        check(st == 413, f"{what}: PUT of another size than the slot's refused (413)", str(st))
        st, _, _ = await http(session, "GET", s["get"])
        check(st == 404, f"{what}: nothing stored after the refused PUT", str(st))

        # Over the limit: ejabberd does not enforce max_size in this mode, the program answers
        # 413, which ejabberd maps to not-acceptable.
        cond = await self.slot_error("big.bin", 20 * 1048576, "application/octet-stream")
        REPORT["over_limit"] = cond
        check(cond == "not-acceptable", f"{what}: 20 MiB slot request -> not-acceptable (program's 413)", cond)

        await self.upload_file_helper(session, what)

    # ------------------------------------------------------------------ external_secret
    async def external(self, session):
        """ejabberd signs the URLs itself (external_secret); the program checks the HMAC."""
        a = self.args
        base = f"https://127.0.0.1:{a.nginx_port}/share/"
        what = "external_secret"
        await self.disco()
        sha1 = hashlib.sha1(JID(a.jid).bare.encode()).hexdigest()

        body = "Привет из ejabberd, external_secret\n".encode()
        ctype = "text/plain; charset=utf-8"
        s = await self.slot(CYRILLIC, len(body), ctype)
        parts = urllib.parse.urlsplit(s["put"])
        check(s["put"].startswith(base), f"{what}: PUT URL under put_url", s["put"])
        check(s["get"] == s["put"].split("?")[0], f"{what}: GET URL = PUT URL without the query", s["get"])
        check(not s["headers"], f"{what}: no PUT headers in the slot", str(s["headers"]))
        check("%25" not in s["put"], f"{what}: URL is not double-encoded (no %25)")
        query = urllib.parse.parse_qs(parts.query)
        check(list(query) == ["v"], f"{what}: only ?v= (never v2)", parts.query[:12])
        signed = urllib.parse.unquote(parts.path[len("/share/"):], errors="strict")
        segs = signed.split("/")
        want_name = sanitize(CYRILLIC)
        check(len(segs) == 3 and segs[0] == sha1 and re.fullmatch(r"[A-Za-z0-9]{40}", segs[1]) is not None
              and segs[2] == want_name,
              f"{what}: path is <sha1 of the bare JID>/<40 alphanumerics>/<sanitised name>", signed)
        escapes = re.findall(r"%[0-9A-Fa-f]{2}", parts.path)
        check(escapes and all(e == e.upper() for e in escapes), f"{what}: upper-case percent escapes",
              " ".join(escapes[:4]))
        mac = hmac.new(a.hmac_secret.encode(), f"{signed} {len(body)}".encode(), hashlib.sha256).hexdigest()
        check(query.get("v") == [mac], f"{what}: v = HMAC-SHA256(secret, '<path> <size>') verified here")
        s["signed_path"] = signed

        # A tampered MAC and another size first: refused, nothing stored.
        bad = s["put"][:-1] + ("0" if s["put"][-1] != "0" else "1")
        st, _, _ = await http(session, "PUT", bad, body, {"Content-Type": ctype})
        check(st == 403, f"{what}: PUT with a tampered v refused (403)", str(st))
        st, _, _ = await http(session, "PUT", s["put"], body + b"x", {"Content-Type": ctype})
        check(st == 403, f"{what}: PUT of another size than signed refused (403)", str(st))
        st, _, _ = await http(session, "GET", s["get"])
        check(st == 404, f"{what}: nothing stored after the refused PUTs", str(st))

        await self.upload(session, s, body, ctype, f"{what} {CYRILLIC}")
        st, _, _ = await http(session, "PUT", s["put"], body, {"Content-Type": ctype})
        check(st == 409, f"{what}: second PUT to the same URL refused (409)", str(st))
        s["second_put_status"] = st

        body = b"plain ascii\n"
        s = await self.slot("hello.txt", len(body), "text/plain")
        await self.upload(session, s, body, "text/plain", f"{what} hello.txt")

        # Over max_size: ejabberd refuses it itself in this mode.
        cond = await self.slot_error("big.bin", 20 * 1048576, "application/octet-stream")
        REPORT["over_limit"] = cond
        check(cond == "not-acceptable", f"{what}: 20 MiB slot request -> not-acceptable (ejabberd's own)", cond)

        await self.upload_file_helper(session, what)

    # ------------------------------------------------------------------ denied
    async def denied(self, session):
        """The program's rules deny this JID: its 403 reaches the client as not-allowed."""
        cond = await self.slot_error("denied.txt", 5, "text/plain")
        REPORT["denied"] = cond
        check(cond == "not-allowed", f"service_url: slot for {self.args.jid} (denied by the rules) -> not-allowed",
              cond)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--nginx-port", type=int, required=True)
    p.add_argument("--hmac-secret", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--role", choices=["slot", "external", "denied"], required=True)
    p.add_argument("--generation", required=True, help="stable or backports (tests/e2e/generations.sh)")
    p.add_argument("--expect-server", required=True, help="name and version the server must report")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s")

    run_to_end(E2EClient(a), a.host, a.port, REPORT, a.report)


if __name__ == "__main__":
    main()
