"""Platform-level run-config keys, shared by every task.

Top-level keys (no dot, plus ``task.name``) belong to the platform; dotted
keys belong to the task named by their prefix (``classify.lr``). A key with
an unknown top-level name or an unknown prefix is an error, so a typo never
passes silently.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fedmed.config.sections import ConfigError, FlatConfig, coerce_value

Mode = Literal["federated", "local", "pooled"]
CommDtype = Literal["fp32", "fp16", "int8"]
Partitioner = Literal["iid", "dirichlet", "quantity"]


@dataclass(frozen=True)
class PlatformConfig:
    """What every run shares, whatever the task.

    ``differential-privacy = true`` wraps FedAvg in Flower's server-side
    fixed-clipping DP (``strategies/dp.py``): each site's update is clipped to
    ``dp-clip-norm``, Gaussian noise of ``dp-noise-multiplier * clip / m`` is
    added to the mean of ``m`` updates, and epsilon at ``dp-delta`` is reported.

    ``secure-aggregation = true`` makes the server learn only the weighted sum
    of the sites' updates (``strategies/secure_fedavg.py``); every site's
    ``n_i * w_i`` must then lie within ``secagg-value-range`` (64-bit
    fixed-point ring: the mean is exact to about ``sites**2 * range / 2**64``).

    ``max-examples-per-site`` bounds the weight one site can claim: a reply
    whose example count is not a finite integer in ``[0, max]`` is refused, so
    no site can make the aggregate its own update by claiming 1e18 examples.
    ``max-update-norm`` (0 = off) bounds the L2 norm of one site's update
    ``w_i - w`` in plain FedAvg, the norm bound of Sun et al. 2019 without noise.

    ``synthetic-data`` records that ``data-dir`` holds generated data (set by
    ``fedmed simulate`` from the folder's ``SYNTHETIC.json``), so the run's
    ``config.json``, ``summary.json`` and report say so. ``tracking-uri`` is the
    MLflow store the run is logged to: empty means ``mlflow.db`` (SQLite) next
    to the run folder, ``off`` turns tracking off.

    ``evaluate-with-train = true`` makes a round one message per site: a site
    evaluates the aggregate it receives before training on it and sends both
    back; only the last round sends a separate evaluate message. Same numbers,
    half the messages (what a deployed round pays for). Plain and DP FedAvg
    only: secure aggregation sums its evaluation in its own protocol, and
    with ``fraction-train < 1`` the sites not sampled would go unevaluated.
    """

    task_name: str = "classify"
    num_server_rounds: int = 3
    min_sites: int = 2
    fraction_train: float = 1.0
    comm_dtype: CommDtype = "fp32"
    data_dir: str = "data/dermamnist"
    run_dir: str = "runs/flwr-run"
    seed: int = 0
    mode: Mode = "federated"
    partition: Partitioner = "iid"
    partition_alpha: float = 0.5
    round_timeout_s: float = 3600.0
    secure_aggregation: bool = False
    secagg_value_range: float = 1e9
    max_examples_per_site: int = 1_000_000
    max_update_norm: float = 0.0
    differential_privacy: bool = False
    dp_noise_multiplier: float = 1.0
    dp_clip_norm: float = 1.0
    dp_delta: float = 1e-5
    resume: bool = False
    faults: str = ""
    fault_sleep_s: float = 5.0
    synthetic_data: bool = False
    tracking_uri: str = ""
    evaluate_with_train: bool = False

    def __post_init__(self) -> None:
        if self.num_server_rounds < 1:
            raise ConfigError(
                f"num-server-rounds must be >= 1, found {self.num_server_rounds}"
            )
        if self.min_sites < 1:
            raise ConfigError(f"min-sites must be >= 1, found {self.min_sites}")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ConfigError(
                f"fraction-train must be in (0, 1], found {self.fraction_train}"
            )
        if self.partition_alpha <= 0:
            raise ConfigError(
                f"partition-alpha must be > 0, found {self.partition_alpha}"
            )
        if not (math.isfinite(self.secagg_value_range) and self.secagg_value_range > 0):
            raise ConfigError(
                "secagg-value-range must be a positive finite number, "
                f"found {self.secagg_value_range}"
            )
        if self.max_examples_per_site < 1:
            raise ConfigError(
                "max-examples-per-site must be >= 1, found "
                f"{self.max_examples_per_site}"
            )
        if not (math.isfinite(self.max_update_norm) and self.max_update_norm >= 0):
            raise ConfigError(
                "max-update-norm must be a finite number >= 0 (0 turns it off), "
                f"found {self.max_update_norm}"
            )
        if self.secure_aggregation:
            self._check_secure_aggregation()
        if self.evaluate_with_train:
            self._check_evaluate_with_train()
        if self.differential_privacy:
            self._check_differential_privacy()

    def _check_secure_aggregation(self) -> None:
        """Secure aggregation needs >= 2 sites per sum and uncompressed updates."""
        if self.min_sites < 2:
            raise ConfigError(
                "secure-aggregation=true needs min-sites >= 2, found "
                f"{self.min_sites}: a sum over one site is that site's update; run "
                "with at least 2 "
                "sites and min-sites=2, or set secure-aggregation=false"
            )
        if self.fraction_train < 1.0:
            raise ConfigError(
                f"secure-aggregation=true needs fraction-train=1, found "
                f"{self.fraction_train}: sums over different subsets of sites "
                "differ by single sites' inputs; set fraction-train=1"
            )
        if self.comm_dtype != "fp32":
            raise ConfigError(
                f"secure-aggregation=true needs comm-dtype=fp32, found "
                f"{self.comm_dtype!r}: masked updates travel as 64-bit fixed-point "
                "integers (a codec cannot compress what it cannot see) and the "
                "aggregate goes back in fp32; set comm-dtype=fp32"
            )

    @property
    def fits_one_message_rounds(self) -> bool:
        """Whether ``evaluate-with-train`` can serve this config: every site in
        every train round, and the plain evaluation path (secure aggregation
        has its own)."""
        return not self.secure_aggregation and self.fraction_train >= 1.0

    def _check_evaluate_with_train(self) -> None:
        """Refuse ``evaluate-with-train`` where it does not fit, saying why."""
        if self.secure_aggregation:
            raise ConfigError(
                "evaluate-with-train=true and secure-aggregation=true cannot be "
                "combined: secure evaluation sums the sites' metrics in its own "
                "protocol round; set evaluate-with-train=false"
            )
        if self.fraction_train < 1.0:
            raise ConfigError(
                f"evaluate-with-train=true needs fraction-train=1, found "
                f"{self.fraction_train}: sites left out of a train round would "
                "go unevaluated; set fraction-train=1 or evaluate-with-train=false"
            )

    def _check_differential_privacy(self) -> None:
        """Central DP clips individual updates: it needs to see them, uncompressed."""
        if self.secure_aggregation:
            raise ConfigError(
                "differential-privacy=true and secure-aggregation=true cannot be "
                "combined: server-side clipping needs each site's update, which "
                "secure aggregation hides; choose one"
            )
        if self.comm_dtype != "fp32":
            raise ConfigError(
                f"differential-privacy=true needs comm-dtype=fp32, found "
                f"{self.comm_dtype!r}: clipping quantised codes is meaningless and "
                "fp16 rounds small noise away"
            )
        if self.fraction_train < 1.0:
            raise ConfigError(
                f"differential-privacy=true needs fraction-train=1, found "
                f"{self.fraction_train}: sites are sampled as a fixed-size subset, "
                "which the accountant's Poisson-sampling bound does not cover"
            )
        if not (math.isfinite(self.dp_clip_norm) and self.dp_clip_norm > 0):
            raise ConfigError(f"dp-clip-norm must be > 0, found {self.dp_clip_norm}")
        if not (
            math.isfinite(self.dp_noise_multiplier) and self.dp_noise_multiplier >= 0
        ):
            raise ConfigError(
                f"dp-noise-multiplier must be >= 0, found {self.dp_noise_multiplier}"
            )
        if not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"dp-delta must be in (0, 1), found {self.dp_delta}")


_FIELDS = {f.replace("_", "-"): f for f in PlatformConfig.__dataclass_fields__}
_FIELDS["task.name"] = _FIELDS.pop("task-name")


def parse_platform(
    run_config: FlatConfig,
    task_names: Sequence[str] | None = None,
    *,
    data_dir: str | None = None,
) -> PlatformConfig:
    """Parse the platform keys of a run config; refuse unknown top-level keys.

    With ``task_names`` every dotted key must also carry a known task prefix
    (the apps check the whole run config once); without, dotted keys are left
    to their task's section parser. ``data_dir`` replaces the ``data-dir``
    default when the run config names none (a task's own default folder).
    """
    hints = typing.get_type_hints(PlatformConfig)
    values = {} if data_dir is None else {"data_dir": data_dir}
    for key, value in run_config.items():
        if key in _FIELDS:
            values[_FIELDS[key]] = coerce_value(key, value, hints[_FIELDS[key]])
            continue
        prefix = key.split(".", 1)[0] if "." in key else None
        if prefix is None:
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(f"unknown run-config key {key!r}; platform keys: {known}")
        if task_names is not None and prefix not in task_names:
            raise ConfigError(
                f"run-config key {key!r} has unknown prefix {prefix!r}; "
                f"task prefixes: {', '.join(sorted(task_names))}"
            )
    return PlatformConfig(**values)
