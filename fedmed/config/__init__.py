"""One config spine: run-config parsing, platform keys, layering, app config.

:mod:`fedmed.config.sections` turns a flat Flower run config into frozen
dataclasses (one per scope, unknown keys refused);
:mod:`fedmed.config.platform` owns the keys every run shares
(:class:`PlatformConfig`); :mod:`fedmed.config.run_config` layers a command
line into one run config; :mod:`fedmed.config.app_config` renders the
declared keys of ``pyproject.toml``.
"""

from fedmed.config.platform import PlatformConfig, parse_platform
from fedmed.config.sections import (
    ConfigError,
    FlatConfig,
    Scalar,
    coerce_value,
    csv_list,
    parse_section,
)

__all__ = [
    "ConfigError",
    "FlatConfig",
    "PlatformConfig",
    "Scalar",
    "coerce_value",
    "csv_list",
    "parse_platform",
    "parse_section",
]
