"""Download and verify ~1 TB checkpoints: from the Hugging Face Hub (huggingface_hub, pinned revision),
a local/NFS mirror directory or S3-compatible storage; resumable, retried with backoff on 429/5xx and
dropped connections, safe when several nodes share the target directory (a lock file, every file
written under a temporary name and renamed when complete); verified by safetensors headers, the index,
the architecture in config.json and optionally full sha256 against the Hub's LFS hashes, leaving a
marker that `serve` preflight and the Kubernetes init container trust."""

from __future__ import annotations

import fcntl
import functools
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from .endpoint import RetryPolicy
from .errors import BadInput, OperationFailed, seconds_from_env

MANIFEST = ".kimi-deploy-manifest.json"
# Written by verify() only after a clean pass; `serve` preflight and the Kubernetes init container wait for it.
VERIFY_MARKER = ".kimi-deploy-verified.json"
MARKER_FORMAT = 2  # 1: a bare "verified" flag; 2: records every shard (check_marker needs it)
LOCK = ".kimi-deploy.lock"
REPORT = "download-report.json"
# What serving needs: weights, index, configs, tokenizer (incl. tiktoken + remote code), chat template.
SERVING_PATTERNS = ["*.safetensors", "*.json", "*.py", "tiktoken.model", "*.tiktoken", "tokenizer.model",
                    "*.jinja", "merges.txt", "vocab.txt"]
SKIP_PATTERNS = [".*", "original/*", "*.md"]
CHUNK = 16 * 2**20


@dataclass
class RemoteFile:
    name: str
    size: int
    sha256: str | None = None  # LFS hash from the Hub (None for small git files and mirrors)


@dataclass
class Listing:
    source: str  # hf | mirror | s3
    location: str  # repo id, mirror dir or s3 URL
    revision: str | None  # resolved commit for the Hub
    files: list[RemoteFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class Report:
    source: str
    location: str
    revision: str | None
    files: int = 0
    downloaded: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    retries: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def throughput_mb_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


def wanted(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(base, p) for p in SKIP_PATTERNS):
        return False
    return any(fnmatch.fnmatch(base, p) for p in SERVING_PATTERNS)


# --- listing ---------------------------------------------------------------------------------------

# The backoff base of every retried request of a download (the listing and each file), in seconds: the
# waits are base, 2 x base, 4 x base ... capped at RETRY_CAP_S (endpoint.RetryPolicy.delay).
ENV_RETRY_BASE = "KIMI_DOWNLOAD_RETRY_BASE_S"
DEFAULT_RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0
MAX_RETRIES = 100  # --retries
# Per phase (connect, read) of the listing request: huggingface_hub's client has no timeout of its own
# (huggingface_hub/utils/_http.py, default_client_factory: timeout=None), so a host that drops packets
# would hold `download` for ever.
LIST_TIMEOUT_S = 60.0


def retry_base_from_env() -> float:
    """KIMI_DOWNLOAD_RETRY_BASE_S as seconds (a positive finite number), or the default when unset."""
    return seconds_from_env(ENV_RETRY_BASE, DEFAULT_RETRY_BASE_S)


def _retry_policy(retries: int) -> RetryPolicy:
    # no attempt at all would report the request as done; past MAX_RETRIES a dead Hub is a download that
    # never ends (each wait is up to RETRY_CAP_S)
    if not 0 <= retries <= MAX_RETRIES:
        raise BadInput(f"must be 0..{MAX_RETRIES}, got {retries}", "--retries")
    return RetryPolicy(attempts=retries + 1, base_s=retry_base_from_env(), cap_s=RETRY_CAP_S)


def _hub_unreachable(endpoint: str, attempts: int, exc: BaseException) -> str:
    return (f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}: {str(exc)[:200]}; "
            f"{attempts} attempt(s) with backoff): offline, or the Hub is unreachable from here. Check "
            "HF_ENDPOINT, the network and the proxy (HTTPS_PROXY / NO_PROXY). Without the Hub: copy the "
            "checkpoint from a local directory with `weights.source: mirror` and `weights.mirror: DIR` "
            "(--source mirror --mirror DIR), or fill a Hugging Face cache beforehand and run with "
            "HF_HUB_OFFLINE=1, which reads only that cache (no `download`).")


