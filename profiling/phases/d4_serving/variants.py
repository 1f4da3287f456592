"""The serving phase's runs and their names (light: the rule file reads it to name the traces).

One run = one server (ours with a policy, or vLLM's) under one load (a request rate). Names:
    <policy>_r<rate>        ours, e.g. continuous_r1, static_r2, continuous_rinf (inf: all requests at once)
    tenants_<fifo|fair>     ours (continuous) under one noisy tenant, admission fifo or fair
    vllm_r<rate>            the reference server (when .venv-reference exists)
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def rate_name(rate: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5", inf -> "inf"."""
    return "inf" if math.isinf(rate) else f"{rate:g}"


@dataclass(frozen=True)
class Run:
    """One load run: which server, its scheduling and tenant policy, the request rate (req/s, inf = at once)."""

    server: str  # "ours" or "vllm"
    policy: str  # static | dynamic | continuous (ours); "vllm" for the reference
    rate: float
    tenant_policy: str = "fifo"
    tenants: bool = False  # the noisy-tenant mix

    @property
    def variant(self) -> str:
        if self.tenants:
            return f"tenants_{self.tenant_policy}"
        return f"{self.policy}_r{rate_name(self.rate)}"


def our_runs(cfg: dict) -> list[Run]:
    """Our server's runs, in order: every policy at the policy-comparison rate, the continuous policy at the
    other rates, then the tenant runs (fifo, fair)."""
    runs = [Run("ours", policy, float(cfg["policy_rate_req_per_s"])) for policy in cfg["policies"]]
    runs += [Run("ours", "continuous", float(rate)) for rate in cfg["rates_req_per_s"]]
    runs += [Run("ours", "continuous", float(cfg["tenants"]["request_rate_req_per_s"]), tenant_policy, True)
             for tenant_policy in ("fifo", "fair")]
    return list(dict.fromkeys(runs))


def reference_runs(cfg: dict) -> list[Run]:
    """The reference server's runs: the same loads as the continuous policy's rate runs."""
    return [Run("vllm", "vllm", float(rate)) for rate in cfg["rates_req_per_s"]]


def trace_variants(cfg: dict) -> list[str]:
    """One server-side trace per run of our server."""
    return [run.variant for run in our_runs(cfg)]
