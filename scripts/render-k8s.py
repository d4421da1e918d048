"""Re-render k8s/<example>/ for every deploy/ example that targets Kubernetes, prefill/decode ones
included (tests fail when the committed tree drifts). CPU specs are local demos and are skipped.

Run: .venv/bin/python scripts/render-k8s.py
"""

from pathlib import Path

from kimi_deploy.deployment import resolve
from kimi_deploy.k8s import check, write
from kimi_deploy.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent


def k8s_examples() -> list[Path]:
    """deploy/ examples Kubernetes can run (every GPU spec whose k8s section is complete)."""
    return [p for p in sorted((ROOT / "deploy").glob("*.yaml")) if not check(resolve(load_spec(p)))]


if __name__ == "__main__":
    for spec in k8s_examples():
        paths = write(spec, ROOT / "k8s" / spec.stem)
        print(f"{spec.name}: {len(paths)} files")