def list_hub(repo: str, revision: str | None, token: str | None, *, retries: int = 5,
             log: Callable[[str], None] = print) -> Listing:
    """The serving files of repo@revision. Connection failures, 408/429/5xx are retried `retries` times
    with backoff (a bounded total: attempts x LIST_TIMEOUT_S plus the waits); an unreachable Hub then
    is OperationFailed naming the endpoint and the offline alternatives."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    if constants.is_offline_mode():  # the client would refuse every request (errors.OfflineModeIsEnabled)
        # huggingface_hub reads HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE (huggingface_hub/constants.py)
        var = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        raise BadInput(f"is set: `download` cannot list {repo} on the Hub offline. Unset it to download, or "
                       "copy from a local directory with `weights.source: mirror` (--source mirror --mirror "
                       "DIR); a checkpoint already in the Hugging Face cache needs no `download`", var)
    endpoint = urlsplit(constants.ENDPOINT)
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:  # not worth retrying
        raise BadInput(f"{constants.ENDPOINT!r} is not an http(s) URL: the Hub (https://huggingface.co) or a "
                       "mirror of its API", "HF_ENDPOINT")
    policy = _retry_policy(retries)

    def note(exc: BaseException, attempt: int, pause: float) -> None:
        log(f"listing {repo}: {type(exc).__name__}; retrying in {pause:.1f} s (attempt {attempt + 1}/{retries + 1})")

    try:
        info = policy.run_sync(lambda: HfApi(token=token).model_info(
            repo, revision=revision, files_metadata=True, timeout=LIST_TIMEOUT_S), on_retry=note)
    except GatedRepoError:
        hint = "HF_TOKEN is set but has no access" if token else "set HF_TOKEN to a token with access"
        raise BadInput(f"{repo} is gated: {hint}", "HF_TOKEN") from None
    except RevisionNotFoundError:
        raise BadInput(f"revision {revision!r} not found in {repo}", "revision") from None
    except RepositoryNotFoundError:
        raise BadInput(f"repository {repo!r} not found (or private without a token)", "model") from None
    except HfHubHTTPError as exc:
        raise OperationFailed(f"listing {repo} failed: {exc}") from None
    except Exception as exc:
        if not policy.retryable(exc):
            raise
        raise OperationFailed(_hub_unreachable(constants.ENDPOINT, retries + 1, exc)) from None
    files = [RemoteFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None)
             for s in info.siblings or [] if wanted(s.rfilename)]
    if not any(f.name.endswith(".safetensors") for f in files):
        raise BadInput(f"{repo}@{info.sha} has no safetensors weights", "model")
    return Listing("hf", repo, info.sha, files)


def mirror_file(base: Path, name: str) -> Path:
    """The real file behind `name` in the mirror directory `base`. A symbolic link is followed only to a
    file inside the mirror, or, for a mirror that is a snapshot of a Hugging Face cache
    (models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/HASH; huggingface_hub docs, guides/manage-cache),
    inside that repository's blobs; a link anywhere else (/etc/shadow) is BadInput naming the link, so
    no file outside the mirror is ever copied into a checkpoint."""
    root = base.resolve()
    path = base / name
    real = path.resolve()
    allowed = [root] + ([root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [])
    if not any(real.is_relative_to(a) for a in allowed):
        raise BadInput(f"a symbolic link to {str(real)[:200]}, outside the mirror directory: refused (a mirror's "
                       "files must be inside it; copy the file in, or give the directory it is in as the mirror)",
                       str(path))
    return real


def list_mirror(root: str) -> Listing:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise BadInput("mirror directory not found", root)
    files = [RemoteFile(str(p.relative_to(base)), mirror_file(base, str(p.relative_to(base))).stat().st_size)
             for p in sorted(base.rglob("*")) if p.is_file() and wanted(str(p.relative_to(base)))]
    if not files:
        raise BadInput("no checkpoint files in the mirror directory", root)
    return Listing("mirror", str(base), None, files)


@functools.lru_cache(maxsize=8)
def _s3(url: str) -> tuple[Any, str, str]:
    """One boto3 client per source URL, shared by the listing and every file (boto3 clients are thread-safe)."""
    try:
        import boto3
    except ImportError:
        raise BadInput("S3 sources need boto3: pip install 'kimi-deploy[s3]'", "weights.source") from None
    if not url.startswith("s3://"):
        raise BadInput(f"{url!r} is not an s3://bucket/prefix URL", "weights.mirror")
    bucket, _, prefix = url[5:].partition("/")
    # boto3 reads AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
    client = boto3.client("s3", config=__import__("botocore.config").config.Config(
        retries={"max_attempts": 8, "mode": "standard"}))
    return client, bucket, prefix.rstrip("/")


def list_s3(url: str) -> Listing:
    client, bucket, prefix = _s3(url)
    files = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) + 1:] if prefix else obj["Key"]
                if name and wanted(name):
                    files.append(RemoteFile(name, int(obj["Size"])))
    except Exception as exc:  # botocore raises many types; the message names bucket and cause
        raise OperationFailed(f"listing {url} failed: {exc}") from None
    if not files:
        raise BadInput("no checkpoint files under that S3 prefix", url)
    return Listing("s3", url, None, files)


# --- the shared-directory lock ---------------------------------------------------------------------

@contextmanager
def dir_lock(dest: Path, wait: bool, timeout: float, log: Callable[[str], None]) -> Iterator[None]:
    """One writer per directory, across processes and (with NFSv4 / Lustre locking) across nodes."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(dest / LOCK, "a+")
    except OSError as exc:  # a read-only filesystem or mount, no permission
        raise BadInput(f"cannot write in the directory ({exc.strerror}): download needs a writable target "
                       "directory (a read-only mount is for serving)", str(dest)) from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if not wait:
                raise OperationFailed(f"another download into {dest} is in progress ({holder}); "
                                      "retry later or drop --no-wait to wait for it")
            log(f"another download into {dest} is in progress ({holder}); waiting for it to finish")
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise OperationFailed(f"gave up waiting for the lock on {dest} after {timeout:.0f} s") from None
                    time.sleep(1.0)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


