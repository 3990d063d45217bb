"""Log output: every log record on stderr is one JSON line, so a log shipper needs no parsing rules
(the start banner and the fail-fast lines stay plain text for the operator at the terminal).

The request and association lines are JSON already (they carry their own fields); any other
record (warnings, errors, a traceback of a bug) is wrapped as {"level", "logger", "message",
"exception"} on one line.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from gunicorn.glogging import Logger as GunicornLogger

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith("{") and message.endswith("}") and not record.exc_info:
            return message  # already one JSON object
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "level": record.levelname, "logger": record.name, "message": message}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(level: str) -> None:
    """Root handler on stderr with JSON lines at `level` (a process's first call wins)."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonLines) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("fhirserver").setLevel(level)
    # migrations say "Context impl ..." at every start: only worth reading when debugging
    logging.getLogger("alembic").setLevel(level if level == "DEBUG" else "WARNING")


class GunicornJsonLogger(GunicornLogger):
    """gunicorn's own lines (start, workers booted or killed) as JSON lines like the rest."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonLines())
