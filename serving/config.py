"""Server configuration: which names are served (models, worker pools, graphs, cascades)
and how.

Loaded from YAML or JSON; unknown keys are errors naming the file and the field.

Example (``relaygraph serve --config serve.yaml``)::

    models:
      smollm2-135m: {llm: smollm2-135m}                    # embedded
      big:                                                 # upstream vLLM workers
        workers: [http://10.0.0.2:8000/v1, http://10.0.0.3:8000/v1]
        model: Qwen/Qwen2.5-7B-Instruct
      research-team: {graph: examples/research_team.py:build, model: smollm2-135m}
      routed:                                              # small first, large when unsure
        cascade:
          - {llm: smollm2-135m, estimator: mean_logprob, calibration: cal.json,
             escalation_rate: 0.3}
          - {llm: gemma3-270m}
    security:
      api_keys_env: RELAYGRAPH_API_KEYS                    # comma-separated
      max_concurrency_per_key: 4
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from relaygraph.errors import ConfigError
from relaygraph.fileio import read_model
from relaygraph.llm.registry import EngineOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMEntry(_Strict):
    """A model resolved by the registry: packaged name, GGUF path or ``openai:`` URL."""

    kind: Literal["llm"] = "llm"
    llm: str
    """Registry name of the model."""
    slots: int | None = Field(default=None, ge=1, le=64)
    """Embedded models: sequences decoded together (default 8)."""
    max_waiting: int | None = Field(default=None, ge=1)
    """Embedded models: requests that may wait for a slot before 503s (default 128)."""
    chunk_tokens: int | None = Field(default=None, ge=2, le=512)
    """Embedded models: most tokens one forward pass evaluates (default 512); smaller
    stalls running streams less while a long prompt is prefilled."""

    def engine(self) -> EngineOptions | None:
        """The engine options this entry sets (None: the defaults)."""
        if self.slots is None and self.max_waiting is None and self.chunk_tokens is None:
            return None
        defaults = EngineOptions()
        return EngineOptions(
            slots=self.slots or defaults.slots,
            max_waiting=self.max_waiting or defaults.max_waiting,
            chunk_tokens=self.chunk_tokens or defaults.chunk_tokens,
        )


class WorkerPoolEntry(_Strict):
    """One model on several OpenAI-compatible workers, with failover between them."""

    kind: Literal["workers"] = "workers"
    workers: list[str] = Field(min_length=1)
    """Base URLs of the workers, each ending in /v1."""
    model: str
    """The model's name on the workers."""
    api_key_env: str | None = None
    """Environment variable holding the workers' API key."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Per-request timeout towards a worker."""
    cooldown_s: float = Field(default=30.0, ge=0)
    """How long a failed worker is skipped."""
    max_imbalance: int = Field(default=4, ge=0)
    """How many more requests in flight a conversation's last worker may have than the
    least loaded one before the conversation moves (and loses its prefix cache)."""


class GraphEntry(_Strict):
    """An agent graph served as a model."""

    kind: Literal["graph"] = "graph"
    graph: str
    """Factory spec: path/to/file.py:factory or package.module:factory."""
    model: str | None = None
    """Default model passed to the factory (when it takes one)."""
    memory: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    """A PostgreSQL URL (pgvector) for the graph's shared memory, replacing the factory's:
    replicas pointing at it write and route over one memory, each run in the namespace of
    its thread id. Unset: the factory's memory (or none)."""


class RungEntry(_Strict):
    """One model of a cascade and when its answer stands (the last rung's always does)."""

    llm: str
    """Registry name of the model: packaged name, GGUF path or ``openai:`` URL."""
    estimator: str | None = None
    """Uncertainty estimator (routing.uncertainty.ESTIMATORS); every rung but the last."""
    threshold: float | None = None
    """Escalate when the score is above it; or give a calibration and a target instead."""
    calibration: Path | None = None
    """Calibration JSON from ``relaygraph eval calibrate`` for this model and estimator."""
    escalation_rate: float | None = Field(default=None, ge=0, le=1)
    """With a calibration: escalate this share of the hold-out queries."""
    target_accuracy: float | None = Field(default=None, ge=0, le=1)
    """With a calibration: keep the most answers that still reach this accuracy."""
    fallback_estimator: str | None = None
    """Used, with ``fallback_threshold``, when the model returns no log-probabilities."""
    fallback_threshold: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> RungEntry:
        if self.estimator is None:
            if any(
                v is not None for v in (self.threshold, self.calibration, self.fallback_estimator)
            ):
                raise ValueError("threshold, calibration and fallback need an estimator")
            return self
        if (self.threshold is None) == (self.calibration is None):
            raise ValueError("give exactly one of threshold or calibration")
        targets = (self.escalation_rate, self.target_accuracy)
        if self.calibration is not None and sum(t is not None for t in targets) != 1:
            raise ValueError(
                "a calibration needs exactly one of escalation_rate or target_accuracy"
            )
        if (self.fallback_estimator is None) != (self.fallback_threshold is None):
            raise ValueError("give fallback_estimator and fallback_threshold together")
        return self


