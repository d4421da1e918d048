"""Re-render k8s/<example>/ for every deploy/ example that targets Kubernetes, prefill/decode ones
included (tests fail when the committed tree drifts). CPU specs are local demos and are skipped.

Run: .venv/bin/python scripts/render-k8s.py
"""

from pathlib import Path

from kimi_deploy.catalog import get_gpu
from kimi_deploy.deployment import resolve
from kimi_deploy.k8s import check, write
from kimi_deploy.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent


def k8s_examples() -> list[Path]:
    """deploy/ examples Kubernetes can run: every GPU spec whose k8s section is complete. CPU specs are
    local demos of a checkpoint on this machine (which a fresh clone may not have made yet): skipped
    before they are resolved."""
    out = []
    for p in sorted((ROOT / "deploy").glob("*.yaml")):
        spec = load_spec(p)
        if get_gpu(spec.hardware.gpu).vendor != "cpu" and not check(resolve(spec)):
            out.append(p)
    return out


if __name__ == "__main__":
    for spec in k8s_examples():
        paths = write(spec, ROOT / "k8s" / spec.stem)
        print(f"{spec.name}: {len(paths)} files")
