"""download and verify, through the real huggingface_hub client against a local stand-in for the Hub
(tests/hubstub.py, served through HF_ENDPOINT because these machines cannot reach the Hub), a mirror
directory, and S3 through boto3 against a real S3-compatible server (moto's standalone server process).
Checkpoints corrupted on disk: download says done only when every file the index names arrived, verify
says verified only for what it checked (its marker) and `serve` re-checks the marker, every malformed
file is exit 2 naming it, and the header and index readers, fuzzed, give a result or BadInput."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save_file

from kimi_deploy.errors import BadInput, OperationFailed
from kimi_deploy.weights import LOCK, MANIFEST, REPORT, VERIFY_MARKER, read_index, read_safetensors_header

from .checkpoints import INDEX, make_checkpoint, write_shard
from .conftest import (ROOT, TINY_SPEC, assert_clean_error, ctrl_c_as_in_a_shell, free_port, run_cli,
                       run_cli_timed)
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


def _first_line_with(stream, needle: str, *, timeout: float) -> str | None:
    """The first line of a child's pipe holding `needle`, read on a thread so the wait is bounded; None at
    the timeout or the end of the stream. The rest of the stream is left for communicate()."""
    found: list[str] = []

    def read() -> None:
        for line in iter(stream.readline, ""):
            if needle in line:
                found.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    return found[0] if found else None


def test_two_nodes_download_into_one_directory(repo_dir: Path, tmp_path: Path) -> None:
    gate = threading.Event()  # the first download's files are held until the second one waits for it
    hub = Hub(repo_dir, faults=Faults(gate=gate))
    dest = tmp_path / "shared"
    with HubServer(hub) as server:
        cmd = [sys.executable, "-m", "kimi_deploy", "download", "--model", hub.repo, "--dir", str(dest)]
        a = subprocess.Popen(cmd, env=_env(server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_lock_holder(dest, a)  # the first download holds the directory before the others start
            nowait = run_cli("download", "--model", hub.repo, "--dir", str(dest), "--no-wait", env=_env(server))
            b = subprocess.Popen(cmd, env=_env(server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            waiting = _first_line_with(b.stderr, "waiting for it to finish", timeout=60)
        finally:
            gate.set()
        out_a, err_a = a.communicate(timeout=300)
        out_b, err_b = b.communicate(timeout=300)
    assert_clean_error(nowait, "another download into", "in progress", code=1)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert waiting and "0 downloaded" in out_b, (waiting, err_b, out_b)
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


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"HF_HUB_DISABLE_TELEMETRY": "1", "KIMI_DOWNLOAD_RETRY_BASE_S": "0.1", **extra})
    return env


@pytest.mark.parametrize("endpoint", ["closed-port", "http://nonexistent.invalid"])  # .invalid: RFC 2606
def test_an_unreachable_hub_is_retried_then_names_the_offline_ways(endpoint: str, tmp_path: Path) -> None:
    """No Hub (a loopback port nobody listens on; a host name that never resolves): the listing is tried
    --retries more times with growing waits, then the error names the endpoint and what to do offline."""
    url = f"http://127.0.0.1:{free_port()}" if endpoint == "closed-port" else endpoint
    dest = tmp_path / "k2"
    proc = run_cli_timed("download", "--model", "test-org/tiny-k2", "--dir", str(dest), "--retries", "3",
                         env=_offline_env(HF_ENDPOINT=url), limit=30)
    assert_clean_error(proc, f"cannot reach the Hugging Face Hub at {url}", "4 attempt(s)", "HF_ENDPOINT",
                       "proxy", "HF_HUB_OFFLINE=1", "weights.source: mirror", code=1)
    assert "internal error" not in proc.stderr
    waits = [float(w) for w in re.findall(r"listing test-org/tiny-k2: \w+; retrying in ([\d.]+) s", proc.stderr)]
    assert len(waits) == 3 and waits == sorted(waits) and waits[-1] > waits[0], proc.stderr  # backoff
    assert not dest.exists()


def test_download_with_hf_hub_offline_set_says_so(tmp_path: Path) -> None:
    proc = run_cli("download", "--model", "test-org/tiny-k2", "--dir", str(tmp_path / "k2"),
                   env=_offline_env(HF_HUB_OFFLINE="1", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    assert_clean_error(proc, "HF_HUB_OFFLINE", "weights.source: mirror")
    assert "retrying" not in proc.stderr  # offline mode fails every request alike: nothing to retry


def test_transformers_offline_is_named_when_it_is_the_one_set(tmp_path: Path) -> None:
    """huggingface_hub takes TRANSFORMERS_OFFLINE when HF_HUB_OFFLINE is unset: the error names the one set."""
    proc = run_cli("download", "--model", "test-org/tiny-k2", "--dir", str(tmp_path / "k2"),
                   env=_offline_env(TRANSFORMERS_OFFLINE="1", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    assert_clean_error(proc, "TRANSFORMERS_OFFLINE", "weights.source: mirror")
    assert "HF_HUB_OFFLINE" not in proc.stderr


@pytest.mark.parametrize("endpoint", ["not-a-url", "ftp://mirror.example", "https://", "huggingface.co"])
def test_an_hf_endpoint_that_is_no_url_is_bad_input(endpoint: str, tmp_path: Path) -> None:
    """Not an unreachable Hub to retry: exit 2 naming HF_ENDPOINT at once, nothing made."""
    dest = tmp_path / "k2"
    proc = run_cli_timed("download", "--model", "test-org/tiny-k2", "--dir", str(dest), "--retries", "3",
                         env=_offline_env(HF_ENDPOINT=endpoint), limit=20)
    assert_clean_error(proc, "HF_ENDPOINT", "not an http(s) URL")
    assert "retrying" not in proc.stderr and not dest.exists()


@pytest.mark.parametrize("value", ["x", "0", "-1", "nan"])
def test_a_bad_retry_base_is_bad_input(value: str, tmp_path: Path) -> None:
    proc = run_cli("download", "--model", "test-org/tiny-k2", "--dir", str(tmp_path / "k2"),
                   env=_offline_env(KIMI_DOWNLOAD_RETRY_BASE_S=value, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    assert_clean_error(proc, "KIMI_DOWNLOAD_RETRY_BASE_S", "positive number of seconds")


# --- checkpoints corrupted on disk --------------------------------------------------------------------
# A small checkpoint shaped like tiny-k2 (tests/checkpoints.py), corrupted in one way per test: download
# reports done only when every file the index names arrived, verify's marker covers exactly what it
# checked and `serve` re-checks it, and every malformed file is exit 2 naming the file.

SHARD1 = "model-00001-of-00003.safetensors"
SHARD2 = "model-00002-of-00003.safetensors"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A small checkpoint shaped like tiny-k2 (its config, three shards and an index), to corrupt."""
    return make_checkpoint(tmp_path / "ckpt")