# --- fetching --------------------------------------------------------------------------------------

class SizeMismatch(OperationFailed):
    """A fetched file's size differs from the listing (truncated or substituted transfer): retried."""

    transient = True  # RetryPolicy retries it


def _with_retries(fn: Callable[[], None], name: str, retries: int, report: Report, lock: threading.Lock,
                  log: Callable[[str], None]) -> None:
    """fn() under the one retry policy (endpoint.RetryPolicy): a dropped connection (httpx2's transport
    errors, the Hub client's HTTP stack), 408/429/5xx from the Hub or a mirror (after the `Retry-After`
    the server asks for) and a truncated file are tried again, each retry logged and counted."""
    policy = _retry_policy(retries)

    def note(exc: BaseException, attempt: int, pause: float) -> None:
        with lock:
            report.retries += 1
        log(f"{name}: {type(exc).__name__}; retrying in {pause:.1f} s (attempt {attempt + 1}/{retries + 1})")

    policy.run_sync(fn, on_retry=note)


class _HubRetryCounter(logging.Handler):
    """huggingface_hub retries 429s and resumes dropped transfers itself and only logs it; count those."""

    # huggingface_hub/utils/_http.py (_http_backoff_base) and file_download.py (http_get), 2.x
    MARKERS = ("Retrying in", "Rate limited. Waiting", "Trying to resume download")

    def __init__(self, report: Report, lock: threading.Lock, log: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        # not `self.lock`: logging.Handler holds its own lock under that name while calling emit()
        self.report, self.count_lock, self.log = report, lock, log

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if any(m in msg for m in self.MARKERS):
            with self.count_lock:
                self.report.retries += 1
            self.log(msg.splitlines()[0][:200] + " (retrying)")


@contextmanager
def _hub_bars_off() -> Iterator[None]:
    """One bar, ours: silence huggingface_hub's per-file tqdm bars for the duration. Setting the
    HF_HUB_DISABLE_PROGRESS_BARS variable here would not work: huggingface_hub reads it once, at import
    (huggingface_hub/constants.py, used by huggingface_hub/utils/tqdm.py). An operator's explicit
    HF_HUB_DISABLE_PROGRESS_BARS=0 still wins (huggingface_hub warns and keeps its bars)."""
    from huggingface_hub import utils as hub_utils

    was_on = not hub_utils.are_progress_bars_disabled()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            hub_utils.enable_progress_bars()


def _complete(dest: Path, f: RemoteFile) -> bool:
    p = dest / f.name
    return p.is_file() and p.stat().st_size == f.size


def _partial_bytes(dest: Path) -> int:
    """Bytes already in temporary files (resumed downloads count towards progress)."""
    total = 0
    for pattern in (".cache/huggingface/download/**/*.incomplete", "**/*.kimi-partial"):
        for p in dest.glob(pattern):
            try:
                total += p.stat().st_size
            except OSError:
                pass
    return total


def _fetch_one(listing: Listing, f: RemoteFile, dest: Path, token: str | None) -> None:
    target = dest / f.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if listing.source == "hf":
        from huggingface_hub import hf_hub_download

        # local_dir mode downloads into .cache/huggingface/download/<name>.incomplete, resumes it with a
        # Range request, and moves it into place only when complete.
        hf_hub_download(listing.location, f.name, revision=listing.revision, local_dir=dest, token=token)
    else:
        tmp = target.with_name(target.name + ".kimi-partial")
        if listing.source == "mirror":
            shutil.copyfile(mirror_file(Path(listing.location), f.name), tmp)  # a link swapped since listing
        else:
            client, bucket, prefix = _s3(listing.location)
            client.download_file(bucket, f"{prefix}/{f.name}" if prefix else f.name, str(tmp))
        os.replace(tmp, target)  # atomic on POSIX filesystems, NFS included
    got = target.stat().st_size
    if got != f.size:
        target.unlink()  # a wrong-sized file must not pass for complete on the next run
        raise SizeMismatch(f"got {got} bytes, the source listed {f.size}")


def _fetch_all(files: list[RemoteFile], workers: int, fetch: Callable[[RemoteFile], None],
               on_tick: Callable[[list[RemoteFile]], None]) -> Iterator[tuple[RemoteFile, BaseException | None]]:
    """Run fetch(f) for every file on `workers` daemon threads; yield (file, exception or None) as each
    ends, calling on_tick(files done so far) every 0.2 s. Daemon threads, not a ThreadPoolExecutor: the
    executor's worker threads are joined at interpreter exit (concurrent/futures/thread.py, _python_exit),
    so Ctrl-C would wait for every in-flight multi-GB file to finish. Here an interrupt stops handing out
    files and the process exits at once; partial files stay under their temporary names."""
    import queue

    todo: "queue.Queue[RemoteFile]" = queue.Queue()
    for f in files:
        todo.put(f)
    done: "queue.Queue[tuple[RemoteFile, BaseException | None]]" = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                f = todo.get_nowait()
            except queue.Empty:
                return
            try:
                fetch(f)
                done.put((f, None))
            except BaseException as exc:  # reported per file by the caller
                done.put((f, exc))

    threads = [threading.Thread(target=worker, daemon=True, name=f"fetch-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    got: list[RemoteFile] = []
    try:
        for _ in range(len(files)):
            while True:
                try:
                    f, exc = done.get(timeout=0.2)
                    break
                except queue.Empty:
                    on_tick(got)
            if exc is None:
                got.append(f)
            on_tick(got)
            yield f, exc
    finally:
        stop.set()


def download(listing: Listing, dest: Path, workers: int = 8, retries: int = 5, wait_for_lock: bool = True,
             lock_timeout: float = 6 * 3600, token: str | None = None, log: Callable[[str], None] = print,
             show_progress: bool = True) -> Report:
    """Fetch every file of the listing into dest, skipping complete ones; write manifest and report."""
    if workers < 1:
        raise BadInput(f"must be >= 1, got {workers}", "--workers")
    _retry_policy(retries)  # --retries and KIMI_DOWNLOAD_RETRY_BASE_S are bad input before anything is fetched
    bad = [f.name for f in listing.files if not shard_name_ok(f.name)]
    if bad:  # an S3 key like prefix/../../x would be written outside the target directory
        raise BadInput(f"the source lists {bad[0][:200]!r}, a path outside the target directory", listing.location)
    if dest.exists() and not dest.is_dir():
        raise BadInput("exists and is not a directory", str(dest))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, read-only filesystem, no permission
        raise BadInput(f"cannot create the directory ({exc.strerror})", str(dest)) from None
    report = Report(listing.source, listing.location, listing.revision, files=len(listing.files))
    start = time.monotonic()
    with dir_lock(dest, wait_for_lock, lock_timeout, log):
        todo = [f for f in listing.files if not _complete(dest, f)]
        report.skipped = len(listing.files) - len(todo)
        need = sum(f.size for f in todo) - _partial_bytes(dest)
        free = shutil.disk_usage(dest).free
        if need > free:
            raise BadInput(f"not enough disk space: the download needs {need / 1e9:.1f} GB more, "
                           f"{free / 1e9:.1f} GB free", str(dest))
        done_bytes = sum(f.size for f in listing.files) - sum(f.size for f in todo)
        lock = threading.Lock()
        hub_logger = logging.getLogger("huggingface_hub")
        counter = _HubRetryCounter(report, lock, log)
        hub_logger.addHandler(counter)
        hub_logger.propagate = False  # its warnings arrive through the counter, once
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), disable=not show_progress)
        fetched: list[RemoteFile] = []
        interrupted = False
        with progress, _hub_bars_off():
            task = progress.add_task(f"{len(todo)} files", total=listing.total_bytes, completed=done_bytes)
            results = _fetch_all(todo, min(workers, max(len(todo), 1)),
                                 lambda f: _with_retries(lambda: _fetch_one(listing, f, dest, token), f.name, retries,
                                                         report, lock, log),
                                 lambda got: progress.update(task, completed=done_bytes + sum(
                                     f.size for f in got) + _partial_bytes(dest)))
            try:
                for f, exc in results:
                    if exc is None:
                        fetched.append(f)
                        report.downloaded += 1
                    else:
                        report.errors.append(f"{f.name}: {type(exc).__name__}: {exc}")
            except KeyboardInterrupt:
                interrupted = True
        hub_logger.removeHandler(counter)
        hub_logger.propagate = True
        report.bytes = sum(f.size for f in fetched)
        report.seconds = round(time.monotonic() - start, 3)
        manifest = {"source": listing.source, "location": listing.location, "revision": listing.revision,
                    "files": {f.name: {"size": f.size, "sha256": f.sha256} for f in listing.files}}
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if interrupted:
            report.errors.append(f"interrupted: {len(todo) - report.downloaded - len(report.errors)} file(s) not "
                                 "fetched (partial ones are kept under temporary names and resumed next time)")
        elif not report.errors:
            report.errors += _index_gaps(dest)
        out = {**asdict(report), "throughput_mb_s": round(report.throughput_mb_s, 2)}
        (dest / REPORT).write_text(json.dumps(out, indent=2))
    if interrupted:
        raise KeyboardInterrupt
    if report.errors:
        raise OperationFailed(f"{len(report.errors)} file(s) failed, e.g. {report.errors[0]}")
    return report


def _index_gaps(dest: Path) -> list[str]:
    """Shards the downloaded index names that are not in the directory: a source (a mirror that was
    copied half-way, a Hub repo mid-upload) that lists fewer shards than its own index is incomplete, and
    a download of it must not end as done."""
    index = dest / "model.safetensors.index.json"
    if not index.is_file():
        return []
    shards = sorted(set(read_index(index).values()))
    return [f"{s}: named by model.safetensors.index.json but not in the source" for s in shards
            if not (dest / s).is_file()]


# --- verification ----------------------------------------------------------------------------------

@dataclass
class VerifyResult:
    ok: bool
    problems: list[str]
    files: int
    bytes: int
    hashed: bool
    seconds: float
    notes: list[str] = field(default_factory=list)
    compared: bool = False  # every shard's sha256 matched a hash the source published


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """(tensor name -> entry, bytes the header says the file must have). Anything that is not the format
    (https://github.com/huggingface/safetensors#format: 8-byte little-endian length, then a JSON object
    of {name: {dtype, shape, data_offsets: [begin, end]}} plus an optional __metadata__) is BadInput
    naming the file."""
    def bad(why: str) -> BadInput:
        return BadInput(f"not a valid safetensors file: {why}", str(path))

    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise bad("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise bad(f"header length {n} is implausible")
        text = fh.read(n)
    if len(text) < n:
        raise bad(f"the header says it is {n} bytes long but the file ends after {len(text)}")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"the header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    end = 0
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                and offsets[0] <= offsets[1]):
            raise bad(f"tensor {name[:80]!r} has no valid data_offsets [begin, end]")
        end = max(end, offsets[1])
    return header, 8 + n + end


def shard_name_ok(name: object) -> bool:
    """A shard name from an index must stay inside the checkpoint directory: relative, no `..`, no
    empty or NUL parts. Checked lexically, so a shard that is a symlink into a Hugging Face cache
    (huggingface_hub's local_dir / cache layouts) is still fine."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        return False
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def read_index(path: Path) -> dict[str, str]:
    """The weight_map of a model.safetensors.index.json (tensor -> shard file), validated: a JSON object
    whose weight_map maps names to shard files inside the directory. BadInput naming the file otherwise."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"not a JSON index ({type(exc).__name__}: {str(exc)[:120]})", str(path)) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        got = type(weight_map).__name__ if isinstance(data, dict) and "weight_map" in data else "nothing"
        raise BadInput(f"weight_map must be an object of tensor -> shard file, got {got}", str(path))
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise BadInput(f"weight_map[{tensor[:80]!r}] is a {type(shard).__name__}, not a file name", str(path))
        if not shard_name_ok(shard):
            raise BadInput(f"weight_map[{tensor[:80]!r}] names {shard[:200]!r}, which is not a file inside the "
                           "checkpoint directory (absolute, empty or `..` paths are refused)", str(path))
    return weight_map


def read_manifest(dest: Path) -> dict[str, Any]:
    """The manifest download() wrote ({} when absent); a corrupt one is BadInput naming it."""
    path = dest / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"corrupt manifest ({type(exc).__name__}); delete it and re-run download", str(path)) from None
    files = data.get("files", {}) if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("size", 0), int) and isinstance(e.get("sha256") or "", str)
            for e in files.values()):
        raise BadInput("corrupt manifest (expected {files: {name: {size, sha256}}}); delete it and re-run "
                       "download", str(path))
    return data


