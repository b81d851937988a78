"""Generic machinery for typed dataclass configs: build from dicts/YAML, overrides, dumping.

Every stage's config is a plain ``@dataclass`` whose fields carry a default and a docstring
comment. This module turns nested dicts (from YAML) into those dataclasses with type checks,
so a typo in a YAML key or a wrong type is a clear error naming the dotted key.
"""
from __future__ import annotations

import dataclasses
import errno
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

from raygen.configyaml import YamlProblem, load_bounded


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the offending key."""


MAX_CONFIG_BYTES = 16 * 2 ** 20
"""Config files larger than this are refused unread (a real one is a few KiB)."""
def os_error_text(e: OSError) -> str:
    """An OSError as one line: the file(s), then what went wrong (ELOOP says 'symlink loop')."""
    if e.errno == errno.ELOOP:
        reason = "symlink loop (a symbolic link that leads back to itself)"
    else:
        reason = e.strerror or str(e) or type(e).__name__
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{files}: {reason}" if files else reason


_CHECKS: dict[type, list[Callable[[Any, str], None]]] = {}


def check_bf16(value: Any, key: str) -> None:
    """ConfigError unless ``value`` is 'auto', True or False (the ``bf16`` settings; resolved by
    ``raygen.precision``, which imports torch: this check does not)."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ConfigError(f"{key}: {value!r} is not one of 'auto', true, false")


def register_check(cls: type, check: Callable[[Any, str], None]) -> None:
    """Run ``check(obj, dotted_prefix)`` on every ``cls`` that :func:`from_dict` builds, before the
    class's own ``validate()``: checks that cannot live in the class (its module belongs to a stage, or
    they span modules). ``check`` raises ConfigError naming the dotted key."""
    _CHECKS.setdefault(cls, []).append(check)


def _describe(tp: Any) -> str:
    """A type as a config author reads it: Literal['a', 'b'] -> 'a' | 'b', bool -> true/false."""
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true/false"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:  # try the next member of the union
                errors.append(str(e))
        allowed = " | ".join(_describe(a) for a in args)
        raise ConfigError(f"{key}: {value!r} does not match {allowed}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '3e-4' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


@dataclasses.dataclass
class Resources:
    """What a group of Ray actors, Train workers or Tune trials asks of the cluster: how many run at once
    and what each one reserves. Every section that starts such a group has one of these blocks
    (``corpus.embed_resources``, ``corpus.keyword_resources``, ``eval.resources``, ``rl.rollout_resources``,
    ``rl.learner_resources``, ``align.resources``, ``sft.resources``, ``sweep.trial_resources``); the
    section's field doc says what a count or cpus of 0 means there and its own bounds. A block given in
    part keeps the section's defaults for the rest."""

    count: int = 1
    """How many run at once: actors of a pool, data-parallel workers, concurrent trials."""
    cpus: float = 1.0
    """CPUs each one reserves in Ray (a fraction shares a CPU)."""
    gpus: float = 0.0
    """GPUs each one reserves (a fraction shares a GPU; 0 = CPU only)."""

    def validate(self) -> None:
        for name in ("count", "cpus", "gpus"):  # finiteness: from_dict's float coercion
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_dict(cls: type, data: dict, prefix: str = "", base: Any = None) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    Fields ``data`` leaves out come from ``base`` (an instance of ``cls``) when given, else from the class
    defaults; a nested dataclass field given as a mapping starts from the field's own default, so a
    partial block (``eval.resources: {count: 2}``) keeps what the section sets for the other keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    unknown = set(data) - names
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s) {sorted(where + u for u in unknown)}; "
            f"valid keys of {cls.__name__}: {sorted(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            default = _field_default(fields[name])
            kwargs[name] = from_dict(tp, value, prefix=key, base=default if isinstance(default, tp) else None)
        else:
            kwargs[name] = _coerce(value, tp, key)
    obj = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    for check in _CHECKS.get(cls, ()):
        check(obj, prefix)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ConfigError as e:
            raise ConfigError(_with_prefix(str(e), prefix, names)) from None
        except (ValueError, TypeError, KeyError) as e:  # a validate() tripping over a value it did not expect
            raise ConfigError(f"{prefix or cls.__name__}: invalid value(s): {type(e).__name__}: {e}") from None
    return obj


_GENERIC_PREFIX = re.compile(r"^[a-z ]*config: ")


def _with_prefix(msg: str, prefix: str, names: set[str]) -> str:
    """A validate() message with the section's dotted key in front when it lacks it: a class shared by
    two sections (align and sft are both TrainConfig) says 'train config: lr must be > 0', which
    becomes 'align.lr must be > 0'."""
    if not prefix or msg.startswith(prefix):
        return msg
    body = _GENERIC_PREFIX.sub("", msg)
    first = re.match(r"\w+", body)
    if first and first.group() in names:
        return f"{prefix}.{body}"
    return f"{prefix}: {body}"


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.field=value`` overrides (value parsed as YAML) to a nested dict."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.field=value")
        key, raw = ov.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"command-line override {ov!r}: {p} is not a section")
        try:
            node[parts[-1]] = load_bounded(raw)
        except YamlProblem as e:
            why = f"not valid YAML ({e.msg.removeprefix('invalid YAML: ')})" if e.syntax else e.msg
            raise ConfigError(f"command-line override {ov!r}: {why}") from None
    return data


def override_key(ov: str) -> str:
    """The dotted key of a ``section.field=value`` override."""
    return ov.split("=", 1)[0].strip()


def load_yaml(path: str | Path) -> dict:
    """A config file as a dict; every problem (missing, a directory or other non-file, over
    :data:`MAX_CONFIG_BYTES`, unreadable, not UTF-8, invalid YAML, aliases expanding past
    :data:`raygen.configyaml.MAX_YAML_VALUES`, empty, a duplicated key, not a mapping) is a one-line
    ConfigError naming the file (and line)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"config file {os_error_text(e)}") from None
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file")
    if not path.is_file():  # a device or a pipe may never end
        raise ConfigError(f"{path} is not a regular file, not a config file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {st.st_size:,} bytes, larger than {MAX_CONFIG_BYTES} bytes: not a raygen config")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} on line {line})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = load_bounded(text)
    except YamlProblem as e:
        raise ConfigError(f"{path}:{e.line}: {e.msg}" if e.line and not e.syntax else f"{path}: {e.msg}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty (write at least one section, e.g. 'run_dir: runs/x')")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data