def _spec(tmp_path: Path, weights: Path) -> Path:
    data = yaml.safe_load(TINY_SPEC.read_text())
    data["model"] = {"path": str(weights)}
    data["weights"] = {"dir": str(weights), "source": "mirror"}
    data["serving"]["port"] = free_port()
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _serve(spec: Path, *extra: str):
    return run_cli("serve", str(spec), "--dry-run", "--no-check-args", *extra)


# --- download: done only when every file arrived --------------------------------------------------------

def test_negative_retries_refused_before_anything(ckpt: Path, tmp_path: Path) -> None:
    dest = tmp_path / "k2"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(dest), "--retries", "-1")
    assert_clean_error(proc, "--retries")
    assert "done" not in proc.stdout and not dest.exists()
    # The library refuses it too: a run that makes no attempt must not count every file as fetched.
    from kimi_deploy.weights import download, list_mirror

    with pytest.raises(BadInput, match="--retries"):
        download(list_mirror(str(ckpt)), dest, retries=-1, show_progress=False, log=lambda m: None)
    assert not list(dest.glob("*.safetensors")) if dest.exists() else True


def test_retries_past_the_bound_refused_before_anything(ckpt: Path, tmp_path: Path) -> None:
    """--retries is bounded (weights.MAX_RETRIES): a dead Hub must not hold a download for days."""
    from kimi_deploy.weights import MAX_RETRIES, download, list_mirror

    dest = tmp_path / "k2"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(dest), "--retries",
                   str(MAX_RETRIES + 1))
    assert_clean_error(proc, "--retries", f"less than or equal to {MAX_RETRIES}")
    assert not dest.exists()
    with pytest.raises(BadInput, match=f"--retries: must be 0..{MAX_RETRIES}"):
        download(list_mirror(str(ckpt)), dest, retries=MAX_RETRIES + 1, show_progress=False, log=lambda m: None)
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(dest), "--retries",
                   str(MAX_RETRIES))
    assert proc.returncode == 0, proc.stderr