def sha256_file(path: Path, on_bytes: Callable[[int], None] = lambda _n: None) -> str:
    """The file's sha256, read in CHUNK pieces (`on_bytes` told of each); ChangedWhileHashing when the
    file changed while it was read (sha256_stat)."""
    return sha256_stat(path, on_bytes)[0]


class ChangedWhileHashing(OperationFailed):
    """A file's size, mtime or inode differed after it was read, or the bytes read were not its size:
    the digest is of no single version of the file."""


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another without reading it: device, inode (a file renamed
    over it), size (truncated, appended) and mtime in ns (rewritten in place)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _describe_change(before: os.stat_result, after: os.stat_result) -> str:
    if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino):
        return "replaced by another file (inode changed)"
    if before.st_size != after.st_size:
        return f"{before.st_size} bytes, then {after.st_size}"
    return "modified (mtime changed)"


def sha256_stat(path: Path, on_bytes: Callable[[int], None] = lambda _n: None) -> tuple[str, os.stat_result]:
    """The file's sha256 and the stat of the version hashed. ChangedWhileHashing when the file changed
    while it was read: the open file's stat before and after, and the path's after (a file renamed over
    the path leaves the open one unchanged), must be one identity, and exactly its size must be read."""
    h = hashlib.sha256()
    read = 0
    with open(path, "rb", buffering=0) as fh:
        before = os.fstat(fh.fileno())
        while chunk := fh.read(CHUNK):
            h.update(chunk)  # hashlib releases the GIL on large buffers: threads hash in parallel
            read += len(chunk)
            on_bytes(len(chunk))
        after = os.fstat(fh.fileno())
    now = path.stat()
    for later in (after, now):
        if _identity(later) != _identity(before):
            raise ChangedWhileHashing(f"changed while it was being hashed ({_describe_change(before, later)})")
    if read != before.st_size:
        raise ChangedWhileHashing(f"changed while it was being hashed ({read} bytes read of {before.st_size})")
    return h.hexdigest(), before


