#!/usr/bin/env python3
"""What one member's replay from disk costs the other members' round trips.

Starts `ironmatch serve` (BIN, default target/release/ironmatch) on the shipped
configuration without its [venue] table, with a temporary journal, session stores in
chunks of STORE_BYTES (so that most of a session's messages are written out to its store
file), and the admin endpoint and feed on loopback ports of their own. Then, over
SoupBinTCP on loopback:

1. TAKER sends QUERIES Account Query Requests and reads the answers (each answer is a
   numbered message kept in TAKER's session store), then logs out;
2. TAKER's store file is dropped from the page cache (through the engine's
   /proc/PID/fd: fdatasync, then posix_fadvise DONTNEED), so that a replay reads the disk;
3. `ironmatch load --sessions 3` (MM1, MM2, MM3) runs for DURATION seconds at RATE;
   REPLAY_AT seconds in, TAKER logs in asking for message 1 and reads its whole day's
   stream back (unless --no-replay);
4. prints the load run's round trips and the replay's time, and stops the engine.

Usage: scripts/replay-stall.py [--bin BIN] [--queries QUERIES] [--store-bytes BYTES]
       [--rate RATE] [--duration SECONDS] [--replay-at SECONDS] [--no-replay]
"""

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from loopback_engine import ROOT, config_text, connect, start_engine
ANSWER_BYTES = 16  # 2-byte length, 'S', 13-byte Account Query Response
BLOCK = 10_000  # queries per send


def login(port, seq):
    s = connect(port, time.time() + 10)
    request = b"L" + b"TAKER".ljust(6) + b"takerpass".ljust(10) + b" " * 10 + str(seq).rjust(20).encode()
    s.sendall(len(request).to_bytes(2, "big") + request)
    head = b""
    while len(head) < 3:
        head += s.recv(3 - len(head))
    length = int.from_bytes(head[:2], "big")
    rest = b""
    while len(rest) < length - 1:
        rest += s.recv(length - 1 - len(rest))
    assert head[2:3] == b"A", f"login not accepted: {head + rest!r}"
    return s


def flood(port, queries):
    s = login(port, 0)
    received = [0]
    want = queries // BLOCK * BLOCK * ANSWER_BYTES

    def read():
        while received[0] < want:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            received[0] += len(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    block = b"\x00\x02UQ" * BLOCK
    for _ in range(queries // BLOCK):
        s.sendall(block)
    reader.join()
    s.sendall(b"\x00\x01O")
    s.close()
    return received[0]


def evict_store_files(pid, journal):
    """Drops the engine's unnamed files in the journal directory from the page cache."""
    dropped = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(journal)) and target.endswith("(deleted)"):
            f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY)
            try:
                os.fdatasync(f)
                size = os.fstat(f).st_size
                os.posix_fadvise(f, 0, 0, os.POSIX_FADV_DONTNEED)
                dropped += size
            finally:
                os.close(f)
    return dropped


def replay(port, expected, out):
    started = time.time()
    s = login(port, 1)
    got = 0
    while got < expected:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    out["seconds"] = time.time() - started
    out["bytes"] = got
    s.close()


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--bin", default=str(ROOT / "target" / "release" / "ironmatch"))
    args.add_argument("--queries", type=int, default=4_000_000)
    args.add_argument("--store-bytes", type=int, default=1 << 20)
    args.add_argument("--rate", type=int, default=20_000)
    args.add_argument("--duration", type=int, default=10)
    args.add_argument("--replay-at", type=float, default=3.0)
    args.add_argument("--no-replay", action="store_true")
    a = args.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ironmatch-replay-", dir=ROOT / "target"))
    journal = work / "journal"
    config = work / "replay.toml"
    config.write_text(config_text(journal, a.store_bytes))
    engine, port = start_engine(a.bin, config, work)
    try:
        stored = flood(port, a.queries)
        time.sleep(1.0)
        dropped = evict_store_files(engine.pid, journal.resolve())
        print(f"{a.bin}: {stored:,} bytes stored for TAKER; {dropped:,} bytes of store files dropped from the page cache", flush=True)
        result = {}
        if not a.no_replay:
            timer = threading.Timer(a.replay_at, replay, (port, a.queries // BLOCK * BLOCK * ANSWER_BYTES, result))
            timer.start()
        load = subprocess.run(
            [a.bin, "load", "--config", str(config), "--connect", f"127.0.0.1:{port}",
             "--sessions", "3", "--rate", str(a.rate),
             "--duration", str(a.duration), "--quiet", "--json", str(work / "load.json")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True,
        )
        if not a.no_replay:
            timer.join()
        print(load.stdout.strip())
        if result:
            print(f"replay of {result['bytes']:,} bytes in {result['seconds']:.2f} s", flush=True)
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