def test_mirror_missing_a_shard_the_index_names(ckpt: Path, tmp_path: Path) -> None:
    (ckpt / SHARD2).unlink()  # a mirror copied half-way: the index still names the shard
    dest = tmp_path / "k2"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(dest))
    assert_clean_error(proc, SHARD2, "not in the source", code=1)
    assert "done" not in proc.stdout
    report = json.loads((dest / REPORT).read_text())
    assert any(e.startswith(SHARD2) for e in report["errors"])
    # bytes counts only what was copied: the two shards and small files that exist in the mirror
    assert report["bytes"] == sum(p.stat().st_size for p in ckpt.iterdir() if p.is_file())


@pytest.mark.parametrize("outside", ["/etc/passwd", "/etc/shadow"])
def test_a_mirror_link_to_a_file_outside_it_is_refused(ckpt: Path, tmp_path: Path, outside: str) -> None:
    """A mirror directory is copied into the checkpoint that pods serve and `render` ships: a link in it
    to a file elsewhere on the machine must not bring that file along."""
    if not Path(outside).is_file():
        pytest.skip(f"{outside} is not on this machine")
    (ckpt / "tokenizer_config.json").symlink_to(outside)
    dest = tmp_path / "k2"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(dest))
    assert_clean_error(proc, str(ckpt / "tokenizer_config.json"), f"symbolic link to {outside}",
                       "outside the mirror directory")
    assert not dest.exists()
    spec = _spec(tmp_path, ckpt)  # the spec's weights.source: mirror takes the same path
    data = yaml.safe_load(spec.read_text())
    data["weights"].update(dir=str(tmp_path / "weights"), mirror=str(ckpt))
    spec.write_text(yaml.safe_dump(data))
    assert_clean_error(run_cli("download", str(spec)), "tokenizer_config.json", "outside the mirror directory")
    assert not (tmp_path / "weights").exists()


def test_a_mirror_link_swapped_after_listing_is_not_followed(ckpt: Path, tmp_path: Path) -> None:
    from kimi_deploy.weights import download, list_mirror

    listing = list_mirror(str(ckpt))
    secret = tmp_path / "elsewhere" / "secret"  # the listed size: only the link check can refuse it
    secret.parent.mkdir()
    secret.write_bytes(b"s" * (ckpt / "config.json").stat().st_size)
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").symlink_to(secret)
    with pytest.raises(OperationFailed, match="config.json: BadInput: .* outside the mirror directory"):
        download(listing, tmp_path / "k2", show_progress=False, log=lambda m: None)
    assert not (tmp_path / "k2" / "config.json").exists()


def test_mirror_links_inside_it_and_a_hub_cache_snapshot_are_copied(ckpt: Path, tmp_path: Path) -> None:
    """Links that stay inside: to another file of the mirror, and a Hugging Face cache snapshot's links
    into its repository's blobs (models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/HASH)."""
    repo = tmp_path / "hub" / "models--org--k2"
    snap = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for p in sorted(ckpt.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(p.read_bytes()).hexdigest()
        shutil.copyfile(p, blob)
        (snap / p.name).symlink_to(Path("../..") / "blobs" / blob.name)
    (snap / "generation_config.json").symlink_to("config.json")
    dest = tmp_path / "k2"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(snap), "--dir", str(dest))
    assert proc.returncode == 0, proc.stderr
    _same_files(ckpt, dest)
    assert (dest / "generation_config.json").read_bytes() == (ckpt / "config.json").read_bytes()
    assert not any(p.is_symlink() for p in dest.iterdir())


def test_hub_repo_missing_a_shard_the_index_names(ckpt: Path, tmp_path: Path) -> None:
    (ckpt / SHARD1).unlink()
    hub = Hub(ckpt)
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    with HubServer(hub) as server:
        env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
        proc = run_cli("download", "--model", hub.repo, "--dir", str(tmp_path / "k2"), env=env)
    assert_clean_error(proc, SHARD1, "not in the source", code=1)
    assert "done" not in proc.stdout