def _hash_all(paths: list[Path], workers: int | None,
              on_bytes: Callable[[int], None]) -> dict[Path, tuple[str, os.stat_result] | ChangedWhileHashing]:
    """sha256_stat of every file, each read once, files hashed in parallel across cores; a file that
    changed while read gives its ChangedWhileHashing, the others their digest."""
    workers = workers or os.cpu_count() or 1
    lock = threading.Lock()

    def counted(n: int) -> None:
        with lock:
            on_bytes(n)

    def one(p: Path) -> tuple[str, os.stat_result] | ChangedWhileHashing:
        try:
            return sha256_stat(p, counted)
        except ChangedWhileHashing as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(workers, max(len(paths), 1))) as pool:
        futures = {pool.submit(one, p): p for p in paths}
        return {futures[f]: f.result() for f in as_completed(futures)}


def hash_files(paths: list[Path], workers: int | None = None,
               on_bytes: Callable[[int], None] = lambda n: None) -> dict[Path, str]:
    """sha256 of every file, each read once, files hashed in parallel across cores; ChangedWhileHashing
    (naming the file) when one changed while it was read."""
    out: dict[Path, str] = {}
    for path, got in _hash_all(paths, workers, on_bytes).items():
        if isinstance(got, ChangedWhileHashing):
            raise ChangedWhileHashing(f"{path}: {got}")
        out[path] = got[0]
    return out


