"""Run configuration for ``inv_flow``: one flat dict, resolved key by key.

Resolution order (later wins):

1. :data:`inv_flow.options.OPTIONS` — every option the framework knows, with its default, type
   (that of the default), allowed values and meaning;
2. the preset (``inv_flow.presets.PRESETS[name]``: model settings and ``image_shape`` per dataset);
3. the user's overrides (a ``--config`` file, then ``--set key=value``; or a dict in Python).

An unknown key is an error that lists the valid keys, and string values (from the command line)
are parsed with the type of the key's default, so ``--set lr=3e-4`` gives a float and
``--set actnorm=false`` a bool.  ``inv-flow options`` prints what each option does.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
from pathlib import Path
from typing import Any, Mapping

from inv_flow.options import ALIASES, DEFAULTS, OPTIONS, ConfigError, check_options, describe_options

__all__ = ["ALIASES", "DEFAULTS", "OPTIONS", "ConfigError", "apply_aliases", "check_options",
           "checked_config", "coerce_value", "describe_options", "fill_templates",
           "load_config_file", "parse_overrides", "resolve_config", "unknown_key_error",
           "validate_config"]

#: Keys whose values are paths/templates that may mention other keys ({name}, {output_dir}).
TEMPLATE_KEYS = ("output_dir", "sample_dir", "checkpoint_path", "last_checkpoint_path")

_TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
_FALSE_WORDS = {"0", "false", "no", "off", "n", "f"}


def valid_keys(presets: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """All keys a config may hold: :data:`DEFAULTS` plus any key a model preset declares."""
    keys = set(DEFAULTS)
    for preset in (presets or {}).values():
        keys.update(preset)
    return sorted(keys)


def unknown_key_error(key: str, keys: list[str]) -> ConfigError:
    """ConfigError for an unknown key, with the closest valid keys and the full list."""
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}.{hint} Valid keys: {', '.join(keys)}")


def parse_bool(text: str) -> bool:
    """Parse 'true/false/1/0/yes/no/on/off' (any case) into a bool."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse '3,32,32', '3x32x32' or '(3, 32, 32)' into a tuple of ints."""
    cleaned = text.strip().strip("()[]").replace("x", ",").replace("X", ",")
    if cleaned.lower() in ("", "none"):
        return ()  # "no shape", e.g. pad_to= (no padding)
    parts = [part.strip() for part in cleaned.split(",") if part.strip()]
    return tuple(int(part) for part in parts)


def coerce_value(key: str, value: Any, default: Any) -> Any:
    """Return ``value`` converted to the type of ``default`` (the key's default value).

    Strings (from the command line) are parsed; non-strings must already have a compatible
    type (an int is accepted for a float option).  Raises :class:`ConfigError` otherwise.
    """
    try:
        if default is None:
            # A preset key without a typed default: take Python literals, else the raw string.
            if isinstance(value, str):
                try:
                    return ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    return value
            return value
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return parse_bool(value)
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
        elif isinstance(default, int):
            if isinstance(value, str):
                return int(value.strip().replace("_", ""))
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif isinstance(default, float):
            if isinstance(value, str):
                return float(value.strip().replace("_", ""))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif isinstance(default, (tuple, list)):
            if isinstance(value, str):
                return parse_shape(value)
            if isinstance(value, (tuple, list)):
                return tuple(int(v) for v in value)
        elif isinstance(default, str):
            if isinstance(value, str):
                return value
            if value is None and key == "activation":
                return "none"  # presets and the original scripts use None for no activation
        else:
            return value
    except ValueError as err:
        raise ConfigError(
            f"bad value for {key!r}: {value!r} ({err}); expected {type(default).__name__} "
            f"like the default {default!r}"
        ) from None
    raise ConfigError(
        f"bad value for {key!r}: {value!r} has type {type(value).__name__}; expected "
        f"{type(default).__name__} like the default {default!r}"
    )