def test_ctrl_c_stops_at_once_and_claims_nothing(ckpt: Path, tmp_path: Path) -> None:
    """SIGINT mid-transfer: exit 130 within seconds (not after every in-flight shard finished), the report
    says interrupted, and no shard sits under its final name unless it is complete."""
    import signal
    import subprocess
    import sys
    import time

    for shard in ckpt.glob("*.safetensors"):  # big enough that a throttled transfer takes ~10 s
        write_shard(shard, {f"model.layers.{shard.name[9]}.w0": 2**20}, 0)
    index = {"weight_map": {f"model.layers.{i}.w0": f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}}
    (ckpt / INDEX).write_text(json.dumps(index))
    hub = Hub(ckpt, faults=Faults(throttle_s=0.15))
    dest = tmp_path / "k2"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    with HubServer(hub) as server:
        env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
        proc = subprocess.Popen([sys.executable, "-m", "kimi_deploy", "download", "--model", hub.repo, "--dir",
                                 str(dest)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=ctrl_c_as_in_a_shell)
        deadline = time.monotonic() + 60
        while not any(line.startswith("GET") and ".safetensors" in line for line in hub.log):
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.1)
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    assert proc.returncode == 130 and took < 5, (proc.returncode, took, err)
    assert "done" not in out and "Traceback" not in err
    report = json.loads((dest / REPORT).read_text())
    assert report["errors"] and report["errors"][-1].startswith("interrupted")
    for shard in ckpt.glob("*.safetensors"):
        got = dest / shard.name
        assert not got.exists() or got.read_bytes() == shard.read_bytes()


# --- verify: "verified" only for what was checked, and serve re-checks it -------------------------------

@pytest.mark.parametrize("outside", ["../elsewhere/{}", "/{root}/elsewhere/{}"])
def test_index_pointing_outside_the_directory_is_refused(ckpt: Path, tmp_path: Path, outside: str) -> None:
    """A real, valid shard outside the checkpoint: an index may name only files inside the checkpoint
    directory, else verify would check (and pass) a file that is not part of what is served."""
    (tmp_path / "elsewhere").mkdir()
    shutil.move(ckpt / SHARD1, tmp_path / "elsewhere" / SHARD1)
    name = outside.format(SHARD1, root=str(tmp_path).lstrip("/"))
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"] = {t: (name if s == SHARD1 else s) for t, s in index["weight_map"].items()}
    (ckpt / INDEX).write_text(json.dumps(index))
    assert_clean_error(run_cli("verify", str(ckpt)), INDEX, "not a file inside the checkpoint directory")
    assert not (ckpt / VERIFY_MARKER).exists()
    proc = _serve(_spec(tmp_path, ckpt), "--skip-verify")  # the weights check refuses it as well
    assert_clean_error(proc, "weights", "not a file inside the checkpoint directory", code=1)


def test_symlinked_shards_like_a_hub_cache_are_fine(ckpt: Path, tmp_path: Path) -> None:
    blobs = tmp_path / "hub-cache" / "blobs"
    blobs.mkdir(parents=True)
    for shard in ckpt.glob("*.safetensors"):
        blob = blobs / hashlib.sha256(shard.name.encode()).hexdigest()
        shutil.move(shard, blob)
        shard.symlink_to(blob)
    assert run_cli("verify", str(ckpt)).returncode == 0
    assert _serve(_spec(tmp_path, ckpt)).returncode == 0


def test_marker_records_what_was_verified(ckpt: Path) -> None:
    assert run_cli("verify", str(ckpt)).returncode == 0
    marker = json.loads((ckpt / VERIFY_MARKER).read_text())
    shards = sorted(p.name for p in ckpt.glob("*.safetensors"))
    assert sorted(marker["shards"]) == shards
    for name in shards:
        st = (ckpt / name).stat()
        assert marker["shards"][name] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert marker["index_sha256"] == hashlib.sha256((ckpt / INDEX).read_bytes()).hexdigest()
    assert marker["tool_version"] and marker["hashes_computed"] is False and marker["full_hash"] is False