def _arch_mismatch(dest: Path, model: str) -> list[str]:
    from .architecture import Architecture
    from .catalog import get_model

    expected = get_model(model).architecture()
    try:
        got = Architecture.from_path(dest)
    except BadInput as exc:
        return [str(exc)]
    diffs = [f"{k}: config.json has {getattr(got, k)!r}, {model} has {getattr(expected, k)!r}"
             for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "n_routed_experts",
                       "moe_intermediate_size", "vocab_size", "kv_lora_rank", "quantization")
             if getattr(got, k) != getattr(expected, k)]
    return [f"config.json does not match {model} (wrong checkpoint or revision?): " + "; ".join(diffs)] if diffs else []


def _config_object(dest: Path) -> dict[str, Any] | None:
    """config.json as an object, None when absent; anything else is BadInput naming it."""
    cfg = dest / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"not JSON ({type(exc).__name__})", str(cfg)) from None
    if not isinstance(data, dict):
        raise BadInput(f"a JSON {type(data).__name__}, not an object: not a model config", str(cfg))
    return data


def _tool_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("kimi-deploy")
    except md.PackageNotFoundError:
        from . import __version__
        return __version__


def verify(dest: Path, model: str | None = None, full_hash: bool = False, workers: int | None = None,
           show_progress: bool = True, *, on_hash_bytes: Callable[[int], None] = lambda _n: None) -> VerifyResult:
    """Check a checkpoint directory; write the verify marker only when everything passed. The marker
    records what was verified (each shard's size and mtime, the index's and config's sha256, the tool
    version, whether hashes were computed and whether they were compared) so check_marker() can later
    tell whether the directory is still the one that was verified. The marker records each shard's stat
    as checked (and hashed); a shard that changed while it was checked or hashed fails the run.
    `on_hash_bytes` is told of every chunk hashed, from the hashing threads.

    A marker already there stays unless this run finds the files themselves bad: bad input (an unknown
    --model) and a --model the checkpoint is not leave a still-valid marker as it was."""
    start = time.monotonic()
    if dest.exists() and not dest.is_dir():
        raise BadInput("is a file, not a checkpoint directory", str(dest))
    if model:
        from .catalog import get_model

        get_model(model)  # an unknown id is bad input before anything is read or touched
    if not dest.is_dir():
        raise BadInput("checkpoint directory not found", str(dest))
    try:
        result = _verify_files(dest, model, full_hash, workers, show_progress, start, on_hash_bytes)
    except _MarkerNotWritten:
        raise  # the files passed: a marker already there is judged by check_marker, as always
    except BadInput as exc:
        stuck = _drop_marker(dest)  # the files no longer read as a checkpoint: no marker may vouch for them
        if stuck:
            raise BadInput(f"{exc}\n  {stuck}") from None
        raise
    return result


class _MarkerNotWritten(BadInput):
    """The checkpoint passed but the marker cannot be written (a read-only directory)."""


def _drop_marker(dest: Path) -> str | None:
    """Remove the verify marker; the problem to report when it is there and cannot be removed."""
    marker = dest / VERIFY_MARKER
    if marker.exists() or marker.is_symlink():
        try:
            marker.unlink()
        except OSError as exc:  # a read-only filesystem or mount
            return (f"{marker} no longer describes these files but cannot be removed ({exc.strerror}); "
                    "remove it where the directory is writable")
    return None


