"""download and verify, through the real huggingface_hub client against a local stand-in for the Hub
(tests/hubstub.py, served through HF_ENDPOINT because these machines cannot reach the Hub), a mirror
directory, and S3 through boto3 against a real S3-compatible server (moto's standalone server process)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kimi_deploy.weights import LOCK, VERIFY_MARKER

from .checkpoints import make_checkpoint
from .conftest import ROOT, assert_clean_error, free_port, run_cli
from .hubstub import COMMIT, Faults, Hub, HubServer

BIG = 24 * 2**20  # bigger than huggingface_hub's 10 MiB read chunk, so a dropped transfer leaves data to resume


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A small checkpoint shaped like a real one: config, tokenizer files, index, two large shards."""
    d = tmp_path_factory.mktemp("repo")
    tiny = tiny_dir
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, d / name)
    g = torch.Generator().manual_seed(0)
    weight_map = {}
    for i in (1, 2):
        shard = f"model-0000{i}-of-00002.safetensors"
        tensors = {f"model.layers.{i}.big_{j}": torch.rand(BIG // 8, generator=g, dtype=torch.float32)
                   for j in range(2)}
        save_file(tensors, str(d / shard))
        weight_map.update({k: shard for k in tensors})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d


def _env(hub: HubServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", **extra)
    return env


def _same_files(a: Path, b: Path) -> None:
    """Every checkpoint file of a is in b, byte for byte (a's own verify marker describes a, not b, and is
    never copied: download skips dot files)."""
    for p in a.iterdir():
        if p.is_file() and p.name != "README.md" and not p.name.startswith("."):
            assert (b / p.name).read_bytes() == p.read_bytes(), p.name


def test_download_resumes_and_retries_then_verifies(repo_dir: Path, tmp_path: Path, tiny_dir: Path) -> None:
    faults = Faults(drop_after={"model-00002-of-00002.safetensors": 15 * 2**20},
                    status_once={"model-00001-of-00002.safetensors": 429})
    hub = Hub(repo_dir, faults=faults)
    dest = tmp_path / "k2"
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--revision", "main", "--dir", str(dest), env=_env(server))
        assert proc.returncode == 0, proc.stderr
        # the dropped transfer resumed from where it stopped instead of starting over
        assert any("00002" in line and "range=bytes=" in line and "range=bytes=0-" not in line for line in hub.log)
        _same_files(repo_dir, dest)
        assert not (dest / "README.md").exists()  # only what serving needs
        report = json.loads((dest / "download-report.json").read_text())
        assert report["retries"] >= 2 and report["downloaded"] == len(hub.files()) - 1
        manifest = json.loads((dest / ".kimi-deploy-manifest.json").read_text())
        assert manifest["revision"] == COMMIT and manifest["files"]["model-00001-of-00002.safetensors"]["sha256"]

        again = run_cli("download", "--model", hub.repo, "--dir", str(dest), env=_env(server))
        assert again.returncode == 0 and "0 downloaded" in again.stdout  # nothing fetched twice

    verified = run_cli("verify", str(dest), "--hash")
    assert verified.returncode == 0, verified.stderr
    marker = json.loads((dest / VERIFY_MARKER).read_text())
    assert marker["revision"] == COMMIT and marker["full_hash"] is True


def _on_terminal(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run cmd with stdout and stderr on a pseudo-terminal, as from an operator's shell: (exit code, output)."""
    import pty

    main_fd, term_fd = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=term_fd, stderr=term_fd)
    os.close(term_fd)
    out = b""
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not data:
            break
        out += data
    os.close(main_fd)
    return proc.wait(timeout=120), out.decode(errors="replace")


def test_one_progress_bar_on_a_terminal(repo_dir: Path, tmp_path: Path) -> None:
    """Ours only, no per-file tqdm bars from huggingface_hub. They show only on a terminal (it creates
    them with disable=None); there rich's live display takes over their output and leaves one blank line
    per file above our bar, so the screen must have no blank line."""
    hub = Hub(repo_dir)
    with HubServer(hub) as server:
        cmd = [sys.executable, "-m", "kimi_deploy", "download", "--model", hub.repo, "--dir", str(tmp_path / "k2")]
        code, out = _on_terminal(cmd, _env(server, TERM="xterm", COLUMNS="120"))
    assert code == 0 and "done" in out, out
    ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
    # what each line leaves on screen: the text after its last carriage return
    screen = [ansi.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]) for line in out.split("\n")[:-1]]
    assert "" not in screen, screen
    _same_files(repo_dir, tmp_path / "k2")


