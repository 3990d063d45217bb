"""The worker as a child of `serve`: one process next to the HTTP workers, restarted if it dies
(a kill -9 mid-delivery costs one lease period, never the event)."""
from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any


class WorkerSupervisor:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()

    def _cmd(self) -> list[str]:
        cmd = [sys.executable, "-m", "fhirserver.subscriptions", "--exit-with-parent",
               "--data-dir", str(self.settings.data_dir), "--base-url", self.settings.root_url]
        if self.settings.database_url:
            cmd += ["--database-url", self.settings.database_url]
        return cmd

    def _watch(self) -> None:
        while not self.stopping.is_set():
            self.proc = subprocess.Popen(self._cmd())
            while self.proc.poll() is None:
                if self.stopping.wait(0.5):
                    return
            self.stopping.wait(1.0)  # died: start it again after a breath

    def start(self) -> "WorkerSupervisor":
        threading.Thread(target=self._watch, name="subscription-worker", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
