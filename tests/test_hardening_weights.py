"""Issue 12, download / verify / serve's weights checks: no success that is not, no false "verified",
exit 2 naming the file for every malformed input. Real files corrupted on disk, the real CLI in a
subprocess, the real huggingface_hub client against tests/hubstub.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from kimi_deploy.errors import BadInput
from kimi_deploy.weights import MANIFEST, REPORT, VERIFY_MARKER, read_index, read_safetensors_header

from .checkpoints import INDEX, make_checkpoint, write_shard
from .conftest import ROOT, TINY_SPEC, assert_clean_error, ctrl_c_as_in_a_shell, free_port, run_cli
from .hubstub import Faults, Hub, HubServer

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


# --- class 2: success that is not ------------------------------------------------------------------

def test_negative_retries_refused_before_anything(ckpt: Path, tmp_path: Path) -> None:
    dest = tmp_path / "k2"
    proc = run_cli("download", "--source", "mirror", "--mirror", str(ckpt), "--dir", str(dest), "--retries", "-1")
    assert_clean_error(proc, "--retries")
    assert "done" not in proc.stdout and not dest.exists()
    # The library refuses it too (range(0) used to run nothing and count every file as fetched).
    from kimi_deploy.weights import download, list_mirror

    with pytest.raises(BadInput, match="--retries"):
        download(list_mirror(str(ckpt)), dest, retries=-1, show_progress=False, log=lambda m: None)
    assert not list(dest.glob("*.safetensors")) if dest.exists() else True


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


# --- class 3: false "verified" ---------------------------------------------------------------------

@pytest.mark.parametrize("outside", ["../elsewhere/{}", "/{root}/elsewhere/{}"])
def test_index_pointing_outside_the_directory_is_refused(ckpt: Path, tmp_path: Path, outside: str) -> None:
    """A real, valid shard outside the checkpoint: the old verify followed the index there and passed."""
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


# --- class 6: malformed files are bad input naming the file ----------------------------------------

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


# --- fuzz: the header and index readers give a result or BadInput naming the file, nothing else -----

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
