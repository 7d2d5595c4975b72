"""A real `segrt serve` process on a free 127.0.0.1 port (--port 0; the port it prints), for the tests."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "examples" / "images"


class Server:
    """``with Server(*args) as s``: s.url, s.port, s.lines (its stderr so far), s.stop() -> exit code."""

    def __init__(self, *args, timeout: float = 180):
        cmd = [sys.executable, "-m", "segrt.cli", "serve", "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("segrt serve did not start:\n" + "\n".join(self.lines))
        found = next(m for line in self.lines if (m := re.search(r"listening on http://[^:]+:(\d+)", line)))
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self._listening.set()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout)
        self._reader.join(10)  # every line it printed is in self.lines
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def images() -> list[Path]:
    return sorted(IMAGES.glob("*.jpg"))
