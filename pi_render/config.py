"""Settings: a pydantic model from a TOML file plus PI_RENDER_* overrides; no file needed."""

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pi_render.api.access import Roles
from pi_render.controls import Capabilities, Limit, Requirements
from pi_render.cron.schedule import CronJob
from pi_render.data_dir import DataDir
from pi_render.errors import ConfigError
from pi_render.hooks.outbox import Hook
from pi_render.locations import default_data_dir, default_socket
from pi_render.retry import RetryPolicy
from pi_render.workflows import Workflow

# AF_UNIX paths are limited to 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class WatchSettings(BaseModel):
    """`[watch]`: a folder whose .blend and .zip files are rendered with their own settings."""

    model_config = ConfigDict(extra="forbid")

    inbox: Path | None = None
    schedule: str = "*/5 * * * * *"  # every 5 seconds
    settle_s: float = Field(2.0, ge=0, description="unchanged this long = finished copying")


class FarmSettings(BaseModel):
    """`[farm]`: this daemon is one peer of several sharing a PostgreSQL database and a folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(description="libpq URI; no password in it (password_file, ~/.pgpass)")
    password_file: Path | None = Field(None, description="a file holding the password")
    shared_dir: Path = Field(description="the same folder on every host: snapshots, outputs")
    host_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    tags: list[str] = Field(default_factory=list, description="what this host offers (gpu…)")
    lease_s: float = Field(60.0, gt=0, description="a claimed task's lease; heartbeats renew it")
    host_timeout_s: float = Field(60.0, gt=0, description="silent this long = offline")
    max_hosts_per_chunk: int = Field(3, ge=1, description="a chunk failing on this many fails")
    blocklist_after: int = Field(3, ge=1, description="chunks of one job a host may fail")
    path_map: dict[str, str] = Field(
        default_factory=dict, description="farm path → this host's path, for other mounts"
    )
    pool_size: int = Field(8, ge=2, le=64, description="database connections of this daemon")

    @field_validator("database")
    @classmethod
    def _no_password_inside(cls, value: str) -> str:
        """libpq's own parser decides (a URI's `user:pw@`, `?password=`, `password = x`)."""
        try:
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise ValueError("farm mode needs psycopg: pip install 'pi-render[farm]'") from None
        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:  # psycopg's ProgrammingError: not a connection string
            raise ValueError(f"not a libpq connection string or URI: {exc}") from None
        if parts.get("password"):
            raise ValueError("put the password in password_file (or ~/.pgpass), not in the URI: "
                             "the config is readable and URIs end up in logs")  # fmt: skip
        return value

    @field_validator("host_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"host name {value!r} may use letters, digits, '.', '-' and '_'")
        return value

    def password(self) -> str | None:
        """Read from `password_file`, which only its owner may read (as ~/.pgpass must be)."""
        if self.password_file is None:
            return None
        try:
            if self.password_file.stat().st_mode & 0o077:
                raise ConfigError(f"farm.password_file {self.password_file} is readable by "
                                  "others: chmod 0600 it")  # fmt: skip
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"farm.password_file: cannot read {self.password_file}: "
                              f"{exc.strerror}") from None  # fmt: skip


class BlenderEntry(BaseModel):
    """`[[blenders]]`: one more Blender this host has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str


