"""What the loopback measurement scripts share: the shipped configuration made safe to run
beside anything (no [venue], a journal of its own, the admin endpoint and the feed on
loopback ports of their own) and a connection that waits for the engine to listen."""

import pathlib
import re
import socket
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