class CascadeEntry(_Strict):
    """Small-to-large routing over models: each answers in turn until one is confident."""

    kind: Literal["cascade"] = "cascade"
    cascade: list[RungEntry] = Field(min_length=2)
    """Smallest model first; every rung but the last names an estimator."""

    @model_validator(mode="after")
    def _last_stands(self) -> CascadeEntry:
        if self.cascade[-1].estimator is not None:
            raise ValueError("the last rung's answer always stands: remove its estimator")
        missing = [r.llm for r in self.cascade[:-1] if r.estimator is None]
        if missing:
            raise ValueError(f"rung {missing[0]} needs an estimator (only the last may omit it)")
        return self


_KINDS = ("graph", "workers", "cascade", "llm")


def _entry_kind(data: Any) -> str:
    """Which entry a mapping is, by its telling key (graph, workers, cascade or llm)."""
    if isinstance(data, BaseModel):
        return str(getattr(data, "kind", ""))
    if isinstance(data, dict):
        for key in _KINDS:
            if key in data:
                return key
    return ""


Entry = Annotated[
    Annotated[LLMEntry, Tag("llm")]
    | Annotated[WorkerPoolEntry, Tag("workers")]
    | Annotated[GraphEntry, Tag("graph")]
    | Annotated[CascadeEntry, Tag("cascade")],
    Discriminator(
        _entry_kind,
        custom_error_type="model_entry",
        custom_error_message="a model entry needs one of the keys llm, workers, graph or cascade",
    ),
]


class SecurityConfig(_Strict):
    """Authentication and limits."""

    api_keys: list[str] = Field(default_factory=list)
    """Accepted bearer keys (prefer api_keys_env or api_keys_file)."""
    api_keys_env: str | None = None
    """Environment variable with comma-separated keys."""
    api_keys_file: Path | None = None
    """File with one key per line."""
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    """Larger request bodies are refused with 413."""
    max_tokens_cap: int = Field(default=4096, gt=0)
    """Largest max_tokens a request may ask for."""
    max_concurrency_per_key: int = Field(default=8, gt=0)
    """Requests in flight per key (or per client address without keys); more get 429."""
    request_timeout_s: float = Field(default=300.0, gt=0)
    """A request still running after this is answered 503."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS; empty keeps CORS off."""

    def keys(self) -> set[str]:
        """Every configured key.

        Raises:
            ConfigError: The key file cannot be read.
        """
        keys = set(self.api_keys)
        if self.api_keys_env:
            keys |= {
                k.strip() for k in os.environ.get(self.api_keys_env, "").split(",") if k.strip()
            }
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read api_keys_file {self.api_keys_file}: {exc.strerror}"
                ) from None
            keys |= {line.strip() for line in text.splitlines() if line.strip()}
        return keys


class ServeConfig(_Strict):
    """Everything ``relaygraph serve`` serves, and how."""

    models: dict[str, Entry] = Field(min_length=1)
    """Served name to what answers it."""
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    """Keys and limits."""
    database: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    """A PostgreSQL URL that replicas share: graph runs are checkpointed there (resumable
    from any replica by thread id) and traces written there (``GET /v1/traces/{id}`` on
    any replica finds them). Unset: runs are not persisted and traces stay on this one."""
    trace_dir: Path | None = None
    """Where graph traces are also written as JSON (they are always kept in memory)."""
    max_traces: int = Field(default=1000, gt=0)
    """Traces kept in memory for GET /v1/traces/{id}."""
    ui: list[Path] = Field(default_factory=list)
    """Run folders and trace files the viewer at /ui shows, behind the API keys (empty:
    no viewer; ``relaygraph serve --ui PATH`` adds to it)."""


def load_config(path: str | Path) -> ServeConfig:
    """Read a YAML or JSON server config.

    Raises:
        ConfigError: Unreadable file, bad syntax, or a field that fails validation
            (the message names the file and the field).
    """
    file = Path(path)
    if file.suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(
            f"server config {file}: give a .yaml, .yml or .json file", parameter="config"
        )
    return read_model(ServeConfig, file, what="server config", parameter="config")
