"""Everything engine-specific lives in this package, in two floors:
- `profiles/`: each engine's knowledge as data (flags, defaults, memory accounting, topology rules,
  weight kernels, version gates), importing nothing above the catalog, so the planner, the spec and the
  resolver can ask it;
- the renderers (`vllm.py`, `sglang.py`, driven by `render.py`) that turn a resolved Deployment into each
  node's command, and `check.py`, which runs those commands through the installed engines' parsers.

This file imports neither floor, so importing the profiles never pulls in the renderers."""