def _verify_files(dest: Path, model: str | None, full_hash: bool, workers: int | None, show_progress: bool,
                  start: float, on_hash_bytes: Callable[[int], None]) -> VerifyResult:
    problems: list[str] = []
    notes: list[str] = []
    manifest = read_manifest(dest)
    expected_files: dict[str, dict[str, Any]] = manifest.get("files", {})
    index_path = dest / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = read_index(index_path)
    elif (dest / "model.safetensors").is_file():
        header, _ = read_safetensors_header(dest / "model.safetensors")
        weight_map = {name: "model.safetensors" for name in header}
    else:
        raise BadInput("no model.safetensors.index.json or model.safetensors", str(dest))
    if _config_object(dest) is None:
        problems.append("config.json: missing")
    shards = sorted(set(weight_map.values()))
    by_shard: dict[str, set[str]] = {s: set() for s in shards}
    for tensor, shard in weight_map.items():
        by_shard[shard].add(tensor)
    total = 0
    seen: dict[str, os.stat_result] = {}  # each shard's version as checked; the marker records these
    for shard in shards:
        path = dest / shard
        if not path.is_file():
            problems.append(f"{shard}: missing ({len(by_shard[shard])} tensors of the index live there)")
            continue
        seen[shard] = path.stat()
        size = seen[shard].st_size
        total += size
        want = expected_files.get(shard, {}).get("size")
        if want is not None and size != want:
            problems.append(f"{shard}: {size} bytes, the source listed {want}")
        try:
            header, needed = read_safetensors_header(path)
        except (BadInput, OSError) as exc:
            problems.append(f"{shard}: safetensors header does not parse ({exc})")
            continue
        if needed != size:
            problems.append(f"{shard}: header describes {needed} bytes but the file has {size} (truncated or corrupt)")
        missing = sorted(by_shard[shard] - set(header))
        if missing:
            problems.append(f"{shard}: the index names {len(missing)} tensor(s) not in this file, e.g. {missing[0]}")
        extra = sorted(set(header) - by_shard[shard])
        if extra:
            problems.append(f"{shard}: {len(extra)} tensor(s) not in the index, e.g. {extra[0]}")
    asked = model is not None
    model = model or _catalog_model_for(manifest.get("location"))
    mismatch = _arch_mismatch(dest, model) if model else []
    problems += mismatch
    hashed = compared = False
    digests: dict[str, str] = {}
    if full_hash and not problems:
        paths = [dest / s for s in shards]
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn("sha256"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      disable=not show_progress) as progress:
            task = progress.add_task("hash", total=sum(seen[s].st_size for s in shards))

            def advance(n: int) -> None:
                progress.advance(task, n)
                on_hash_bytes(n)

            by_path = _hash_all(paths, workers, advance)
        for path, got in sorted(by_path.items()):
            shard = str(path.relative_to(dest))
            if isinstance(got, ChangedWhileHashing):
                problems.append(f"{shard}: {got}; verify again once nothing writes to it")
            elif _identity(got[1]) != _identity(seen[shard]):
                problems.append(f"{shard}: changed between its header check and its hashing "
                                f"({_describe_change(seen[shard], got[1])}); verify again once nothing writes to it")
            else:
                digests[shard] = got[0]
        hashed = True
        known = 0
        for shard, digest in sorted(digests.items()):
            want = expected_files.get(shard, {}).get("sha256")
            if want:
                known += 1
                if want != digest:
                    problems.append(f"{shard}: sha256 {digest[:16]}... does not match the source's {want[:16]}...")
        compared = known == len(shards) > 0
        if not known and not problems:
            notes.append("sha256 computed and recorded in the marker, but NOT compared with anything: the source "
                         "published no hashes (mirror/S3 source, or no download manifest). A corrupted copy "
                         "would pass; compare against a trusted copy's marker or download from the Hub.")
        elif not compared:
            notes.append(f"sha256 compared for {known} of {len(shards)} shards only (the source listed no hash "
                         "for the others)")
    if not problems:
        for shard in shards:  # the marker vouches for the versions checked: each must still be there
            try:
                now = (dest / shard).stat()
            except OSError as exc:
                problems.append(f"{shard}: gone while it was being verified ({exc.strerror})")
                continue
            if _identity(now) != _identity(seen[shard]):
                problems.append(f"{shard}: changed while it was being verified ({_describe_change(seen[shard], now)}); "
                                "verify again once nothing writes to it")
    result = VerifyResult(not problems, problems, len(shards), total, hashed, round(time.monotonic() - start, 3),
                          notes, compared)
    if result.ok:
        _write_marker(dest, manifest, index_path if index_path.is_file() else None, seen, digests, hashed,
                      compared)
    elif asked and problems == mismatch and (dest / VERIFY_MARKER).is_file() and check_marker(dest)[0]:
        # Only the operator's --model did not match, and the files are still the ones the marker verified.
        notes.append(f"the existing {VERIFY_MARKER} is kept: the files are the ones it verified; only the "
                     "--model check failed")
    else:
        stuck = _drop_marker(dest)  # the files failed: no marker may vouch for them
        if stuck:
            result.problems.append(stuck)
    return result