class Settings(BaseModel):
    """Everything the daemon can be told; unknown keys are refused so typos do not pass silently.
    Frozen: a reload builds a new one and swaps it in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path
    socket: Path
    workers: dict[str, int] = Field(
        default_factory=lambda: {"default": 2, "render": 1},
        description="worker threads per routing label",
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="how long running tasks may finish")
    prune_acked_every: int = Field(500, ge=1, description="acks between prunes of acked rows")
    task_modules: list[str] = Field(
        default_factory=list, description="extra modules to import for their task types"
    )
    blender: str | None = Field(None, description="Blender executable; else PATH, else bpy")
    blenders: list[BlenderEntry] = Field(
        default_factory=list,
        description="more Blenders ([[blenders]] path = an executable or a python with bpy): "
        "each file renders on the oldest that opens it",
    )
    source_roots: list[Path] = Field(
        default_factory=lambda: [Path("/")], description="where render sources may be"
    )
    output_roots: list[Path] = Field(
        default_factory=lambda: [Path("/")], description="where outputs may be written"
    )
    max_request_bytes: int = Field(1 << 20, ge=1024, description="largest request body")
    max_args_bytes: int = Field(
        64 << 10, ge=1024, description="largest arguments one task may carry (kept with its record)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this (slowloris)"
    )
    max_connections_per_uid: int = Field(
        64, ge=1, description="open socket connections one uid may hold (root is exempt)"
    )
    min_free_bytes: int = Field(64 << 20, ge=0, description="refuse work below this free space")
    roles: Roles = Field(default_factory=Roles, description="who may do what on the socket")
    socket_group: str | None = Field(
        None,
        description="group given the socket (name or number): its members may connect; "
        "keep it apart from the daemon's own group, which owns the data dir",
    )
    quota_bytes_per_uid: int | None = Field(
        20 << 30,
        ge=1,
        description="bytes of records, snapshots and uploads one uid may keep, "
        "finished tasks included (root and the daemon's user exempt; none: no quota)",
    )
    max_queued_per_uid: int | None = Field(
        None,
        ge=1,
        description="waiting+running tasks one uid may have (root and the "
        "daemon's user are exempt)",
    )
    blender_env_keep: list[str] = Field(
        default_factory=lambda: ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                                 "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OCIO"],
        description="the only environment variables Blender inherits",
    )  # fmt: skip
    output_root: Path | None = Field(None, description="default parent of render outputs")
    render_threads: int = Field(0, ge=0, description="Blender -t; 0 = all cores")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="where Cycles renders: auto (a GPU when Blender sees one), cpu, gpu"
    )
    gpu_fallback: Literal["cpu", "none"] = Field(
        "cpu", description="after a GPU failure (out of memory, driver), retry on the CPU"
    )
    gpu_per_worker: bool = Field(
        False, description="[workers] gpu_per_worker: one render worker per GPU, each its own"
    )
    render_timeout_s: float | None = Field(
        86400.0, gt=0, description="default render time limit (none: no limit)"
    )
    max_pause_s: float = Field(
        86400.0, gt=0, description="a render paused longer than this is stopped (frees its worker)"
    )
    render_stall_timeout_s: float = Field(600.0, gt=0, description="hang watchdog")
    render_stop_grace_s: float = Field(10.0, ge=0, description="SIGTERM → SIGKILL grace")
    allow_blend_scripts: bool = Field(False, description="let scripts in .blend files run")
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        "auto", description="shut Blender in with bubblewrap: auto (if it works), bwrap, none"
    )
    render_user: str = Field(
        "nobody", description="who Blender runs as, inside the sandbox, when the daemon is root"
    )
    allow_missing: bool = Field(
        False, description="render even when files a .blend needs are missing (as warnings)"
    )
    max_snapshot_bytes: int = Field(
        64 << 30, gt=0, description="the most bytes of files one render's snapshot may hold"
    )
    timeouts: dict[str, float] = Field(
        default_factory=dict, description="maximum runtime per task type, seconds"
    )
    heartbeat_s: float = Field(5.0, gt=0, description="how often running tasks show they live")
    retry: dict[str, RetryPolicy] = Field(
        default_factory=lambda: {"default": RetryPolicy()},
        description="retry policy per task type; `default` for the rest",
    )
    cron: list[CronJob] = Field(default_factory=list, description="[[cron]] jobs")
    hooks: list[Hook] = Field(default_factory=list, description="[[hooks]]: completion hooks")
    workflows: list[Workflow] = Field(default_factory=list, description="[[workflows]]")
    notify_command: list[str] | None = Field(None, description="what the notify step runs")
    limits: dict[str, Limit] = Field(default_factory=dict, description="caps per task type")
    capabilities: dict[str, Capabilities] = Field(
        default_factory=dict, description="what each label's pool offers"
    )
    requires: dict[str, Requirements] = Field(
        default_factory=dict, description="what each task type needs"
    )
    maintenance_schedule: str = Field("17 * * * *", description="queue pruning and VACUUM")
    retention_schedule: str = Field("43 3 * * *", description="pruning of old records")
    retention_days: float = Field(30.0, gt=0, description="keep finished records this long")
    retention_outputs: bool = Field(False, description="also delete the outputs of old renders")
    watch: WatchSettings = Field(default_factory=lambda: WatchSettings())
    farm: FarmSettings | None = Field(None, description="[farm]: share work with other hosts")
    chunk_size: int = Field(
        0, ge=0, description="frames per chunk of a render job (0: the whole range as one task)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="before")
    @classmethod
    def _gpu_per_worker_under_workers(cls, raw: object) -> object:
        """`[workers] gpu_per_worker = true` sits with the counts it replaces for `render`."""
        if isinstance(raw, dict) and isinstance(raw.get("workers"), dict):
            workers = dict(raw["workers"])
            if "gpu_per_worker" in workers:
                raw = {**raw, "workers": workers, "gpu_per_worker": workers.pop("gpu_per_worker")}
        return raw

    @field_validator("workers")
    @classmethod
    def _counts_are_sane(cls, value: dict[str, int]) -> dict[str, int]:
        for label, count in value.items():
            if not label.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"label {label!r} may use letters, digits, '-' and '_' only")
            if not 0 <= count <= 64:
                raise ValueError(f"worker count for {label!r} must be between 0 and 64")
        return value

    @field_validator("socket")
    @classmethod
    def _socket_fits(cls, value: Path) -> Path:
        if len(os.fsencode(str(value))) > MAX_SOCKET_PATH:
            raise ValueError(f"socket path is longer than {MAX_SOCKET_PATH} bytes: {value}")
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> "Settings":
        if self.farm is not None and self.farm.lease_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"farm.lease_s ({self.farm.lease_s:g}) must be at least twice "
                f"heartbeat_s ({self.heartbeat_s:g}): a heartbeat renews the lease"
            )
        return self

    @property
    def paths(self) -> DataDir:
        """Every path under the data dir."""
        return DataDir(self.data_dir, self.farm.shared_dir if self.farm is not None else None)

    @property
    def outputs(self) -> Path:
        return self.output_root or self.paths.output


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"  key '{key}': {err['msg']}")
    return "\n".join(lines)


def load_settings(
    config_file: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from the file (`--config` or PI_RENDER_CONFIG), then env overrides.

    Raises:
        ConfigError: naming the file, the key and the reason.
    """
    env = os.environ if env is None else env
    if config_file is None and env.get("PI_RENDER_CONFIG"):
        config_file = Path(env["PI_RENDER_CONFIG"])
    raw: dict[str, object] = {}
    source = "the defaults"
    if config_file is not None:
        source = str(config_file)
        try:
            raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config_file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}") from None
    if env.get("PI_RENDER_DATA_DIR"):
        raw["data_dir"] = env["PI_RENDER_DATA_DIR"]
    if env.get("PI_RENDER_SOCKET"):
        raw["socket"] = env["PI_RENDER_SOCKET"]
    if env.get("PI_RENDER_SOCKET_GROUP"):
        raw["socket_group"] = env["PI_RENDER_SOCKET_GROUP"]
    data_dir = Path(str(raw.get("data_dir") or default_data_dir(env))).expanduser().absolute()
    raw["data_dir"] = data_dir
    raw.setdefault("socket", default_socket(env, data_dir))
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