def test_serve_rechecks_the_marker(ckpt: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, ckpt)
    proc = _serve(spec)  # never verified: refused, and the way out is named
    assert_clean_error(proc, "verified", "no verify marker", "--skip-verify", code=1)
    skipped = _serve(spec, "--skip-verify")
    assert skipped.returncode == 0 and "warn verified: not checked (--skip-verify)" in skipped.stdout, skipped.stdout
    assert run_cli("verify", str(ckpt)).returncode == 0
    ok = _serve(spec)
    assert ok.returncode == 0 and "ok verified" in ok.stdout, ok.stdout

    shard = ckpt / SHARD2
    data = shard.read_bytes()
    shard.write_bytes(data[:-4096])  # truncated after verifying
    assert_clean_error(_serve(spec), SHARD2, "truncated or replaced", code=1)

    shard.write_bytes(bytes(reversed(data)))  # same size, other bytes: a replaced file has a new mtime
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert_clean_error(_serve(spec), SHARD2, "modified after verification", code=1)
    assert_clean_error(run_cli("verify", str(ckpt), "--check-marker"), SHARD2, code=1)

    shard.write_bytes(data)
    assert run_cli("verify", str(ckpt)).returncode == 0
    index = json.loads((ckpt / INDEX).read_text())
    (ckpt / INDEX).write_text(json.dumps(index, indent=1))  # same map, other bytes
    assert_clean_error(_serve(spec), INDEX, "changed since verification", code=1)


def test_hash_without_reference_claims_nothing(ckpt: Path) -> None:
    shard = ckpt / SHARD2
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # a flipped byte in tensor data: headers and sizes cannot see it
    shard.write_bytes(bytes(data))
    proc = run_cli("verify", str(ckpt), "--hash")  # no manifest: nothing to compare the hashes with
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "NOT compared" in text and "sha256 checked" not in text and "matched" not in text
    marker = json.loads((ckpt / VERIFY_MARKER).read_text())
    assert marker["full_hash"] is False and marker["hashes_computed"] is True
    assert marker["shards"][SHARD2]["sha256"] == hashlib.sha256(bytes(data)).hexdigest()

    # with the source's hashes (as download writes them from the Hub's LFS metadata) it is caught
    manifest = {"source": "hf", "location": "test", "revision": None, "files": {
        p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in ckpt.glob("*.safetensors")}}
    manifest["files"][SHARD2]["sha256"] = hashlib.sha256(bytes(reversed(data))).hexdigest()
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    assert_clean_error(run_cli("verify", str(ckpt), "--hash"), SHARD2, "does not match the source")
    assert not (ckpt / VERIFY_MARKER).exists()


