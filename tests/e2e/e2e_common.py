"""What the end-to-end XMPP clients (tests/e2e/client.py for Prosody, tests/e2e/ejabberd/client.py)
share: the list of checks, HTTP requests with the URL sent byte for byte, and running a slixmpp
client to its end, writing the JSON report and the closing `E2E RESULT:` line."""

import asyncio
import json
import sys

import yarl

CHECKS = []  # (ok, label, detail)


def check(ok, label, detail=""):
    CHECKS.append((bool(ok), label, detail))
    print(("ok    " if ok else "FAIL  ") + label + (f"  [{detail}]" if detail else ""), flush=True)
    return ok


async def check_server_version(xmpp, expected, generation):
    """The running server's own name and version (XEP-0092, asked of the user's domain) must be
    the generation's pinned one (`expected`: "Prosody 13.0.1"): a machine with another version
    installed fails here. Debian's ejabberd reports its package version ("24.12-3~bpo12+1"):
    a Debian revision after the upstream version is accepted."""
    try:
        iq = await xmpp.plugin["xep_0092"].get_version(xmpp.boundjid.domain, timeout=15)
        got = f"{iq['software_version']['name']} {iq['software_version']['version']}"
    except Exception as e:  # noqa: BLE001 - an error reply or a timeout is a failed check
        got = repr(e)
    ok = got == expected or got.startswith(expected + "-")
    return check(ok, f"the server is {expected} (XEP-0092 software version, pinned for {generation})", got)


async def http(session, method, url, body=None, headers=None):
    """One request with the URL sent byte for byte as the XMPP server wrote it (and no
    Content-Type unless given: aiohttp would add application/octet-stream on its own)."""
    async with session.request(
        method, yarl.URL(url, encoded=True), data=body, headers=headers or {},
        skip_auto_headers=["Content-Type"],
    ) as resp:
        data = await resp.read()
        return resp.status, dict(resp.headers), data


def run_to_end(xmpp, host, port, report, report_path, timeout=150):
    """Connects `xmpp` (which sets `xmpp.done` when finished), waits for it, writes `report`
    with the checks to `report_path`, prints the result and exits 0 (all passed) or 1."""
    xmpp.connect(address=(host, port), force_starttls=False, disable_starttls=True)

    async def run():
        await asyncio.wait_for(xmpp.done.wait(), timeout=timeout)

    try:
        xmpp.loop.run_until_complete(run())
    except asyncio.TimeoutError:
        check(False, "client finished in time", f"{timeout} s")
    # slixmpp leaves its stream tasks pending after the disconnect: end them quietly.
    pending = [t for t in asyncio.all_tasks(xmpp.loop) if not t.done()]
    for t in pending:
        t.cancel()
    xmpp.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    report["checks"] = [{"ok": ok, "check": label, "detail": d} for ok, label, d in CHECKS]
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    failed = [c for c in CHECKS if not c[0]]
    passed = len(CHECKS) - len(failed)
    ok = CHECKS and not failed
    print(f"e2e checks: {passed} ok, {len(failed)} not ok")
    print("E2E RESULT: " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)
