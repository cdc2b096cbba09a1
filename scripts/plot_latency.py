#!/usr/bin/env python3
"""Plots `ironmatch load` results: latency by percentile for each rate (engine solid,
loopback echo baseline dashed), and writes the summary table as Markdown.

Usage: plot_latency.py [--no-plot] DIR   (reads DIR/load-<rate>.json and .hgrm, writes
DIR/latency.png, unless --no-plot (no matplotlib needed), and DIR/results.md)
"""
import json
import pathlib
import sys


def read_hgrm(path):
    """(percentile, value in us) pairs of an HdrHistogram percentile distribution."""
    points = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3 or line.startswith("#") or parts[0] == "Value":
            continue
        value, quantile = float(parts[0]), float(parts[1])
        if 0.0 < quantile < 1.0:
            points.append((quantile, value))
    return points


def main():
    args = [a for a in sys.argv[1:] if a != "--no-plot"]
    plot = len(args) == len(sys.argv) - 1
    out = pathlib.Path(args[0])
    runs = sorted(out.glob("load-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if not runs:
        sys.exit(f"no load-*.json in {out}")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 6))
    rows = []
    for i, run in enumerate(runs):
        result = json.loads(run.read_text())
        rate = result["rate"]
        color = f"C{i}"
        for suffix, style, label in ((".hgrm", "-", "engine"), (".baseline.hgrm", "--", "echo")):
            hgrm = run.with_name(run.stem + suffix)
            if plot and hgrm.exists():
                points = read_hgrm(hgrm)
                ax.plot([1 / (1 - q) for q, _ in points], [v for _, v in points], style,
                        color=color, label=f"{rate:,} msg/s {label}")
        e, b = result["engine"], result.get("baseline")
        lat = e["latency_us"]
        row = [f"{rate:,}", f"{e['throughput_per_sec']:,.0f}"]
        for p in ("p50", "p90", "p99", "p99.9", "p99.99", "max"):
            cell = f"{lat[p]:,.1f}"
            if b:
                cell += f" ({lat[p] / max(b['latency_us'][p], 1e-9):.1f}x)"
            row.append(cell)
        row += [str(e["missing"]), f"{e['send_lag_us']['p99']:,.1f}"]
        rows.append(row)
    if plot:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("round trip, us (from due time: corrected for coordinated omission)")
        ax.set_title("ironmatch: OUCH round trip by percentile (solid) vs loopback TCP echo (dashed)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
    head = ["rate msg/s", "replies/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "p99.99 us",
            "max us", "missing", "generator lag p99 us"]
    table = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