def apply_aliases(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the earlier option names of :data:`inv_flow.options.ALIASES` rewritten
    to today's — the one place that maps them, for a saved run's full config and for a few
    overrides alike:

    * ``modified_grad=v`` → ``dense_reference = not v`` and ``self_normalized_grad = v``;
    * ``inv_conv``: ``unit`` / ``single`` → ``masked_conv``; ``conv1x1`` → ``family="glow"``;
    * ``direction``: ``inverse`` → ``family="inverse_flow"``; ``conv`` → ``family="finc_flow"``
      with ``finc_unit="unit"`` (the masked convolutions of ``masked_conv``, run the FInC way);
    * ``family="auto"`` → the family ``inv_conv`` / ``direction`` give (``inverse_flow``).

    As before, ``inv_conv=conv1x1`` and ``direction`` choose the family only where ``values``
    names none (or ``auto``): next to a family they are ignored — except ``inv_conv=conv1x1``
    with family inverse_flow or finc_flow, which was an error and is one — and the fc model
    ignores both.  ``modified_grad`` and ``inv_conv`` override the new names they stand for
    (a script that adds an earlier name to a config of today's).  Raises :class:`ConfigError`.
    """
    out = dict(values)
    modified = out.pop("modified_grad", None)
    if modified is not None:
        modified = coerce_value("modified_grad", modified, True)
        out["dense_reference"], out["self_normalized_grad"] = not modified, modified
    layout = _alias_choice(out, "inv_conv", ("unit", "single", "conv1x1"))
    direction = _alias_choice(out, "direction", ("inverse", "conv"))
    if layout in ("unit", "single"):
        out["masked_conv"] = layout
    family = out.get("family")
    if family == "auto" or (family is None and (layout == "conv1x1" or direction is not None)):
        if out.get("model") != "fc" and layout == "conv1x1":
            out["family"] = "glow"
        elif out.get("model") != "fc" and direction == "conv":
            out["family"], out["finc_unit"] = "finc_flow", "unit"
        else:
            out["family"] = "inverse_flow"
    elif layout == "conv1x1" and family in ("inverse_flow", "finc_flow"):
        raise ConfigError(f"family {family!r} uses k x k masked convolutions, but "
                          "inv_conv='conv1x1' (the earlier name of family='glow'); drop inv_conv "
                          "or set masked_conv to 'unit' or 'single'")
    return out


def _alias_choice(values: dict[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    """Pop the earlier option ``key`` from ``values``: None when absent, else one of ``choices``."""
    value = values.pop(key, None)
    if value is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Turn ``["lr=1e-3", "epochs=5"]`` into ``{"lr": "1e-3", "epochs": "5"}`` (still strings;
    earlier option names rewritten by :func:`apply_aliases`, so a later mapping wins whole)."""
    overrides: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return apply_aliases(overrides)


def load_presets() -> dict[str, dict[str, Any]]:
    """The model presets, ``inv_flow.presets.PRESETS``."""
    from inv_flow.presets import PRESETS  # noqa: PLC0415

    return {name: dict(values) for name, values in PRESETS.items()}


def resolve_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a full config: ``base`` (default :data:`DEFAULTS`), then the preset, then overrides.

    ``preset`` names an entry of ``presets`` (default: ``inv_flow.models.PRESETS``); ``None``
    uses ``overrides["preset"]`` or the default.  ``base`` lets a saved run's config be the
    starting point (resuming, evaluating a checkpoint).  Template keys (``output_dir``,
    ``checkpoint_path`` ...) are filled with ``{name}`` / ``{output_dir}`` at the end.

    Raises :class:`ConfigError` for an unknown preset, unknown key or badly typed value.
    """
    overrides = apply_aliases(overrides or {})
    presets = {name: apply_aliases(values)
               for name, values in (load_presets() if presets is None else presets).items()}
    keys = valid_keys(presets)
    for key in overrides:
        if key not in keys:
            raise unknown_key_error(key, keys)

    config: dict[str, Any] = dict(DEFAULTS)
    config.update(apply_aliases(base or {}))  # a saved run's config, completed by keys added since
    # Types come from DEFAULTS, or from the preset for keys only a preset knows.
    typed_defaults: dict[str, Any] = dict(DEFAULTS)
    for values in presets.values():
        for key, value in values.items():
            typed_defaults.setdefault(key, value)

    preset_name = preset if preset is not None else overrides.get("preset")
    if preset_name is None and base is None:
        preset_name = config["preset"]  # a fresh run always starts from a preset
    if preset_name is not None:
        if preset_name not in presets:
            raise ConfigError(
                f"unknown preset {preset_name!r}; available presets: {', '.join(sorted(presets))}"
            )
        for key, value in presets[preset_name].items():
            config[key] = coerce_value(key, value, typed_defaults[key])
        config["preset"] = preset_name

    for key, value in overrides.items():
        if key == "preset":
            continue  # handled above
        config[key] = coerce_value(key, value, typed_defaults.get(key))
    if not config.get("dataset"):
        config["dataset"] = config["preset"]
    validate_config(config)
    return fill_templates(config)


def fill_templates(config: dict[str, Any]) -> dict[str, Any]:
    """Substitute ``{name}`` and ``{output_dir}`` in the path options (idempotent)."""
    filled = dict(config)
    filled["output_dir"] = str(filled["output_dir"]).format(name=filled["name"])
    for key in TEMPLATE_KEYS:
        if key == "output_dir":
            continue
        try:
            filled[key] = str(filled[key]).format(name=filled["name"], output_dir=filled["output_dir"])
        except (KeyError, IndexError) as err:
            raise ConfigError(
                f"{key}={filled[key]!r} uses an unknown placeholder {err}; only {{name}} and "
                "{output_dir} are available"
            ) from None
    return filled


def validate_config(config: Mapping[str, Any]) -> None:
    """Every rule of :data:`OPTIONS` (ranges, choices) plus the checks that involve more than
    one value; raises :class:`ConfigError`."""
    for key, value in config.items():
        # NaN passes every `<` check, and no option means anything at infinity.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number; got {value!r}")
    check_options(config)
    shape = tuple(config["image_shape"])
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise ConfigError(f"image_shape must be (C, H, W) with positive sizes, got {shape!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Overrides from a JSON file, or a YAML file (``.yaml``/``.yml``, needs PyYAML): one flat
    mapping of option names to values (earlier names rewritten by :func:`apply_aliases`), merged
    under ``--set``.  Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415 - optional
        except ImportError:
            raise ConfigError(f"{path} is YAML, which needs PyYAML (`pip install pyyaml`); or "
                              "write the config as JSON") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err} (YAML files need a .yaml or "
                              ".yml suffix)") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ConfigError(f"{path} must hold one mapping of option names to values, got "
                          f"{type(values).__name__}")
    return apply_aliases(values)


def checked_config(config: Any) -> dict[str, Any]:
    """``config`` as a dict, if it is a full, valid config (as :func:`resolve_config` builds)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict from inv_flow.config.resolve_config; got "
                        f"{type(config).__name__}")
    config = apply_aliases(config)
    missing = sorted(set(DEFAULTS) - set(config))
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ConfigError(f"config lacks {shown}; build it with "
                          "inv_flow.config.resolve_config(preset, overrides)")
    validate_config(config)
    return dict(config)
