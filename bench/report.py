#!/usr/bin/env python3
"""Turns bench_convert.sh's per-run TSV into the summary table.

Input columns (tab-separated, one line per run):
  operation tool run wall_s user_s sys_s max_rss_kib out_kib status [sync_s]
sync_s is the time of the `sync` run right after the tool exited (what it
left dirty in the page cache being written). status is "ok", "mismatch" (qemu-img compare failed) or "failed" (the
conversion itself exited non-zero). Python stdlib only.
"""

import statistics
import sys
from collections import OrderedDict

TOOLS = ("qemu-img", "qimg", "cp")  # cp: cp --sparse=always, the floor for raw-raw


def load(path):
    rows = OrderedDict()  # (operation, tool) -> list of runs
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            op, tool, _run, wall, user, sys_, rss, out, status = fields[:9]
            sync_s = float(fields[9]) if len(fields) > 9 else 0.0
            rows.setdefault((op, tool), []).append({
                "wall": float(wall), "durable": float(wall) + sync_s, "cpu": float(user) + float(sys_),
                "rss": int(rss), "out": int(out), "status": status})
    return rows


def summarise(runs):
    good = [r for r in runs if r["status"] == "ok"]
    bad = sorted({r["status"] for r in runs if r["status"] != "ok"})
    if not good:
        return None, ",".join(bad)
    return {
        "wall": statistics.median(r["wall"] for r in good),
        "durable": statistics.median(r["durable"] for r in good),
        "cpu": statistics.median(r["cpu"] for r in good),
        "rss_mib": max(r["rss"] for r in good) / 1024,
        "out_mib": statistics.median(r["out"] for r in good) / 1024,
        "runs": len(good),
    }, ",".join(bad)


def summaries_of(rows, op, tool):
    return summarise(rows.get((op, tool), []))[0] if (op, tool) in rows else None


def main(path):
    rows = load(path)
    ops = list(OrderedDict.fromkeys(op for op, _ in rows))
    header = ("operation", "tool", "runs", "wall s", "+sync s", "cpu s", "rss MiB", "out MiB", "wall ratio",
              "+sync ratio", "note")
    table = [header]
    for op in ops:
        summaries = {tool: summarise(rows.get((op, tool), [])) for tool in TOOLS}
        ref = summaries["qemu-img"][0]
        for tool in TOOLS:
            if (op, tool) not in rows:
                continue
            s, bad = summaries[tool]
            note = f"{bad} in some runs" if bad and s else bad
            if s is None:
                table.append((op, tool, "0", "-", "-", "-", "-", "-", "-", "-", note))
                continue

            def ratio(key):
                if tool == "qemu-img":
                    return "1.00"
                return f"{s[key] / ref[key]:.2f}" if ref and ref[key] > 0 else "-"
            table.append((op, tool, str(s["runs"]), f"{s['wall']:.2f}", f"{s['durable']:.2f}", f"{s['cpu']:.2f}",
                          f"{s['rss_mib']:.0f}", f"{s['out_mib']:.0f}", ratio("wall"), ratio("durable"), note))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) if j < 2 or j == len(header) - 1 else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for op in ops:
        q, c = summaries_of(rows, op, "qimg"), summaries_of(rows, op, "cp")
        if q and c and c["wall"] > 0:
            print(f"{op}: qimg / cp --sparse=always wall = {q['wall'] / c['wall']:.2f}, "
                  f"+sync = {q['durable'] / c['durable']:.2f}")
    print("\nwall/cpu: median over runs; +sync: wall plus the sync right after (the copy on disk);"
          "\nrss: peak over runs; out: allocated size (du);"
          "\nratios: qimg / qemu-img medians (< 1 means qimg is faster).")
    failed = any(r["status"] != "ok" for runs in rows.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
