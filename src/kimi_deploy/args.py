"""Typed arguments of a command: one frozen pydantic model per command (BenchConfig for `bench`,
CompareConfig for `compare`, both here so the CLI can map onto them without importing either package)
holds every default and every range once. The CLI maps its options onto the model (each
option defaults to None, "not given", so the model's default applies; cli/_args.py writes the default and
range into the option's help from here), and library callers build the same model, so both get the same
checks. A bad value is BadInput naming the field's flag (exit 2)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, get_args

import annotated_types
from annotated_types import Gt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .endpoint import KIND_CHOICES, MOONSHOT_URL, Effort, Endpoint
from .errors import BadInput

A = TypeVar("A", bound="Args")


@dataclass(frozen=True)
class Flag:
    """The command-line flag of a field (`Annotated[T, Flag("--rate"), Field(gt=0)]`): what an error about
    the field names."""

    name: str


class Args(BaseModel):
    """Base of the command models: keyword-only, frozen, no unknown field, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    @classmethod
    def flag(cls, name: str) -> str:
        """The flag of field `name` (its name when it has none)."""
        return next((m.name for m in cls.model_fields[name].metadata if isinstance(m, Flag)), name)

    @classmethod
    def build(cls: type[A], **given: Any) -> A:
        """The model from what was given (None: not given, the default applies); a bad value is BadInput
        naming its flag."""
        return cls._validated({k: v for k, v in given.items() if v is not None})

    @classmethod
    def _validated(cls: type[A], values: dict[str, Any]) -> A:
        """Validators raise BadInput themselves for rules across fields; a value out of its type or range
        is turned into one here."""
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else ""
            flag = cls.flag(name) if name in cls.model_fields else name or None
            got = "" if err["type"] == "missing" else f", got {err['input']!r}"
            raise BadInput(f"{err['msg']}{got}", flag) from None

    def replace(self: A, **changes: Any) -> A:
        """A copy with `changes` (None included: a field set to None), validated like the original."""
        return self._validated({**{k: getattr(self, k) for k in self.model_fields_set}, **changes})


Workload = Literal["random", "jsonl", "tool-calls", "shared-prefix", "multi-turn", "trace"]
WORKLOAD_NAMES = get_args(Workload)
MAX_USERS = 100_000  # each user is a coroutine holding a connection; more is a typo, not a load test
MAX_SHARDS = 4096  # client machines of one run
DEFAULT_REQUESTS = 100  # measured requests when not given, except a trace's (every row)
SLO_NAMES = ("ttft_ms", "ttfat_ms", "tpot_ms", "itl_ms", "e2e_ms")  # goodput bounds (bench/metrics.py)
TRACE_OWN = ("input_len", "output_len", "prefix_len", "burstiness", "ramp_up_s")  # what a trace brings itself
Positive = Gt(0)


