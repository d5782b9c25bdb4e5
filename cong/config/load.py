"""Loading a run's config: presets (`extends: tiny`), defaults merged under the user's keys, and validation errors
that name the field and its allowed range."""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError

from cong.config.cluster import default_resources
from cong.config.run import Config
from cong.errors import CongError

PRESET_PACKAGE = "cong.presets"


def preset_names() -> list[str]:
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


@functools.cache
def _preset_yaml(name: str) -> Any:
    """A preset file as parsed (read once per process; callers get copies)."""
    return yaml.safe_load(resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text())


def _preset_dict(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise CongError(f"unknown preset '{name}'. Available presets: {', '.join(preset_names())}.")
    return _with_parent(copy.deepcopy(_preset_yaml(name)), f"preset {name}")


def defaults() -> dict[str, Any]:
    """Every setting's default, nested: a settings object that is the default of a field contributes its own
    values, so `stages.cd_sample.sampling` holds cd_sample's defaults (repetition penalty 1.2, seed 0), not
    SamplingSettings' generic ones. Required fields (`name`, `models`, `data`) have none."""
    tree: dict[str, Any] = {}
    for name, field in Config.model_fields.items():
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            tree[name] = default.model_dump() if isinstance(default, BaseModel) else copy.deepcopy(default)
    return tree


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`data` on top of `defaults()`: every mapping overrides only the keys it names, at every depth. Each
    `resources.<stage>` entry lies on top of that stage's default pod (promote's: evaluate's entry)."""
    merged = _merge(defaults(), data)
    pods = merged.get("resources")
    if isinstance(pods, dict):
        pods = {
            stage: _merge(default_resources(stage), own) if isinstance(own, dict) else own
            for stage, own in pods.items()
        }
        if isinstance(pods.get("promote"), dict) and isinstance(pods.get("evaluate"), dict):
            pods["promote"] = _merge(pods["evaluate"], data["resources"]["promote"])
        merged["resources"] = pods
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _with_parent(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CongError(f"{source}: a config must be a YAML mapping of keys to values, got {type(raw).__name__}.")
    parent = raw.pop("extends", None)
    return _merge(_preset_dict(parent), raw) if parent else raw


def _field_range(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The allowed values of the field at `loc`, read from its declared constraints."""
    field = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            break
        field = model.model_fields[part]
        annotation = field.annotation
        model = next((a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)), annotation)
    if field is None:
        return ""
    symbols = {annotated_types.Ge: ">=", annotated_types.Gt: ">", annotated_types.Le: "<=", annotated_types.Lt: "<"}
    bounds = [
        f"{symbols[type(m)]} {getattr(m, type(m).__name__.lower())}" for m in field.metadata if type(m) in symbols
    ]
    return f" (allowed: {' and '.join(bounds)})" if bounds else ""


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<top level>"
        given = "" if item["type"] == "missing" else f" = {item.get('input')!r}"
        lines.append(f"  {path}{given}: {item['msg']}{_field_range(Config, item['loc'])}")
    lines.append("Fix the value(s) above; `cong validate FILE` checks a config without running it.")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Load a config file (which may `extends:` a preset), or a preset by name, or the `tiny` default.

    `overrides` (e.g. from command-line flags) are merged last, then the whole config is validated.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise CongError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(read_text(path))
        except yaml.YAMLError as exc:
            raise CongError(f"{path} is not valid YAML: {exc}") from None
        data = _with_parent(raw, str(path))
        if preset:
            data = _merge(_preset_dict(preset), data)
        source = str(path)
    else:
        data = _preset_dict(preset or "tiny")
        source = f"preset {preset or 'tiny'}"
    if overrides:
        data = _merge(data, overrides)
        source += " with command-line overrides"
    try:
        return Config.model_validate(with_defaults(data))
    except ValidationError as exc:
        raise CongError(_format_errors(exc, source)) from None


def read_text(path: Path) -> str:
    """A UTF-8 text file; bytes that are not UTF-8 stop with a message naming the file, line and column."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CongError(
            f"{path}, line {line}, column {column}: not UTF-8 (byte {raw[exc.start : exc.start + 1]!r}). Save the "
            "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Re-validate a config passed between pipeline tasks as a plain dict."""
    try:
        return Config.model_validate(with_defaults(data))
    except ValidationError as exc:
        raise CongError(_format_errors(exc, "pipeline parameter 'config'")) from None
