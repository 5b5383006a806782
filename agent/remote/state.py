"""What the gateway remembers about its configuration, in ``<state_dir>/config/``.

Files (each written atomically: temp file, fsync, rename, fsync of the directory, so a power cut leaves
either the old or the new file, never a torn one):

* ``good.toml``: the last-known-good configuration text, i.e. the one that passed its health window.
* ``state.json``: ``{"source": "local"|"remote", "version": N, "highest_version": N, "local_sha256": hex,
  "push": id, "kid": str, "applied_ms": ms, "last_seen_push": id}``. ``version`` is the running remote
  version (0 for a local file); ``last_seen_push`` names the last push handled, so a retained or
  redelivered copy of it is ignored; ``bad_local_sha256`` is a local edit that failed its health window
  (it does not start at boot either, until the file changes again);
  ``highest_version`` is the highest push version ever tried (applied or rolled back), which a new
  push must exceed; ``local_sha256`` is the technician's file as it was when ``good.toml`` was accepted.
* ``staged.toml`` + ``staged.json``: the configuration being tried. They exist only between "staged" and its
  outcome; finding them at start-up means the agent stopped during an apply or health window, so that
  attempt counts as rolled back and is reported as such.
* ``history.json``: the last outcomes (``remote_config.history`` of them), newest last.

**Precedence** between the technician's file and a remote push: a remotely applied configuration stays in
force, across restarts, until the technician's file changes (its SHA-256 differs from ``local_sha256``);
then the file wins and goes through the same validation, apply and health window. So a technician on site
always has the last word by editing the file, and a reboot never silently undoes a remote push.
"""

from __future__ import annotations

__all__ = ["ConfigState", "StateFiles", "sha256_text", "state_dir_of", "write_atomic"]

import contextlib
import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_dir_of(path: Path) -> Path:
    """``[gateway] state_dir`` of a configuration file read leniently (it may be an edit that does not
    validate); the default state directory when the file does not say."""
    from config.schema import GatewayConfig

    try:
        value = tomllib.loads(path.read_text(encoding="utf-8")).get("gateway", {}).get("state_dir")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        value = None
    return Path(value) if isinstance(value, str) else GatewayConfig.model_fields["state_dir"].default


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash or power cut leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class ConfigState:
    source: str = "local"
    version: int = 0
    highest_version: int = 0
    local_sha256: str | None = None
    push: str | None = None
    kid: str | None = None
    applied_ms: int | None = None
    last_seen_push: str | None = None
    bad_local_sha256: str | None = None


class StateFiles:
    """The files above, for one state directory. Synchronous and small: called from the event loop only
    around a configuration change, never per sample."""

    def __init__(self, state_dir: Path, *, history_limit: int = 200) -> None:
        self.dir = state_dir / "config"
        self.history_limit = history_limit
        self.good_path = self.dir / "good.toml"
        self.state_path = self.dir / "state.json"
        self.staged_path = self.dir / "staged.toml"
        self.staged_meta_path = self.dir / "staged.json"
        self.history_path = self.dir / "history.json"

    # -- state -------------------------------------------------------------------------------------------

    def load_state(self) -> ConfigState:
        data = self._read_json(self.state_path)
        if not isinstance(data, dict):
            return ConfigState()
        # Each field must have its type: a hand-edited or damaged file must not make a later comparison
        # (e.g. a push's version against highest_version) raise instead of refusing.
        defaults = ConfigState()
        known: dict[str, Any] = {}
        for name in ConfigState.__dataclass_fields__:
            value, default = data.get(name), getattr(defaults, name)
            if isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
            elif name == "source":
                ok = value in ("local", "remote")
            elif name == "applied_ms":
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = value is None or isinstance(value, str)
            if name in data and not ok:
                log.error("config_state_unreadable", path=str(self.state_path), error=f"{name}: {value!r:.40}")
            known[name] = value if ok and name in data else default
        return ConfigState(**known)

    def good_text(self) -> str | None:
        try:
            return self.good_path.read_text(encoding="utf-8")
        except OSError:
            return None

    def accept(self, text: str, state: ConfigState) -> None:
        """Make ``text`` the last-known-good configuration (text first: state.json never names a missing one)."""
        write_atomic(self.good_path, text.encode("utf-8"), 0o600)
        self.save_state(state)

    def save_state(self, state: ConfigState) -> None:
        data = asdict(state)
        write_atomic(self.state_path, (json.dumps(data, indent=1) + "\n").encode())

    # -- staging -----------------------------------------------------------------------------------------

    def stage(self, text: str, meta: dict[str, Any]) -> None:
        write_atomic(self.staged_path, text.encode("utf-8"), 0o600)
        write_atomic(self.staged_meta_path, (json.dumps(meta) + "\n").encode())

    def staged(self) -> dict[str, Any] | None:
        """The metadata of an attempt interrupted by a stop or crash, if any."""
        data = self._read_json(self.staged_meta_path)
        return data if isinstance(data, dict) else None

    def unstage(self) -> None:
        for path in (self.staged_meta_path, self.staged_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self.dir.exists():
            _fsync_dir(self.dir)

    # -- history -----------------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        data = self._read_json(self.history_path)
        return data if isinstance(data, list) else []

    def record(self, outcome: dict[str, Any]) -> None:
        entries = [*self.history(), outcome][-self.history_limit:]
        write_atomic(self.history_path, (json.dumps(entries, indent=1) + "\n").encode())

    # ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # A damaged state file is set aside, not trusted and not deleted.
            log.error("config_state_unreadable", path=str(path), error=str(exc))
            with contextlib.suppress(OSError):
                path.rename(path.with_suffix(path.suffix + ".bad"))
            return None