class BenchConfig(Args):
    """Everything one benchmark run needs, each default and range once (the CLI maps its options onto
    it: args.py); summary.json records it (`facts`), the key excepted."""

    endpoint: Annotated[Endpoint, Flag("--base-url")]
    model: Annotated[str, Flag("--model")]
    output: Annotated[Path, Flag("--output")]
    # False: an --output that holds a previous run's results is refused rather than replaced
    overwrite: Annotated[bool, Flag("--overwrite")] = False
    workload: Annotated[Workload, Flag("--workload")] = "random"
    # None: DEFAULT_REQUESTS, or every row of a trace (the trace workload only)
    num_requests: Annotated[Optional[int], Flag("--num-requests"), Field(ge=1)] = None
    duration_s: Annotated[Optional[float], Flag("--duration"), Positive] = None
    warmup: Annotated[int, Flag("--warmup"), Field(ge=0)] = 0
    concurrency: Annotated[Optional[int], Flag("--concurrency"), Field(ge=1, le=MAX_USERS)] = None
    rate: Annotated[Optional[float], Flag("--rate"), Field(gt=0, le=1e6)] = None
    burstiness: Annotated[float, Flag("--burstiness"), Field(gt=0, le=1e6)] = 1.0
    ramp_up_s: Annotated[float, Flag("--ramp-up"), Field(ge=0)] = 0.0
    max_concurrency: Annotated[Optional[int], Flag("--max-concurrency"), Field(ge=1, le=MAX_USERS)] = None
    input_len: Annotated[int, Flag("--input-len"), Field(ge=1)] = 256
    output_len: Annotated[int, Flag("--output-len"), Field(ge=1)] = 128
    dataset: Annotated[Optional[str], Flag("--dataset")] = None
    prefix_len: Annotated[int, Flag("--prefix-len"), Field(ge=1)] = 512
    prefix_groups: Annotated[int, Field(ge=1)] = 4  # no flag: library callers only
    thinking: Annotated[Optional[bool], Flag("--thinking")] = None  # None: the server's default
    # the effort thinking runs at (endpoint.thinking_fields); None: the model's default
    thinking_effort: Annotated[Optional[Effort], Flag("--thinking-effort")] = None
    slo: Annotated[dict[str, Annotated[float, Positive]], Flag("--slo")] = {}
    workers: Annotated[int, Flag("--workers"), Field(ge=0, le=256)] = 0  # 0: one per core
    request_timeout_s: Annotated[float, Flag("--request-timeout"), Positive] = 3600.0
    stall_timeout_s: Annotated[float, Flag("--stall-timeout"), Positive] = 300.0
    seed: Annotated[int, Flag("--seed")] = 0
    time_scale: Annotated[float, Flag("--time-scale"), Positive] = 1.0  # trace: send times = timestamps x this
    # Sharded runs (bench/shard.py): this process runs shard I of N of one schedule whose --concurrency,
    # --rate and --num-requests are the whole run's totals; all shards start together at --start-at (a
    # wall-clock time) or when N shards are ready in the --barrier directory they share.
    shard: Annotated[Optional[tuple[int, int]], Flag("--shard")] = None  # (index, count); None: the whole run
    start_at: Annotated[Optional[float], Flag("--start-at")] = None  # seconds since the epoch
    barrier: Annotated[Optional[Path], Flag("--barrier")] = None
    barrier_timeout_s: Annotated[float, Flag("--barrier-timeout"), Positive, Field(le=86_400)] = 600.0

    @field_validator("slo", mode="before")
    @classmethod
    def _slo_text(cls, value: Any) -> Any:
        """`--slo ttft_ms=500,tpot_ms=50`: NAME=MILLISECONDS pairs, NAME among SLO_NAMES."""
        if not isinstance(value, str):
            return value
        out = {}
        for part in filter(None, value.split(",")):
            name, _, number = part.partition("=")
            name = name.strip()
            if name not in SLO_NAMES:
                raise BadInput(f"unknown SLO {name!r}; allowed: {', '.join(SLO_NAMES)}", "--slo")
            try:
                out[name] = float(number)
            except ValueError:
                raise BadInput(f"{part!r} is not NAME=MILLISECONDS", "--slo") from None
        return out

    @field_validator("shard", mode="before")
    @classmethod
    def _shard_text(cls, value: Any) -> Any:
        """`--shard I/N`: shard I (0-based) of N."""
        if not isinstance(value, str):
            return value
        index, sep, count = value.partition("/")
        try:
            i, n = int(index), int(count)
        except ValueError:
            raise BadInput(f"{value!r} is not I/N (shard I of N, 0-based, e.g. 0/4)", "--shard") from None
        if not sep or n < 1 or n > MAX_SHARDS or not 0 <= i < n:
            raise BadInput(f"{value!r}: I/N needs 1 <= N <= {MAX_SHARDS} and 0 <= I < N", "--shard")
        return (i, n)

    @field_validator("start_at", mode="before")
    @classmethod
    def _start_at_text(cls, value: Any) -> Any:
        """`--start-at`: seconds since the epoch, or an ISO 8601 time with its UTC offset."""
        if not isinstance(value, str):
            return value
        try:
            return float(value)
        except ValueError:
            pass
        from datetime import datetime

        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise BadInput(f"{value!r} is neither seconds since the epoch nor an ISO 8601 time "
                           "(e.g. 2026-12-06T22:30:00Z)", "--start-at") from None
        if when.tzinfo is None:
            raise BadInput(f"{value!r} has no UTC offset: shards on several machines must agree on the time "
                           "(add Z or +HH:MM)", "--start-at")
        return when.timestamp()

    @model_validator(mode="before")
    @classmethod
    def _default_requests(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("num_requests") is None and data.get("workload") != "trace":
            data = {**data, "num_requests": DEFAULT_REQUESTS}
        return data

    @model_validator(mode="after")
    def _load_mode(self) -> BenchConfig:
        """The rules across fields: one load mode, and none besides a trace's own."""
        if self.workload == "trace":
            for name in ("concurrency", "rate"):
                if getattr(self, name) is not None:
                    raise BadInput("the trace workload sends each request at its trace timestamp (x --time-scale): "
                                   f"drop {self.flag(name)}", self.flag(name))
            for name in TRACE_OWN:
                if name in self.model_fields_set:
                    raise BadInput("the trace gives each request's send time and lengths: drop " + self.flag(name),
                                   self.flag(name))
        elif self.concurrency is None and self.rate is None:
            raise BadInput("give --concurrency N (closed loop) or --rate R (open loop)", "--concurrency")
        elif self.time_scale != 1.0:
            raise BadInput("only the trace workload has a time scale", "--time-scale")
        if self.concurrency is not None and self.rate is not None:
            raise BadInput("--concurrency and --rate are two load modes: give one (cap an open loop with "
                           "--max-concurrency)", "--rate")
        if self.thinking is False and self.thinking_effort is not None:
            raise BadInput("an effort is how hard thinking works: drop --thinking off", "--thinking-effort")
        if self.start_at is not None and self.barrier is not None:
            raise BadInput("--start-at and --barrier are two ways to start together: give one", "--barrier")
        if self.shard is None:
            if self.barrier is not None:
                raise BadInput("a barrier waits for the shards of a run: give --shard I/N", "--barrier")
            return self
        count = self.shard[1]
        if count > 1 and self.barrier is None and self.start_at is None:
            raise BadInput("the shards of a run start together: give --barrier DIR (a directory all of them can "
                           "write) or --start-at TIME", "--shard")
        for name in ("concurrency", "num_requests", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and value < count and self.workload != "trace":
                raise BadInput(f"{self.flag(name)} {value} is the whole run's total: fewer than {count} shards "
                               "would leave a shard with nothing to do", "--shard")
        return self

    def facts(self) -> dict[str, Any]:
        """The configuration as summary.json records it: the endpoint's URL, kind and key variable
        (never the key), and every other field as given."""
        out: dict[str, Any] = {"base_url": self.endpoint.v1, "hosted": self.endpoint.hosted,
                               "api_key_env": self.endpoint.api_key_env}
        for name in type(self).model_fields:
            if name != "endpoint":
                value = getattr(self, name)
                out[name] = str(value) if isinstance(value, Path) else value
        return out


class CompareConfig(Args):
    """One comparison, each default and range once (the CLI maps its options onto it): the local endpoint
    and its served model, and either a live reference endpoint or a recording of one (`reference_file`).
    The endpoints are URLs and key variables here, made into Endpoints when first used (`local_endpoint`,
    `reference_endpoint`), after every value here has been checked and the result directory made."""

    local: Annotated[str, Flag("--local")]
    output: Annotated[Path, Flag("--output")]
    local_key_env: Annotated[Optional[str], Flag("--local-key-env")] = None
    model: Annotated[Optional[str], Flag("--model")] = None  # None: the one the local endpoint serves
    suite: Annotated[str, Flag("--suite")] = "tool-calls"
    reference: Annotated[Optional[str], Flag("--reference")] = None  # None: Moonshot's API, unless a recording
    reference_kind: Annotated[Literal[KIND_CHOICES], Flag("--reference-kind")] = "auto"
    reference_key_env: Annotated[str, Flag("--reference-key-env")] = "MOONSHOT_API_KEY"
    reference_file: Annotated[Optional[Path], Flag("--reference-file")] = None
    # None: the local model, mapped to the hosted id if hosted
    reference_model: Annotated[Optional[str], Flag("--reference-model")] = None
    # per endpoint; enough requests in flight to batch on a real server
    concurrency: Annotated[int, Flag("--concurrency"), Field(ge=1, le=10_000)] = 32
    # failing rows rerun one at a time to tell load-dependent failures: at most this many (a broken stream
    # parser fails most rows, and hundreds of one-at-a-time reruns would take longer than the run itself)
    rerun_limit: Annotated[int, Flag("--rerun-limit"), Field(ge=0, le=100_000)] = 32
    stream: Annotated[bool, Flag("--stream")] = True  # also stream every request to the local endpoint
    # checkpoint dir / Hub id for the template count (None: the served root)
    tokenizer: Annotated[Optional[str], Flag("--tokenizer")] = None
    # catalog model for the sampling pre-flight (None: from the served name)
    catalog_model: Annotated[Optional[str], Flag("--catalog-model")] = None
    preflight: Annotated[bool, Flag("--preflight")] = True
    rate: Annotated[Optional[float], Flag("--rate"), Field(gt=0, le=1e6)] = None
    temperature: Annotated[float, Flag("--temperature"), Field(ge=0, le=2)] = 0.0
    # the effort of every row that thinks and names none itself; None: the model's default
    thinking_effort: Annotated[Optional[Effort], Flag("--thinking-effort")] = None
    max_tokens: Annotated[Optional[int], Flag("--max-tokens"), Field(ge=1)] = None
    limit: Annotated[Optional[int], Flag("--limit"), Field(ge=1)] = None
    # overrides of the default bounds (compare.thresholds_for names the known ones)
    thresholds: Annotated[dict[str, float], Flag("--threshold")] = {}
    request_timeout_s: Annotated[float, Flag("--request-timeout"), Positive] = 1200.0  # retries included
    stall_timeout_s: Annotated[float, Flag("--stall-timeout"), Positive] = 600.0  # one attempt, no byte

    @field_validator("thresholds", mode="before")
    @classmethod
    def _threshold_items(cls, value: Any) -> Any:
        """`--threshold NAME=NUMBER`, repeated."""
        if not isinstance(value, (list, tuple)):
            return value
        out = {}
        for item in value:
            name, _, number = item.partition("=")
            try:
                out[name.strip()] = float(number)
            except ValueError:
                raise BadInput(f"{item!r} is not NAME=NUMBER", "--threshold") from None
        return out

    @model_validator(mode="after")
    def _one_reference(self) -> CompareConfig:
        if self.reference is not None and self.reference_file is not None:
            raise BadInput("give --reference or --reference-file, not both", "--reference-file")
        return self

    @cached_property
    def local_endpoint(self) -> Endpoint:
        return Endpoint.from_url(self.local, flag="--local", kind="self-hosted", api_key_env=self.local_key_env,
                                 key_flag="--local-key-env")

    @cached_property
    def reference_endpoint(self) -> Endpoint | None:
        """None when the reference is a recording. A self-hosted reference may have no key; Moonshot's API
        needs one."""
        if self.reference_file is not None:
            return None
        return Endpoint.from_url(self.reference or MOONSHOT_URL, flag="--reference", kind=self.reference_kind,
                                 api_key_env=self.reference_key_env, key_flag="--reference-key-env",
                                 key_optional=True)


def bounds(model: type[Args], name: str) -> str:
    """The range of field `name` as the help text shows it ("> 0, <= 1000000"); "" when unbounded."""
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for m in model.model_fields[name].metadata:
        for attr, op in ops.items():
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                value = getattr(m, attr)
                parts.append(f"{op} {int(value) if float(value).is_integer() else value}")
    return ", ".join(parts)
