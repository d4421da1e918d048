"""A logging filter that masks secret values, for engines that log their arguments.

SGLang 0.5.23 logs every server argument, the API key included, at INFO when it starts
(python/sglang/srt/entrypoints/engine.py, `server_args=...`; sgl-project/sglang#37457, open). It reads a
logging dictConfig from SGLANG_LOGGING_CONFIG_PATH (python/sglang/srt/utils/common.py configure_logger),
and that config installs this filter, which replaces the values of the named environment variables
with `***` in every record, wherever it appears. Nothing else about SGLang's logging changes: the
config keeps its format and level."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

MASK = "***"


class RedactEnv(logging.Filter):
    """Mask the values of these environment variables in log records (values shorter than 4
    characters are left alone: masking them would garble ordinary text)."""

    def __init__(self, env: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [v for v in (os.environ.get(name) for name in env) if v and len(v) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, MASK)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def sglang_logging_config(secret_env: Iterable[str], level: str = "INFO") -> dict[str, Any]:
    """A dictConfig equivalent to SGLang's default console logging (`[time] message` on stderr, INFO),
    with RedactEnv on the handler so no record is written unmasked."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": f"{__name__}.RedactEnv", "env": sorted(secret_env)}},
        "formatters": {"sglang": {"format": "[%(asctime)s] %(message)s", "datefmt": "%Y-%m-%d %H:%M:%S"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                 "formatter": "sglang", "filters": ["redact"]}},
        "root": {"level": level, "handlers": ["console"]},
    }
