#!/usr/bin/env python3
"""Per-instruction costs of one function of the matching core, from callgrind.

Joins a callgrind output written with `--dump-instr=yes` with `objdump -d` of the same
binary: prints each instruction of the functions whose (demangled) name contains SYMBOL
with its count of the chosen event, then the total. Inlined code carries no name of its
own in the binary: use `addr2line -i -C -e BIN 0xADDR` on an address for its source.

    scripts/core-asm.py OUT BIN SYMBOL [--event EVENT] [--min N]

EVENT is one of the file's events (default Ir, the instructions run; Bcm for the branch
model's mispredicted conditional branches when callgrind ran with `--branch-sim=yes`);
only instructions with a count of at least N (default 1) are printed. For example, the
book bench's `add` flow, collected in `apply_all` only as scripts/core-ir.sh collects it:

    BIN=$(ls -t target/release/deps/book-* | grep -v '\\.d$' | head -n 1)
    IRONMATCH_BOOK_ONCE=add valgrind --tool=callgrind --dump-instr=yes \\
        --collect-atstart=no --toggle-collect='*apply_all*' \\
        --callgrind-out-file=add.out "$BIN" --bench 'book/none$'
    scripts/core-asm.py add.out "$BIN" Matcher::apply --min 50000
"""
import argparse
import collections
import re
import subprocess
import sys


def costs(path, event):
    """Count of `event` per instruction address in a callgrind `--dump-instr=yes` file
    (the function's own cost: the inclusive cost of the calls it makes is left out)."""
    positions = ["line"]
    column = None
    last = [0]
    after_call = False
    cost = collections.Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("positions:"):
                positions = line.split()[1:]
                last = [0] * len(positions)
                continue
            if line.startswith("events:"):
                events = line.split()[1:]
                if event not in events:
                    sys.exit(f"{path}: no event {event} (it has {' '.join(events)})")
                column = events.index(event)
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if not line or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            parts = line.split()
            if len(parts) < len(positions) or column is None:
                continue
            for i, p in enumerate(parts[: len(positions)]):
                if p == "*":
                    continue
                if p[0] in "+-":
                    last[i] += int(p, 0)
                else:
                    last[i] = int(p, 0)
            if after_call:
                after_call = False
                continue
            values = parts[len(positions):]
            if column < len(values):
                cost[last[0]] += int(values[column])
    if "instr" not in positions:
        sys.exit(f"{path}: written without --dump-instr=yes")
    return cost


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("bin")
    ap.add_argument("symbol")
    ap.add_argument("--event", default="Ir")
    ap.add_argument("--min", type=int, default=1)
    args = ap.parse_args()
    cost = costs(args.out, args.event)
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", args.bin],
        capture_output=True, text=True, check=True,
    ).stdout
    function = None
    total = 0
    for line in listing.split("\n"):
        head = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if head:
            function = head.group(2)
            continue
        if function is None or args.symbol not in function:
            continue
        ins = re.match(r"^\s*([0-9a-f]+):\s*(.*)$", line)
        if not ins:
            continue
        address = int(ins.group(1), 16)
        c = cost.get(address, 0)
        total += c
        if c >= args.min:
            print(f"{c:>12} {address:x} {ins.group(2)}")
    print(f"total {total}")


if __name__ == "__main__":
    main()
