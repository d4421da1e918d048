"""Start a prefill/decode router with its API key taken from the environment inside this process.

Neither router reads its key from the environment, and `--api-key KEY` would sit in /proc/PID/cmdline
(readable by every user on the node) for the router's whole life. Both routers are Rust extensions
that run inside the Python process, so this module parses the router's own arguments with the
router's own parser, sets `api_key` on the parsed object, and calls the router's launch function:
  vllm-router:   vllm_router.launch_router.parse_router_args / launch_router (vllm-project/router)
  sglang-router: sglang_router.launch_router.parse_router_args / launch_router (sgl-project/sglang,
                 sgl-model-gateway/bindings/python)
The key never appears in argv, and neither router logs it. sglang-router checks clients' keys with it;
vllm-router does not, so for it (its profile's router_auth) this module also puts the key in the variable
the router sends the engines, and has the router check each client's bearer token against a decode engine's
/v1/models, which the engines answer only with the key (kimi_deploy.engine_auth).

    python3 -m kimi_deploy.routers {vllm|sglang} --api-key-env NAME [router arguments...]
"""

from __future__ import annotations

import importlib
import os
import sys

from .engines.profiles import PROFILES

# Each engine's router module (its profile's router_module); an engine without one has no P/D router.
MODULES = {p.name: p.router_module for p in PROFILES.values() if p.router_module}
USAGE = f"usage: python3 -m kimi_deploy.routers {{{'|'.join(MODULES)}}} --api-key-env NAME [router arguments...]"


def split_argv(argv: list[str]) -> tuple[str, str, list[str]]:
    """(router, env var name, the router's own arguments); ValueError with the usage otherwise."""
    if len(argv) < 3 or argv[0] not in MODULES or argv[1] != "--api-key-env" or not argv[2]:
        raise ValueError(USAGE)
    return argv[0], argv[2], argv[3:]


def main(argv: list[str] | None = None) -> None:
    try:
        router, key_env, args = split_argv(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    key = os.environ.get(key_env)
    if not key:
        print(f"{key_env}: environment variable is not set (the router's API key)", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(MODULES[router])
    parsed = module.parse_router_args(args)
    parsed.api_key = key
    auth = PROFILES[router].router_auth
    if auth is not None:
        # The key the router sends the engines (this process's environment only), and clients' keys checked
        # against a decode engine, which answers 200 only to the right one.
        if auth.key_env:
            os.environ[auth.key_env] = key
        if auth.validation_field:
            urls = [u.rstrip("/") + auth.validation_path for u in getattr(parsed, auth.urls_field) or []]
            setattr(parsed, auth.validation_field, urls)
    module.launch_router(parsed)


if __name__ == "__main__":
    main()