def test_truncated_transfer_is_retried(repo_dir: Path, tmp_path: Path) -> None:
    """A well-formed transfer that delivers fewer bytes than the listing says is deleted and fetched again."""
    shard = "model-00002-of-00002.safetensors"
    hub = Hub(repo_dir, faults=Faults(short_body_once={shard: 5 * 2**20}))
    dest = tmp_path / "k2"
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--dir", str(dest), env=_env(server))
    assert proc.returncode == 0, proc.stderr
    assert f"{shard}: SizeMismatch; retrying" in proc.stderr
    gets = [line for line in hub.log if line.startswith("GET") and shard in line]
    assert gets == [f"GET /{hub.repo}/resolve/{COMMIT}/{shard} range=None"] * 2  # fetched anew, not resumed
    assert json.loads((dest / "download-report.json").read_text())["retries"] >= 1
    _same_files(repo_dir, dest)


def test_file_never_matching_the_listing_fails_clearly(repo_dir: Path, tmp_path: Path) -> None:
    """Bodies shorter and longer than the listed size: retried, then one clear failure naming the file."""
    shard, small = "model-00001-of-00002.safetensors", "tokenizer_config.json"
    hub = Hub(repo_dir, faults=Faults(listed_size_delta={shard: 4096, small: -7}))
    dest = tmp_path / "k2"
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--dir", str(dest), "--retries", "1", env=_env(server))
    assert_clean_error(proc, "2 file(s) failed", "SizeMismatch", "the source listed", code=1)
    report = json.loads((dest / "download-report.json").read_text())
    assert sorted(e.split(":")[0] for e in report["errors"]) == sorted([shard, small])
    assert report["retries"] >= 2 and report["downloaded"] == len(hub.files()) - 3  # README is not fetched
    assert not (dest / shard).exists() and not (dest / small).exists()  # nothing wrong-sized left to trust
    assert (dest / "model-00002-of-00002.safetensors").exists()


def test_hub_errors_are_clear(repo_dir: Path, tmp_path: Path) -> None:
    hub = Hub(repo_dir, gated_token="hf_right")
    with HubServer(hub) as server:
        env = _env(server)
        assert_clean_error(run_cli("download", "--model", "nobody/nothing", "--dir", str(tmp_path / "a"), env=env),
                           "model", "not found")
        assert_clean_error(run_cli("download", "--model", hub.repo, "--dir", str(tmp_path / "a"), env=env),
                           "HF_TOKEN", "gated")
        env_tok = _env(server, HF_TOKEN="hf_right")
        assert_clean_error(run_cli("download", "--model", hub.repo, "--revision", "v9", "--dir", str(tmp_path / "a"),
                                   env=env_tok), "revision", "'v9' not found")
        ok = run_cli("download", "--model", hub.repo, "--dir", str(tmp_path / "b"), env=env_tok)
        assert ok.returncode == 0, ok.stderr
        assert "hf_right" not in ok.stdout + ok.stderr + (tmp_path / "b" / "download-report.json").read_text()


def test_disk_space_precheck(repo_dir: Path, tmp_path: Path) -> None:
    hub = Hub(repo_dir, faults=Faults(huge=True))
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--dir", str(tmp_path / "k2"), env=_env(server))
    assert_clean_error(proc, str(tmp_path / "k2"), "not enough disk space")
    assert not list((tmp_path / "k2").glob("*.safetensors"))


