#!/usr/bin/env python3
"""Turns bench/run.sh's results.tsv into the Markdown tables of bench/RESULTS.md.

Figures are medians over the rounds; ratios are medians of the per-round ratios (the two sides of a
ratio ran next to each other in time, which is what makes a ratio on a noisy machine honest).
Usage: bench/report.py RUN_DIR
"""

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(run_dir):
    rows = []
    with open(run_dir / "results.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows.append(row)
    return rows


def num(value):
    return float(value) if value not in ("", None) else None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ms(us):
    return None if us is None else us / 1000


def mib(kib):
    return None if kib is None else kib / 1024


class Table:
    """results grouped by (phase, target, conns, extra) → {round: row}."""

    def __init__(self, rows):
        self.groups = defaultdict(dict)
        for row in rows:
            key = (row["phase"], row["target"], row["conns"], row["extra"])
            self.groups[key][row["round"]] = row

    def get(self, phase, target, conns, extra=""):
        return self.groups.get((phase, target, str(conns), str(extra)), {})

    def median(self, field, phase, target, conns, extra=""):
        return med(num(r[field]) for r in self.get(phase, target, conns, extra).values())

    def peak(self, field, phase, target, conns, extra=""):
        values = [num(r[field]) for r in self.get(phase, target, conns, extra).values()]
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def total(self, field, phase, target, conns, extra=""):
        values = [num(r[field]) for r in self.get(phase, target, conns, extra).values()]
        return sum(v for v in values if v is not None)

    def first(self, field, phase, target, conns, extra=""):
        """The value of round 1."""
        row = self.get(phase, target, conns, extra).get("1")
        return num(row[field]) if row else None

    def growth(self, phase, target, conns, extra=""):
        """Largest rise of RSS over its value just before a measurement (KiB)."""
        values = [num(r["rss_kib"]) - num(r["rss_before_kib"])
                  for r in self.get(phase, target, conns, extra).values()
                  if num(r["rss_kib"]) is not None and num(r.get("rss_before_kib"))]
        return max(values) if values else None

    def ratio(self, phase, a, b, conns, field="rps", extra=""):
        """Median over rounds of a/b, pairing the rounds."""
        ra, rb = self.get(phase, a, conns, extra), self.get(phase, b, conns, extra)
        ratios = []
        for rnd, row in ra.items():
            if rnd in rb and num(rb[rnd][field]):
                ratios.append(num(row[field]) / num(rb[rnd][field]))
        return med(ratios)

    def conns(self, phase, target):
        return sorted({int(k[2]) for k in self.groups if k[0] == phase and k[1] == target})


def slots_section(t, out):
    conns = t.conns("slots", "program")
    if not conns:
        return
    has = {target: bool(t.conns("slots", target))
           for target in ("django", "old-crate", "nginx-return", "recording")}
    out.append("**Slot requests** (`GET /http_upload/slot/`, a new file name each time, every answer "
               "a stored slot), through nginx. req/s, p50 / p99 latency in ms:\n")
    columns = [("program", "xmpp-http-upload"), ("program-quota", "with quota rules"),
               ("constant", "constant-200 responder, our layer")]
    if has["recording"]:
        columns.append(("recording", "the same storing one slot each"))
    if has["old-crate"]:
        columns.append(("old-crate", "constant-200 responder, old `fastcgi` crate, keep-conn off"))
    if has["nginx-return"]:
        columns.append(("nginx-return", "nginx `return 200`"))
    if has["django"]:
        columns.append(("django", "Django app (gunicorn, 2 workers)"))
    ratios = [("constant", "ours ÷ constant", 2)]
    if has["recording"]:
        ratios.append(("recording", "ours ÷ storing constant", 2))
    if has["nginx-return"]:
        ratios.append(("nginx-return", "ours ÷ nginx", 2))
    if has["django"]:
        ratios.append(("django", "ours ÷ Django", 1))
    if has["old-crate"]:
        ratios.append(("old-crate", "ours ÷ old-crate constant", 2))
    out.append("| connections | " + " | ".join(name for _, name in columns) + " | "
               + " | ".join(name for _, name, _ in ratios) + " |")
    out.append("|---" * (1 + len(columns) + len(ratios)) + "|")

    def cell(target, c):
        rps = t.median("rps", "slots", target, c)
        return (f"{fmt(rps)} ({fmt(ms(t.median('p50_us', 'slots', target, c)), 1)} / "
                f"{fmt(ms(t.median('p99_us', 'slots', target, c)), 1)})")

    for c in conns:
        line = f"| {c} | " + " | ".join(cell(target, c) for target, _ in columns) + " |"
        for target, _, digits in ratios:
            value = t.ratio("slots", "program", target, c)
            line += f" {fmt(value, digits)}{'×' if target == 'django' else ''} |"
        out.append(line)
    targets = [target for target, _ in columns]
    bad = {target: sum(t.total("non2xx", "slots", target, c) + t.total("sockerr", "slots", target, c)
                       for c in conns) for target in targets}
    reqs = {target: sum(t.total("requests", "slots", target, c) for c in conns) for target in targets}
    out.append("")
    out.append("Non-2xx answers and socket errors over all slot rounds: "
               + ", ".join(f"{name} {fmt(bad[target])} of {fmt(reqs[target])}"
                           for target, name in columns if reqs[target]) + ".")
    rss = ", ".join(f"{c} conn. {fmt(mib(t.peak('rss_kib', 'slots', 'program', c)), 1)} MiB" for c in conns)
    line = f"Peak RSS (VmHWM, reset before each measurement) of the program under slot load: {rss}"
    line += f" (constant responder: {fmt(mib(t.peak('rss_kib', 'slots', 'constant', conns[-1])), 1)} MiB"
    if has["old-crate"]:
        line += f"; old crate: {fmt(mib(t.peak('rss_kib', 'slots', 'old-crate', conns[-1])), 1)} MiB"
    if has["django"]:
        line += (f"; Django's two workers together: "
                 f"{fmt(mib(t.peak('rss_kib', 'slots', 'django', conns[-1])), 1)} MiB")
    out.append(line + f" at {conns[-1]} connections).\n")


def put_section(t, out):
    if t.get("put4k", "nginx-alone", 16) or t.get("put100m", "nginx-alone", 1):
        out.append("**PUTs** through nginx (`dav_methods PUT`, upload root and nginx's body buffers on "
                   "tmpfs), each PUT to its own fresh slot:\n")
        out.append("| | nginx alone (no `auth_request`) | `auth_request` → xmpp-http-upload "
                   "| `auth_request` → constant authorizer (our layer) |")
        out.append("|---|---|---|---|")
    if t.get("put4k", "nginx-alone", 16):
        line = "| 4 KiB PUTs/s, 16 connections (p99 ms) |"
        for target in ("nginx-alone", "program", "constant"):
            line += (f" {fmt(t.median('rps', 'put4k', target, 16))} "
                     f"({fmt(ms(t.median('p99_us', 'put4k', target, 16)), 1)}) |")
        out.append(line)
        out.append(f"| — ÷ nginx alone | 1 | {fmt(t.ratio('put4k', 'program', 'nginx-alone', 16), 2)} | "
                   f"{fmt(t.ratio('put4k', 'constant', 'nginx-alone', 16), 2)} |")
        out.append(f"| — ours ÷ constant authorizer | | "
                   f"{fmt(t.ratio('put4k', 'program', 'constant', 16), 2)} | 1 |")
    if t.get("put100m", "nginx-alone", 1):
        line = "| 100 MiB PUT, MiB/s |"
        for target in ("nginx-alone", "program", "constant"):
            line += f" {fmt(t.median('rps', 'put100m', target, 1))} |"
        out.append(line)
        out.append(f"| — ÷ nginx alone | 1 | {fmt(t.ratio('put100m', 'program', 'nginx-alone', 1), 2)} | "
                   f"{fmt(t.ratio('put100m', 'constant', 'nginx-alone', 1), 2)} |")
    if not (t.get("put4k", "nginx-alone", 16) or t.get("put100m", "nginx-alone", 1)):
        return
    bad = sum(t.total("non2xx", ph, tg, c) + t.total("sockerr", ph, tg, c)
              for ph, c in (("put4k", 16), ("put100m", 1))
              for tg in ("nginx-alone", "program", "constant"))
    out.append("")
    out.append(f"Refused or failed PUTs over all PUT rounds: {fmt(bad)}. Peak RSS of the program: "
               f"{fmt(mib(t.peak('rss_kib', 'put4k', 'program', 16)), 1)} MiB under 4 KiB PUTs (rise during "
               f"the load: {fmt(mib(t.growth('put4k', 'program', 16)), 1)} MiB), "
               f"{fmt(mib(t.peak('rss_kib', 'put100m', 'program', 1)), 1)} MiB under 100 MiB PUTs (rise: "
               f"{fmt(mib(t.growth('put100m', 'program', 1)), 1)} MiB).\n")
    if t.get("put100m", "program-receives-fastcgi", 1) or t.get("put100m", "program-receives-cgi", 1):
        out.append("**The program receiving the body itself** (shared hosting: no WebDAV in the web "
                   "server), 100 MiB PUT:\n")
        out.append("| receiver | MiB/s | ÷ nginx alone | peak RSS of the receiving process "
                   "(rise during the PUT) |")
        out.append("|---|---|---|---|")
        for target, name in (("program-receives-fastcgi", "xmpp-http-upload via nginx FastCGI "
                                                         "(`fastcgi_request_buffering off`)"),
                             ("program-receives-cgi", "xmpp-http-upload as plain CGI, body piped "
                                                     "to stdin, no web server (an upper bound)"),
                             ("django-receives", "Django app via nginx → gunicorn")):
            if t.get("put100m", target, 1):
                ratio = None if target == "program-receives-cgi" else t.ratio("put100m", target, "nginx-alone", 1)
                growth = t.growth("put100m", target, 1)
                out.append(f"| {name} | {fmt(t.median('rps', 'put100m', target, 1))} | "
                           f"{fmt(ratio, 2)} | "
                           f"{fmt(mib(t.peak('rss_kib', 'put100m', target, 1)), 1)} MiB"
                           f"{f' (+{fmt(mib(growth), 1)})' if growth is not None else ''} |")
        bad = sum(t.total("non2xx", "put100m", tg, 1)
                  for tg in ("program-receives-fastcgi", "program-receives-cgi", "django-receives"))
        out.append(f"\nFailed self-received PUTs: {fmt(bad)}.\n")


def rows_section(t, out):
    sizes = sorted({int(k[3]) for k in t.groups if k[0] == "rows"})
    if not sizes:
        return
    dbsize = {}
    for (phase, _, _, extra), by_round in t.groups.items():
        if phase == "dbsize":
            for row in by_round.values():
                dbsize[int(num(row["requests"]))] = int(extra)
    out.append("**Slot latency with stored slots** (10,000 JIDs; slots made during a measurement "
               "are deleted before the next). p50 / p99 ms at 1 connection, req/s at 16:\n")
    out.append("| slots stored | DB bytes per slot | no limits: 1 conn. | no limits: 16 conn. "
               "| quota rules: 1 conn. | quota rules: 16 conn. | peak RSS |")
    out.append("|---|---|---|---|---|---|---|")
    for n in sizes:
        rows = min(dbsize, key=lambda k: abs(k - n)) if dbsize else None
        per = dbsize[rows] / rows if rows else None
        line = f"| {n:,} | {fmt(per)} |"
        for target in ("no-limits", "quota"):
            line += (f" {fmt(ms(t.median('p50_us', 'rows', target, 1, n)), 2)} / "
                     f"{fmt(ms(t.median('p99_us', 'rows', target, 1, n)), 2)} |"
                     f" {fmt(t.median('rps', 'rows', target, 16, n))} |")
        rss = max(v for v in (t.peak("rss_kib", "rows", tg, c, n)
                              for tg in ("no-limits", "quota") for c in (1, 16)) if v is not None)
        line += f" {fmt(mib(rss), 1)} MiB |"
        out.append(line)
    bad = sum(t.total("non2xx", "rows", tg, c, n) for tg in ("no-limits", "quota")
              for c in (1, 16) for n in sizes)
    out.append(f"\nNon-2xx answers over all these rounds: {fmt(bad)}.\n")


def cgi_section(t, out):
    """Rows of phase cgi: rps = runs/s, p50_us = median wall time, p99_us = mean wall time,
    rss_before_kib = mean CPU time (user + system) in µs; cgi-fsyncs-per-100: rps = fsyncs."""
    if not t.get("cgi", "cgi-program", 1):
        return
    out.append("**Plain CGI** (shared hosting: one process per request), one slot request, "
               "hyperfine, `env -i` in front of each command:\n")
    out.append("| command | median ms | mean ms | CPU ms (user + system) | ÷ constant CGI (mean) |")
    out.append("|---|---|---|---|---|")
    for target, name in (("cgi-program", "xmpp-http-upload, slot request"),
                         ("cgi-version", "xmpp-http-upload --version (starting the binary)"),
                         ("cgi-constant", "constant CGI (`/usr/bin/printf`)")):
        out.append(f"| {name} | {fmt(ms(t.median('p50_us', 'cgi', target, 1)), 2)} | "
                   f"{fmt(ms(t.median('p99_us', 'cgi', target, 1)), 2)} | "
                   f"{fmt(ms(t.median('rss_before_kib', 'cgi', target, 1)), 2)} | "
                   f"{fmt(t.ratio('cgi', target, 'cgi-constant', 1, field='p99_us'), 2)} |")
    fsyncs = t.median("rps", "cgi", "cgi-fsyncs-per-100", 1)
    if fsyncs is not None:
        out.append(f"\nfsyncs: {fmt(fsyncs)} in 100 CGI slot requests in a row (strace).\n")


def main():
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/xhu-bench/run")
    t = Table(load(run_dir))
    out = []
    machine = run_dir / "machine.txt"
    if machine.exists():
        out.append("Run: " + "; ".join(machine.read_text().strip().splitlines()) + ".\n")
    slots_section(t, out)
    put_section(t, out)
    rows_section(t, out)
    cgi_section(t, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
