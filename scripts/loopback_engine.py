"""What the loopback measurement scripts share: the shipped configuration made safe to run
beside anything (no [venue], a journal of its own, the gateway, the admin endpoint and the
feed on loopback ports of their own), an engine started on it whose gateway port is read
from its start line, and a connection that waits for the engine to listen."""

import pathlib
import re
import socket
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def config_text(journal, store_bytes=0):
    """The shipped configuration without [venue], journaling to `journal`, with session
    stores in chunks of `store_bytes` (0: as shipped)."""
    text = (ROOT / "config" / "ironmatch.toml").read_text()
    start = text.index("\n[venue]")
    end = start + 1 + text[start + 1 :].index("\n[")
    text = text[:start] + text[end:]
    text = text.replace('dir = "./data"', f'dir = "{journal}"')
    # A port of its own: beside an engine already on the shipped port, the fixed one made
    # this engine exit and the script drive the other one.
    text = text.replace('listen = "127.0.0.1:15000"', 'listen = "127.0.0.1:0"')
    text = text.replace("127.0.0.1:15080", "127.0.0.1:0").replace("127.0.0.1:15001", "127.0.0.1:9")
    text = text.replace("127.0.0.1:15002", "127.0.0.1:0")
    if store_bytes:
        text = re.sub(r"(?m)^session_store_bytes = \d+", f"session_store_bytes = {store_bytes}", text)
    return text


def connect(port, deadline):
    """A TCP connection to the engine on loopback, retried until `deadline` (time.time())."""
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def start_engine(binary, config, work):
    """Starts `binary serve --config config` (its output in `work`) and returns the process
    and its gateway's port, read from its start line; raises, stopping it, if it does not
    start within 10 s."""
    out = work / "serve.out"
    log = work / "serve.log"
    engine = subprocess.Popen(
        [binary, "serve", "--config", str(config)],
        stdout=open(out, "w"),
        stderr=open(log, "w"),
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        found = re.search(r"on 127\.0\.0\.1:(\d+)", out.read_text())
        if found:
            return engine, int(found.group(1))
        if engine.poll() is not None:
            break
        time.sleep(0.1)
    engine.kill()
    engine.wait()
    raise RuntimeError(f"the engine did not start: {log.read_text()}")