def _wait_for_lock_holder(dest: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until `proc` holds the download lock of dest (the lock file names its pid)."""
    deadline = time.monotonic() + timeout
    while f"pid {proc.pid} " not in ((dest / LOCK).read_text() if (dest / LOCK).is_file() else ""):
        assert proc.poll() is None, "the first download ended before it took the lock"
        assert time.monotonic() < deadline, "the first download did not take the lock"
        time.sleep(0.05)


def test_two_nodes_download_into_one_directory(repo_dir: Path, tmp_path: Path) -> None:
    hub = Hub(repo_dir, faults=Faults(throttle_s=0.01))  # slow enough that the two runs overlap
    dest = tmp_path / "shared"
    with HubServer(hub) as server:
        cmd = [sys.executable, "-m", "kimi_deploy", "download", "--model", hub.repo, "--dir", str(dest)]
        a = subprocess.Popen(cmd, env=_env(server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_lock_holder(dest, a)  # the first download holds the directory before the others start
        nowait = run_cli("download", "--model", hub.repo, "--dir", str(dest), "--no-wait", env=_env(server))
        b = subprocess.Popen(cmd, env=_env(server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out_a, err_a = a.communicate(timeout=300)
        out_b, err_b = b.communicate(timeout=300)
    assert_clean_error(nowait, "another download into", "in progress", code=1)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert "waiting for it to finish" in err_b and "0 downloaded" in out_b
    _same_files(repo_dir, dest)
    assert run_cli("verify", str(dest), "--hash").returncode == 0


def test_verify_catches_corruption_and_never_marks_partial(repo_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt"
    shutil.copytree(repo_dir, dest)
    hub_manifest = {"source": "hf", "location": "test", "revision": COMMIT, "files": {
        p.name: {"size": p.stat().st_size, "sha256": __import__("hashlib").sha256(p.read_bytes()).hexdigest()}
        for p in dest.glob("*.safetensors")}}
    (dest / ".kimi-deploy-manifest.json").write_text(json.dumps(hub_manifest))
    assert run_cli("verify", str(dest)).returncode == 0 and (dest / VERIFY_MARKER).exists()
    shard = dest / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1000] ^= 0xFF  # one flipped byte in the tensor data: only a full hash can see it
    shard.write_bytes(bytes(data))
    assert run_cli("verify", str(dest)).returncode == 0  # headers and sizes still fine
    assert_clean_error(run_cli("verify", str(dest), "--hash"), "model-00002-of-00002.safetensors", "sha256")
    assert not (dest / VERIFY_MARKER).exists()
    shard.write_bytes(bytes(data[:-4096]))  # truncated
    assert_clean_error(run_cli("verify", str(dest)), "model-00002-of-00002.safetensors", "truncated")
    shutil.copy(repo_dir / shard.name, shard)
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.ghost"] = "model-00001-of-00002.safetensors"
    (dest / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_clean_error(run_cli("verify", str(dest)), "model-00001-of-00002.safetensors", "model.layers.9.ghost")
    assert not (dest / VERIFY_MARKER).exists()


def test_verify_checks_the_architecture(tiny_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    shutil.copytree(tiny_dir, dest)
    assert_clean_error(run_cli("verify", str(dest), "--model", "kimi-k2-instruct"), "config.json does not match",
                       "hidden_size")
    assert run_cli("verify", str(dest), "--hash").returncode == 0  # hashed; no source hashes to compare


def test_mirror_directory_source(tiny_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "from-mirror"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(tiny_dir), "--dir", str(dest))
    assert proc.returncode == 0, proc.stderr
    _same_files(tiny_dir, dest)
    assert run_cli("verify", str(dest)).returncode == 0
    assert_clean_error(run_cli("download", "--source", "mirror", "--mirror", str(tmp_path / "none"), "--dir",
                               str(dest)), "mirror directory not found")


@pytest.fixture
def s3_server(tmp_path: Path):
    """moto's standalone S3-compatible server, as its own process on a local port."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx2

    for _ in range(100):
        try:
            httpx2.get(url, timeout=1)
            break
        except httpx2.HTTPError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_s3_source(tiny_dir: Path, tmp_path: Path, s3_server: str) -> None:
    import boto3

    env = dict(os.environ, AWS_ENDPOINT_URL=s3_server, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1")
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="weights")
    for p in tiny_dir.iterdir():
        if p.is_file():
            s3.upload_file(str(p), "weights", f"kimi/tiny-k2/{p.name}")
    dest = tmp_path / "from-s3"
    proc = run_cli("download", "--source", "s3", "--mirror", "s3://weights/kimi/tiny-k2", "--dir", str(dest), env=env)
    assert proc.returncode == 0, proc.stderr
    _same_files(tiny_dir, dest)
    assert run_cli("verify", str(dest)).returncode == 0
    assert "test" not in (dest / "download-report.json").read_text().replace("tiny", "")


def test_serve_preflight_sees_the_marker(tiny_dir: Path) -> None:
    assert run_cli("verify", str(tiny_dir)).returncode == 0
    proc = run_cli("serve", "deploy/tiny-k2-cpu.yaml", "--dry-run", "--skip-preflight")
    assert "ok verified: 3 shards unchanged since verified" in proc.stdout, proc.stdout


# --- the Hub client's own HTTP stack (httpx2 in huggingface_hub 2) ------------------------------------
# These use a checkpoint made on the spot (tests/checkpoints.py), so they run without tiny-k2.

@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    # shards of ~1 MiB: the Hub client reads in 10 MiB chunks, so a drop after the headers leaves 0 bytes
    return make_checkpoint(tmp_path / "repo", shards=2, floats=2**18)


def test_a_dropped_connection_from_the_hub_client_is_retried(small_repo: Path, tmp_path: Path) -> None:
    """huggingface_hub resumes a dropped transfer itself a few times (file_download.py http_get), then
    raises its HTTP stack's error (httpx2.RemoteProtocolError): kimi-deploy's retry policy must know that
    error as transient, try the file again and complete the download."""
    shard = "model-00002-of-00002.safetensors"
    hub = Hub(small_repo, faults=Faults(drop_times={shard: 7}))  # more drops than the Hub client retries
    dest = tmp_path / "k2"
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--dir", str(dest), "--retries", "3", env=_env(server),
                       timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"{shard}: \w+; retrying in", proc.stderr), proc.stderr  # our policy retried it
    gets = [line for line in hub.log if line.startswith("GET") and shard in line]
    assert len(gets) == 8  # 7 dropped, the 8th whole
    assert json.loads((dest / "download-report.json").read_text())["retries"] >= 7
    _same_files(small_repo, dest)


