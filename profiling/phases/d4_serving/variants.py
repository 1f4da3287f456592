"""The serving phase's runs and their names (light: the rule file reads it to name the traces).

One run = one server (ours with its switches, or vLLM's) under one workload. Our server's switches:
    policy          static | dynamic | continuous
    kv_cache        slab | paged
    max_step_tokens 0 (prompts run whole, in steps of their own) or the step's token budget (chunked prefill)
    prefix_cache    on | off
    lever           "" or the engine lever from D5 that applies to batches (e.g. dtype bfloat16)
Workloads: "random" (random prompts of prompt_tokens, at a rate), "prefix" (one shared system prompt + a short
question each), "long" (running streams, then long prompts arriving among them), "tenants" (one noisy tenant).

Names:
    ablation_<step>        ours, one idea added per step: slab, paged, chunked, (prefix: continuous_r<ablation
                           rate>), lever (random workload)
    continuous_r<rate>     ours with every idea on but the lever, in the model's dtype as vLLM runs it: the
                           capacity sweep (and the policy comparison's continuous row)
    vllm_r<rate>           the reference at the same rates
    <policy>_r<rate>       static and dynamic batching (with every other idea on) at the policy rate
    prefix_<on|off>        ours, the shared-prefix workload;   vllm_prefix   the reference (its prefix caching on)
    long_<budget|off>      ours, the long-prompt workload at a step budget (off: no chunking);   vllm_long
    tenants_<fifo|fair>    ours (continuous) under one noisy tenant, admission fifo or fair
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace



def rate_name(rate: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5", inf -> "inf"."""
    return "inf" if math.isinf(rate) else f"{rate:g}"


@dataclass(frozen=True)
class Run:
    """One load run: the server and its switches, the workload, the request rate (req/s, inf = at once)."""

    variant: str
    server: str                 # "ours" or "vllm"
    workload: str               # random | prefix | long | tenants
    rate: float
    policy: str = "continuous"  # "vllm" for the reference
    kv_cache: str = "paged"
    max_step_tokens: int = 0
    prefix_cache: str = "on"
    lever: str = ""             # "" or the config's lever (auto, bfloat16, int8_dynamic, …; resolved by the experiment)
    tenant_policy: str = "fifo"

    @property
    def server_key(self) -> tuple:
        """Runs with the same key share one server process (started once, driven in turn)."""
        return (self.server, self.policy, self.kv_cache, self.max_step_tokens, self.prefix_cache, self.lever,
                self.tenant_policy, self.workload == "tenants")


def has_lever(cfg: dict) -> bool:
    return cfg["lever"] not in ("", "none")


def our_runs(cfg: dict) -> list[Run]:
    """Our server's runs, grouped so that runs sharing a server follow each other."""
    best = Run("", "ours", "random", math.inf, max_step_tokens=int(cfg["max_step_tokens"]))
    steps = {"slab": replace(best, kv_cache="slab", max_step_tokens=0, prefix_cache="off"),
             "paged": replace(best, max_step_tokens=0, prefix_cache="off"),
             "chunked": replace(best, prefix_cache="off"),
             "lever": replace(best, lever=cfg["lever"])}
    ablation_rate = float(cfg["ablation_rate_req_per_s"])
    runs = [replace(steps[step], variant=f"ablation_{step}", rate=ablation_rate) for step in steps
            if step != "lever" or has_lever(cfg)]
    policy_rate = float(cfg["policy_rate_req_per_s"])
    rates = sorted({float(rate) for rate in cfg["capacity_rates_req_per_s"]} | {ablation_rate, policy_rate})
    runs += [replace(best, variant=f"continuous_r{rate_name(rate)}", rate=rate) for rate in rates]
    runs += [replace(best, variant=f"{policy}_r{rate_name(policy_rate)}", policy=policy, rate=policy_rate)
             for policy in cfg["policies"] if policy != "continuous"]
    prefix = cfg["shared_prefix"]
    runs += [replace(best, variant=f"prefix_{switch}", workload="prefix", rate=float(prefix["rate_req_per_s"]),
                     prefix_cache=switch) for switch in ("on", "off")]
    runs += [replace(steps["chunked"], variant=f"long_{budget or 'off'}", workload="long",
                     max_step_tokens=int(budget)) for budget in cfg["long_prompts"]["budgets"]]
    tenants = cfg["tenants"]
    runs += [replace(best, variant=f"tenants_{policy}", workload="tenants", tenant_policy=policy,
                     rate=float(tenants["request_rate_req_per_s"])) for policy in ("fifo", "fair")
             if tenants["enabled"]]
    order = list(dict.fromkeys(run.server_key for run in runs))
    return sorted(runs, key=lambda run: order.index(run.server_key))


def ablation_variants(cfg: dict) -> list[tuple[str, str]]:
    """(step, run variant) of the ablation table in order: each idea added to the one before."""
    rate = rate_name(float(cfg["ablation_rate_req_per_s"]))
    rows = [("slab", "ablation_slab"), ("paged", "ablation_paged"), ("chunked", "ablation_chunked"),
            ("prefix", f"continuous_r{rate}")]
    return rows + ([("lever", "ablation_lever")] if has_lever(cfg) else [])


def reference_runs(cfg: dict) -> list[Run]:
    """The reference server's runs (one server, with our default switches where vLLM has them): the capacity
    sweep, the shared-prefix workload and the long-prompt workload."""
    vllm = Run("", "vllm", "random", math.inf, policy="vllm", max_step_tokens=int(cfg["max_step_tokens"]))
    rates = sorted({float(rate) for rate in cfg["capacity_rates_req_per_s"]}
                   | {float(cfg["ablation_rate_req_per_s"]), float(cfg["policy_rate_req_per_s"])})
    runs = [replace(vllm, variant=f"vllm_r{rate_name(rate)}", rate=rate) for rate in rates]
    runs.append(replace(vllm, variant="vllm_prefix", workload="prefix",
                        rate=float(cfg["shared_prefix"]["rate_req_per_s"])))
    runs.append(replace(vllm, variant="vllm_long", workload="long"))
    return runs


def trace_variants(cfg: dict) -> list[str]:
    """One server-side trace per run of our server."""
    return [run.variant for run in our_runs(cfg)]
