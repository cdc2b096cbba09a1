#!/usr/bin/env python3
"""The engine's memory under a flood of Account Queries from one member.

Starts `ironmatch serve` (BIN, default target/release/ironmatch) on the shipped
configuration without its [venue] table, with a temporary journal and the admin endpoint
and feed on loopback ports of their own; logs in as MM1 over SoupBinTCP on loopback; sends
QUERIES OUCH Account Query Requests (each answer is a numbered message kept in MM1's
session store for replay) while reading the answers; prints the engine's resident memory
(VmRSS) at start and every STEP answers; stops the engine.

Usage: scripts/session-flood.py [--bin BIN] [--queries QUERIES] [--step STEP]
       [--store-bytes BYTES]   (gateway.session_store_bytes; default as shipped)
"""

import argparse
import os
import pathlib
import shutil
import signal
import tempfile
import threading
import time

from loopback_engine import ROOT, config_text, connect, start_engine
ANSWER_BYTES = 16  # 2-byte length, 'S', 13-byte Account Query Response
BLOCK = 10_000  # queries per send


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--bin", default=str(ROOT / "target" / "release" / "ironmatch"))
    args.add_argument("--queries", type=int, default=10_000_000)
    args.add_argument("--step", type=int, default=2_500_000)
    args.add_argument("--store-bytes", type=int, default=0)
    a = args.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ironmatch-flood-"))
    config = work / "flood.toml"
    config.write_text(config_text(work / "journal", a.store_bytes))
    engine, port = start_engine(a.bin, config, work)
    try:
        s = connect(port, time.time() + 10)
        login = b"L" + b"MM1".ljust(6) + b"mm1pass".ljust(10) + b" " * 10 + b"0".rjust(20)
        s.sendall(len(login).to_bytes(2, "big") + login)
        accepted = s.recv(64)
        assert accepted[2:3] == b"A", f"login not accepted: {accepted!r}"
        time.sleep(0.5)
        print(f"{a.bin}: RSS at start {rss_kib(engine.pid) / 1024:.1f} MiB", flush=True)
        received = [0]

        def read():
            want = a.queries // BLOCK * BLOCK * ANSWER_BYTES
            while received[0] < want:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                received[0] += len(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        block = b"\x00\x02UQ" * BLOCK
        started = time.time()
        for i in range(1, a.queries // BLOCK + 1):
            s.sendall(block)
            if (i * BLOCK) % a.step == 0:
                while received[0] < i * BLOCK * ANSWER_BYTES and reader.is_alive():
                    time.sleep(0.01)
                print(f"  {i * BLOCK:>11,} answered: RSS {rss_kib(engine.pid) / 1024:.1f} MiB", flush=True)
        reader.join()
        elapsed = time.time() - started
        print(f"{a.queries:,} queries answered in {elapsed:.1f} s ({received[0]:,} bytes)")
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
