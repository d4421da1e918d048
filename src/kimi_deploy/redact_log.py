"""A logging filter that masks secret values, for engines that log their arguments.

SGLang 0.5.23 logs every server argument, the API key included, at INFO when it starts
(python/sglang/srt/entrypoints/engine.py, `server_args=...`; sgl-project/sglang#37457, open). It reads a
logging dictConfig from SGLANG_LOGGING_CONFIG_PATH (python/sglang/srt/utils/common.py configure_logger),
and that config installs this filter, which replaces with `***` the values of the named environment
variables and of every variable secrets.py takes for a credential (secrets.Scrubber: the one rule and
minimum length) in every record: in the message, in a formatted traceback and in stack info, raw or in
the escaped forms repr() and JSON give it (SGLang logs a dict's repr).

The price, stated plainly: with SGLANG_LOGGING_CONFIG_PATH set, SGLang's configure_logger applies this
config and returns, so its per-process prefix (" DP0 TP3 EP3"), --log-level and SGLANG_LOG_MS no longer
apply; the format is SGLang's default `[time] message` at INFO. Only deployments with an API key get it."""

from __future__ import annotations

import logging
from typing import Any, Iterable

MASK = "***"


class RedactEnv(logging.Filter):
    """Mask in log records the values of these environment variables and of every credential variable
    (values shorter than secrets.MIN_LEN are left alone: masking them would garble ordinary text)."""

    def __init__(self, env: Iterable[str] = ()) -> None:
        super().__init__()
        # Imported here: this module is loaded by SGLang's dictConfig, inside the engine's process.
        from .secrets import Scrubber

        self.scrubber = Scrubber(env, marker=MASK)

    def mask(self, text: str) -> str:
        return self.scrubber.text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.scrubber:
            return True
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatter.format uses exc_text when it is set: the traceback is formatted once, masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
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