def test_a_connection_that_keeps_dropping_fails_clearly(small_repo: Path, tmp_path: Path) -> None:
    shard = "model-00001-of-00002.safetensors"
    hub = Hub(small_repo, faults=Faults(drop_times={shard: 1000}))
    dest = tmp_path / "k2"
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--dir", str(dest), "--retries", "1", env=_env(server),
                       timeout=300)
    assert_clean_error(proc, "1 file(s) failed", shard, code=1)
    report = json.loads((dest / "download-report.json").read_text())
    assert [e.split(":")[0] for e in report["errors"]] == [shard]
    assert not (dest / shard).exists()  # nothing partial under the real name
    assert (dest / "model-00002-of-00002.safetensors").exists()


def test_a_429_is_retried_after_the_retry_after_the_hub_asks_for(small_repo: Path, tmp_path: Path) -> None:
    shard = "model-00001-of-00002.safetensors"
    hub = Hub(small_repo, faults=Faults(status_once={shard: 429}, retry_after="2"))
    dest = tmp_path / "k2"
    with HubServer(hub) as server:
        proc = run_cli("download", "--model", hub.repo, "--dir", str(dest), env=_env(server), timeout=300)
    assert proc.returncode == 0, proc.stderr
    at = [t for line, t in zip(hub.log, hub.times) if line.startswith("GET") and shard in line]
    assert len(at) == 2 and at[1] - at[0] >= 2.0, at  # not sooner than the server asked
    assert json.loads((dest / "download-report.json").read_text())["retries"] >= 1
    _same_files(small_repo, dest)