def _sha256_small(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_marker(dest: Path, manifest: dict[str, Any], index_path: Path | None, seen: dict[str, os.stat_result],
                  digests: dict[str, str], hashed: bool, compared: bool) -> None:
    """`seen`: each shard's stat as verified (Path.stat follows a symlink into a Hugging Face cache: the
    blob's size and mtime), recorded rather than taken again here, so the marker describes the version
    that was checked and hashed."""
    files = {}
    for shard, st in sorted(seen.items()):
        files[shard] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        **({"sha256": digests[shard]} if shard in digests else {})}
    data = {
        "format": MARKER_FORMAT, "tool": "kimi-deploy", "tool_version": _tool_version(),
        "revision": manifest.get("revision"), "source": manifest.get("location"),
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "index": index_path.name if index_path else None,
        "index_sha256": _sha256_small(index_path) if index_path else None,
        "config_sha256": _sha256_small(dest / "config.json"),
        # hashes_computed: every shard was read and hashed (recorded below); full_hash: and every hash
        # matched one the source published. Only the latter proves the bytes are the source's.
        "hashes_computed": hashed, "full_hash": compared,
        "files": len(files), "bytes": sum(f["size"] for f in files.values()), "shards": files,
    }
    tmp = dest / (VERIFY_MARKER + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, dest / VERIFY_MARKER)  # readers (serve, the k8s init container) never see half a marker
    except OSError as exc:  # a read-only filesystem or mount, no permission, no space
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise _MarkerNotWritten(
            f"the checkpoint passed verification, but its marker {VERIFY_MARKER} cannot be written there "
            f"({exc.strerror}); `serve` preflight and the Kubernetes init container look for it. Verify while "
            "the directory is writable (before mounting it read-only), or serve with --skip-verify; "
            "`verify --check-marker` tells whether a marker already there still holds", str(dest)) from None


def check_marker(dest: Path) -> tuple[bool, str]:
    """The cheap re-check `serve` preflight runs: the marker exists, is this tool's current format, and
    the directory still holds exactly what it recorded (same index and config bytes, every shard present
    with the same size and mtime). Catches a shard truncated, replaced or re-downloaded after verify
    without reading a terabyte; it cannot see a byte flipped in place with the mtime restored (that needs
    `verify --hash`)."""
    marker = dest / VERIFY_MARKER
    rerun = f"run `kimi-deploy verify {dest}`"
    if not marker.is_file():
        return False, f"no verify marker in {dest}: {rerun} (or pass --skip-verify)"
    try:
        data = json.loads(marker.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False, f"{marker} is unreadable: {rerun}"
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT or not isinstance(data.get("shards"), dict):
        return False, f"{marker} does not record what was verified (older kimi-deploy?): {rerun}"
    try:
        index_name = data.get("index")
        if index_name:
            index = dest / str(index_name)
            if not index.is_file():
                return False, f"{index_name} is gone since verification: {rerun}"
            if _sha256_small(index) != data.get("index_sha256"):
                return False, f"{index_name} changed since verification: {rerun}"
            now = set(read_index(index).values())
            if now != set(data["shards"]):
                return False, f"the index names other shards than were verified: {rerun}"
        if (dest / "config.json").is_file() and _sha256_small(dest / "config.json") != data.get("config_sha256"):
            return False, f"config.json changed since verification: {rerun}"
        for shard, rec in sorted(data["shards"].items()):
            if not shard_name_ok(shard) or not isinstance(rec, dict):
                return False, f"{marker} is corrupt: {rerun}"
            path = dest / shard
            if not path.is_file():
                return False, f"{shard} is missing (it was there when verified): {rerun}"
            st = path.stat()
            if st.st_size != rec.get("size"):
                return False, f"{shard} is {st.st_size} bytes, {rec.get('size')} when verified (truncated or replaced): {rerun}"
            if st.st_mtime_ns != rec.get("mtime_ns"):
                return False, f"{shard} was modified after verification (mtime changed): {rerun}"
    except BadInput as exc:
        return False, f"{exc}"
    except OSError as exc:
        return False, f"cannot read the checkpoint ({exc})"
    hashes = ("sha256 matched the source" if data.get("full_hash") else
              "sha256 recorded, not compared" if data.get("hashes_computed") else "headers and sizes")
    return True, f"{len(data['shards'])} shards unchanged since verified {data.get('verified_at')} ({hashes})"


def _catalog_model_for(location: str | None) -> str | None:
    from .catalog import get_model

    if not location:
        return None
    try:
        return get_model(location).id
    except BadInput:
        return None