def _big_sparse_checkpoint(d: Path) -> Path:
    """A one-shard checkpoint whose shard is 64 MiB (a hole after its header: sparse, made at once), so
    hashing it takes several CHUNK reads; its mtime is set far in the past, so any write changes it."""
    from kimi_deploy.weights import CHUNK

    make_checkpoint(d, shards=1)
    shard = d / "model-00001-of-00001.safetensors"
    n = 4 * CHUNK // 4  # floats: 4 chunks of data
    raw = json.dumps({"model.layers.1.w0": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    raw += b" " * (-len(raw) % 8)
    with open(shard, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        fh.truncate(8 + len(raw) + 4 * n)
    (d / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {"model.layers.1.w0": shard.name}}))
    os.utime(shard, ns=(10**18, 10**18))
    return shard


# Each changes the shard from another process, after the first chunk was hashed and before the next read.
CHANGES = {
    "truncated": ["truncate", "-s", "1000000", "{shard}"],
    "rewritten in place": ["sh", "-c", "printf x | dd of={shard} bs=1 seek=33554432 conv=notrunc status=none"],
    "renamed over": ["sh", "-c", "cp --sparse=always {shard} {shard}.new && touch -d @1000000000 {shard}.new "
                                 "&& mv {shard}.new {shard}"],
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_shard_changed_while_hashed_fails_and_leaves_no_marker(tmp_path: Path, change: str) -> None:
    """verify --hash reads a shard for minutes; one truncated, rewritten or replaced meanwhile must not
    pass with the hash of a mixture, nor leave a marker (the one before this run included) vouching for
    it. The change comes from a second process at a known point: the hashing thread's per-chunk callback
    runs it to completion after the first chunk."""
    from kimi_deploy.weights import verify

    d = tmp_path / "ckpt"
    shard = _big_sparse_checkpoint(d)
    assert verify(d, full_hash=True, show_progress=False).ok  # untouched, it passes: the test can tell
    marker = json.loads((d / VERIFY_MARKER).read_text())["shards"][shard.name]
    assert marker["size"] == shard.stat().st_size and marker["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
    calls = []

    def interfere(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            argv = [a.format(shard=shard) for a in CHANGES[change]]
            subprocess.run(argv, check=True, timeout=60)

    result = verify(d, full_hash=True, show_progress=False, on_hash_bytes=interfere)
    assert not result.ok and calls, result
    assert [p.split(":")[0] for p in result.problems] == [shard.name], result.problems
    assert "changed while it was being hashed" in result.problems[0], result.problems
    assert not (d / VERIFY_MARKER).exists()
    assert not any("recorded in the marker" in n for n in result.notes), result.notes


# --- malformed files are bad input naming the file ----------------------------------------------------

def _single_file(d: Path, header: bytes) -> Path:
    for p in d.glob("*.safetensors"):
        p.unlink()
    (d / INDEX).unlink()
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    return d / "model.safetensors"


@pytest.mark.parametrize("header", [b'["not", "an", "object"]', b'{"w": {"dtype": "F32", "shape": [4]}}',
                                    b'{"w": {"data_offsets": [16, 0]}}', b'{"w": 7}', b"\xff\xfe{}"])
def test_bad_safetensors_header_single_file(ckpt: Path, header: bytes) -> None:
    path = _single_file(ckpt, header)
    assert_clean_error(run_cli("verify", str(ckpt)), str(path), "not a valid safetensors file")


def test_bad_safetensors_header_in_a_shard(ckpt: Path) -> None:
    header = b'{"w": {"dtype": "F32", "shape": [4]}}'  # no data_offsets
    (ckpt / SHARD1).write_bytes(len(header).to_bytes(8, "little") + header)
    assert_clean_error(run_cli("verify", str(ckpt)), SHARD1, "data_offsets")


@pytest.mark.parametrize("index, needle", [
    ('{"weight_map": ["a", "b"]}', "got list"), ("[1, 2]", "got nothing"), ('{"weight_map": {"a": 3}}', "not a file name"),
    ("{not json", "not a JSON index"),
])
def test_bad_index(ckpt: Path, tmp_path: Path, index: str, needle: str) -> None:
    (ckpt / INDEX).write_text(index)
    assert_clean_error(run_cli("verify", str(ckpt)), str(ckpt / INDEX), needle)
    assert_clean_error(_serve(_spec(tmp_path, ckpt), "--skip-verify"), INDEX, needle, code=1)


@pytest.mark.parametrize("args", [[], ["--model", "kimi-k2-instruct"]])
def test_config_json_that_is_a_list(ckpt: Path, args: list[str]) -> None:
    (ckpt / "config.json").write_text("[1, 2, 3]")
    assert_clean_error(run_cli("verify", str(ckpt), *args), str(ckpt / "config.json"), "not an object")


@pytest.mark.parametrize("manifest", ["{corrupt", '{"files": []}', '{"files": {"x": {"size": "big"}}}'])
def test_corrupt_manifest(ckpt: Path, manifest: str) -> None:
    (ckpt / MANIFEST).write_text(manifest)
    assert_clean_error(run_cli("verify", str(ckpt)), str(ckpt / MANIFEST), "corrupt manifest")


def test_download_dir_that_is_a_file(ckpt: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(target))
    assert_clean_error(proc, str(target), "not a directory")
    under = target / "sub"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(under))
    assert_clean_error(proc, str(under), "cannot create the directory")
    assert target.read_text() == "x"


def test_verify_a_file_is_bad_input(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert_clean_error(run_cli("verify", str(f)), str(f), "not a checkpoint directory")


def _cli_read_only(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI with `d` bind-mounted read-only over itself in a private mount namespace (`unshare
    -m`; -r maps a non-root user to root there). A read-only mount, not permission bits: root ignores
    those, and so do the pods that mount a weights volume read-only."""
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run([*unshare, "sh", "-c", script, str(d), "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no private read-only bind mount here: {probe.stderr.decode()[:200]}")
    return subprocess.run([*unshare, "sh", "-c", script, str(d), sys.executable, "-m", "kimi_deploy", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_read_only_weights_directory(ckpt: Path, tmp_path: Path) -> None:
    """verify passes the files but cannot leave its marker; download cannot write at all; a failed
    verify cannot remove a stale marker: each is exit 2 saying so, never an internal error."""
    proc = _cli_read_only(ckpt, "verify", str(ckpt), "--hash")
    assert_clean_error(proc, str(ckpt), "passed verification", "cannot be written", "Read-only file system",
                       "--skip-verify")
    assert not (ckpt / VERIFY_MARKER).exists() and not list(ckpt.glob(".*.tmp"))
    proc = _cli_read_only(ckpt, "download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(ckpt))
    assert_clean_error(proc, str(ckpt), "cannot write in the directory", "Read-only file system")
    assert run_cli("verify", str(ckpt)).returncode == 0  # writable again: a marker
    shard = ckpt / SHARD2
    shard.write_bytes(shard.read_bytes()[:-8])
    proc = _cli_read_only(ckpt, "verify", str(ckpt))
    assert_clean_error(proc, SHARD2, "truncated", f"{VERIFY_MARKER} no longer describes these files but cannot be "
                       "removed (Read-only file system)")
    assert "internal error" not in proc.stderr
    assert_clean_error(run_cli("verify", str(ckpt), "--check-marker"), SHARD2, code=1)  # and serve refuses it


# --- fuzz: the header and index readers give a result or BadInput naming the file, nothing else -------

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
entries = st.dictionaries(st.text(max_size=6), st.one_of(
    json_values, st.fixed_dictionaries({"dtype": st.just("F32"), "shape": st.just([1]),
                                        "data_offsets": st.lists(st.integers(-5, 64) | json_values, max_size=3)})),
    max_size=4)


def _ends_well(fn, path: Path) -> None:
    try:
        fn(path)
    except BadInput as exc:
        assert str(path) in str(exc)


@FUZZ
@given(data=st.binary(max_size=256))
def test_fuzz_header_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    _ends_well(read_safetensors_header, path)


@FUZZ
@given(header=st.one_of(json_values, entries), pad=st.integers(0, 64))
def test_fuzz_header_random_json(tmp_path: Path, header: object, pad: int) -> None:
    raw = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(pad))
    _ends_well(read_safetensors_header, path)


@FUZZ
@given(doc=st.one_of(json_values, st.fixed_dictionaries({"weight_map": st.one_of(
    json_values, st.dictionaries(st.text(max_size=6), st.text(max_size=12) | json_values, max_size=4))})),
    raw=st.binary(max_size=64), use_raw=st.booleans())
def test_fuzz_index(tmp_path: Path, doc: object, raw: bytes, use_raw: bool) -> None:
    path = tmp_path / INDEX
    path.write_bytes(raw if use_raw else json.dumps(doc).encode())
    try:
        weight_map = read_index(path)
    except BadInput as exc:
        assert str(path) in str(exc)
        return
    for shard in weight_map.values():  # whatever is accepted stays inside the directory
        assert (tmp_path / shard).resolve().is_relative_to(tmp_path.resolve())


def test_source_names_outside_the_target_are_refused(tmp_path: Path) -> None:
    """An S3 listing is whatever keys the bucket holds; one with `..` must not be written outside --dir."""
    from kimi_deploy.weights import Listing, RemoteFile, download

    listing = Listing("s3", "s3://bucket/k2", None, [RemoteFile("config.json", 2),
                                                     RemoteFile("../../escaped.json", 2)])
    with pytest.raises(BadInput, match="outside the target directory"):
        download(listing, tmp_path / "k2", show_progress=False, log=lambda m: None)
    assert not (tmp_path / "k2").exists() and not (tmp_path.parent / "escaped.json").exists()



def test_bad_input_to_verify_keeps_a_valid_marker(tmp_path: Path) -> None:
    """A marker stays unless verify finds the files themselves bad: an unknown --model is refused before
    anything is touched, a --model the checkpoint is not fails the check but leaves the marker, which is
    still true of the files (serve keeps starting); a truncated shard removes it."""
    dest = make_checkpoint(tmp_path / "ckpt")
    assert run_cli("verify", str(dest)).returncode == 0
    marker = dest / VERIFY_MARKER
    before = marker.read_bytes()
    assert_clean_error(run_cli("verify", str(dest), "--model", "kimi-k2-typo"), "unknown model", "kimi-k2-typo")
    assert marker.read_bytes() == before
    proc = run_cli("verify", str(dest), "--model", "kimi-k2-instruct")
    assert_clean_error(proc, "config.json does not match kimi-k2-instruct")
    assert "is kept" in proc.stderr and marker.read_bytes() == before
    assert run_cli("verify", str(dest), "--check-marker").returncode == 0
    shard = dest / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])
    assert_clean_error(run_cli("verify", str(dest), "--model", "kimi-k2-instruct"), "truncated")
    assert not marker.exists()
