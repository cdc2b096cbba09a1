#!/usr/bin/env python3
"""Where the matching core's time goes on one bench flow, from timer sampling.

Runs the book bench binary on one flow under `perf record -e cpu-clock` (a timer
interrupt, so it works on virtual machines without hardware counters), then prints the
share of samples per function, per source line (the innermost inlined one) and per
instruction of the functions of the timed loop. Unlike the counts of scripts/core-ir.sh,
which model the CPU, these are the CPU's own time; a sample lands on the instruction that
was waiting when the timer fired (or just after it), so a stall shows as a peak.

    scripts/core-perf.py BENCH [--seconds S] [--bin BIN] [--core C] [--top N]

BENCH is a flow of benches/book.rs (e.g. mixed, deep). Criterion's `--profile-time` runs
the flow for S seconds (default 15) without analysis; the samples also include building
the streams and resetting the book between passes (`Matcher::new`, the setup commands):
read the timed loop's functions, `book::apply_all` and what it calls. Needs perf
(`apt-get install linux-perf`; `kernel.perf_event_paranoid` at most 2) and binutils.
"""
import argparse
import collections
import glob
import os
import subprocess
import sys


def latest_bin():
    bins = [
        b
        for b in glob.glob("target/release/deps/book-*")
        if not b.endswith(".d") and os.access(b, os.X_OK)
    ]
    if not bins:
        sys.exit("no book bench binary: run `cargo bench --bench book --no-run` first")
    return max(bins, key=os.path.getmtime)


def demangle(names):
    out = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return dict(zip(names, out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--bin")
    ap.add_argument("--core", default="1")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    binary = a.bin or latest_bin()
    data = f"/tmp/ironmatch-core-perf-{a.bench}.data"
    subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", "20000", "-o", data, "--",
         "taskset", "-c", a.core, binary, "--bench", f"book/{a.bench}$",
         "--profile-time", str(a.seconds)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    lines = subprocess.run(
        ["perf", "script", "-i", data, "--no-demangle", "-F", "ip,sym,symoff"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    # Mangled names keep apart the copies of one generic function (e.g. `Matcher::apply`
    # for the bench's sink and for the stream builders' `Vec<Event>`).
    per_sym = collections.Counter()
    offsets = collections.Counter()
    for row in lines:
        p = row.split()
        s = p[1] if len(p) > 1 else "[unknown]"
        sym, _, off = s.rpartition("+0x")
        if not sym:
            sym, off = s, "0"
        per_sym[sym] += 1
        offsets[(sym, int(off, 16))] += 1
    total = sum(per_sym.values())
    names = demangle(list(per_sym))
    print(f"{binary}, flow {a.bench}: {total} samples\n\n-- by function")
    for sym, n in per_sym.most_common(a.top // 2):
        print(f"{100 * n / total:6.2f}%  {names[sym]}")

    # The timed loop and the matcher's own functions, by address.
    addr_of = {}
    for row in subprocess.run(["nm", binary], capture_output=True, text=True).stdout.splitlines():
        p = row.split()
        if len(p) == 3:
            addr_of[p[2]] = int(p[0], 16)
    # The timed loop: `apply_all` and the core's functions but `Matcher::new` (the resets),
    # with of each generic function only its busiest copy (the bench sink's; the others
    # build the streams).
    loop = {}
    for s in per_sym:
        if s in addr_of and ("apply_all" in s or "9ironmatch4book" in s) and "3new17h" not in s:
            generic = s.rpartition("17h")[0]
            if generic not in loop or per_sym[s] > per_sym[loop[generic]]:
                loop[generic] = s
    loop = set(loop.values())
    if not loop:
        sys.exit("no samples in the timed loop: is the flow's name right?")
    at = collections.Counter()
    for (sym, off), n in offsets.items():
        if sym in loop:
            at[addr_of[sym] + off] += n
    inloop = sum(at.values())
    print(f"\n-- the timed loop's functions ({100 * inloop / total:.1f}% of samples), by source line")
    addrs = sorted(at)
    out = subprocess.run(
        ["addr2line", "-a", "-i", "-e", binary] + [hex(x) for x in addrs],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    first_line = {}
    cur = None
    for row in out:
        if row.startswith("0x"):
            cur = int(row, 16)
        elif cur is not None and cur not in first_line:
            first_line[cur] = row.split(" ")[0].replace(os.getcwd() + "/", "")
    per_line = collections.Counter()
    for x, n in at.items():
        per_line[first_line.get(x, "?")] += n
    for line, n in per_line.most_common(a.top):
        print(f"{100 * n / inloop:6.2f}%  {line}")

    print("\n-- by instruction (share of the loop's samples)")
    dis = {}
    for x, _ in at.most_common(a.top):
        text = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", f"--start-address={hex(x)}",
             f"--stop-address={hex(x + 16)}", binary],
            capture_output=True, text=True,
        ).stdout.splitlines()
        ins = next((t.split(":", 1)[1].strip() for t in text if t.strip().startswith(f"{x:x}:")), "?")
        dis[x] = ins
    for x, n in at.most_common(a.top):
        print(f"{100 * n / inloop:6.2f}%  {x:x}  {dis[x]:40s}  {first_line.get(x, '?')}")


if __name__ == "__main__":
    main()
