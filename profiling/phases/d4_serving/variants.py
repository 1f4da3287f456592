"""The serving phase's runs and their names (light: the rule file reads it to name the traces).

One run = one server (ours with its switches, or vLLM's) under one workload. Our server's switches:
    policy          static | dynamic | continuous
    kv_cache        slab | paged
    max_step_tokens 0 (prompts run whole, in steps of their own) or the step's token budget (chunked prefill)
    prefix_cache    on | off
    linears         "" (the run's cpu_linears), small_batch (our C kernel at 1-32 rows, oneDNN above), prepacked
                    (oneDNN, weights packed once) or aten (torch's F.linear)
    lever           "" or the engine lever from D5 that applies to batches (e.g. dtype bfloat16)
Workloads: "random" (random prompts of prompt_tokens, at a rate), "prefix" (one shared system prompt + a short
question each), "long" (running streams, then long prompts arriving among them), "tenants" (one noisy tenant).

Loads: the random workload's request rates are shares of our server's saturated rate, measured first (its
`continuous_sat` run sends every request at once; saturated rate = requests / that run's duration), so the sweep
fits the machine it runs on, as guidellm's sweep profile spreads its rates between the synchronous and the
throughput rates it measured. Both servers run at the same absolute rates.

Names (<load>: "sat" = all at once, "60pct" = 0.6 x the saturated rate):
    ablation_<step>        ours, one idea added per step: slab (F.linear), kernels (the run's cpu_linears), paged,
                           chunked, (prefix: continuous_<ablation load>), lever (random workload)
    continuous_<load>      ours with every idea on but the lever, in the model's dtype as vLLM runs it: the
                           capacity sweep (and the policy comparison's continuous row)
    vllm_<load>            the reference at the same rates
    <policy>_<load>        static and dynamic batching (with every other idea on) at the policy load
    prefix_<on|off>        ours, the shared-prefix workload;   vllm_prefix   the reference (its prefix caching on)
    long_<budget|off>      ours, the long-prompt workload at a step budget (off: no chunking);   vllm_long
    tenants_<fifo|fair>    ours (continuous) under one noisy tenant, admission fifo or fair
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace



SATURATED = math.inf  # the load of a run that sends every request at once


def rate_name(rate: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5", inf -> "inf"."""
    return "inf" if math.isinf(rate) else f"{rate:g}"


def load_name(load: float) -> str:
    """A load in run names: inf -> "sat" (all at once), 0.6 -> "60pct" (0.6 x the saturated rate)."""
    return "sat" if math.isinf(load) else f"{round(load * 100):d}pct"


def resolve_rate(run: "Run", saturated_req_per_s: float | None) -> "Run":
    """`run` with its request rate: a random-workload run's load x the saturated rate (all at once for the
    saturated run itself); other workloads keep their configured rates."""
    if run.load is None:
        return run
    if math.isinf(run.load):
        return replace(run, rate=math.inf)
    if not saturated_req_per_s or not math.isfinite(saturated_req_per_s):
        raise RuntimeError(f"run {run.variant} needs the saturated rate, which was not measured")
    return replace(run, rate=run.load * saturated_req_per_s)


@dataclass(frozen=True)
class Run:
    """One load run: the server and its switches, the workload, the request rate (req/s, inf = at once)."""

    variant: str
    server: str                 # "ours" or "vllm"
    workload: str               # random | prefix | long | tenants
    rate: float
    load: float | None = None   # random workload: the rate as a share of the saturated rate (inf: all at once)
    policy: str = "continuous"  # "vllm" for the reference
    kv_cache: str = "paged"
    max_step_tokens: int = 0
    prefix_cache: str = "on"
    linears: str = ""           # "" (the run's cpu_linears) | small_batch | prepacked | aten
    lever: str = ""             # "" or the config's lever (auto, bfloat16, int8_dynamic, …; resolved by the experiment)
    tenant_policy: str = "fifo"

    @property
    def server_key(self) -> tuple:
        """Runs with the same key share one server process (started once, driven in turn)."""
        return (self.server, self.policy, self.kv_cache, self.max_step_tokens, self.prefix_cache, self.linears,
                self.lever, self.tenant_policy, self.workload == "tenants")


def has_lever(cfg: dict) -> bool:
    return cfg["lever"] not in ("", "none")


def sweep_loads(cfg: dict) -> list[float]:
    """The capacity sweep's loads (shares of the saturated rate) with the ablation's and the policies', sorted."""
    return sorted({float(load) for load in cfg["capacity_loads"]} | {float(cfg["ablation_load"]),
                                                                     float(cfg["policy_load"])})


def our_runs(cfg: dict) -> list[Run]:
    """Our server's runs, grouped so that runs sharing a server follow each other; the saturated run comes first
    (every other random-workload rate is a share of its rate)."""
    best = Run("", "ours", "random", math.nan, max_step_tokens=int(cfg["max_step_tokens"]))
    steps = {"slab": replace(best, kv_cache="slab", max_step_tokens=0, prefix_cache="off", linears="aten"),
             "kernels": replace(best, kv_cache="slab", max_step_tokens=0, prefix_cache="off"),
             "paged": replace(best, max_step_tokens=0, prefix_cache="off"),
             "chunked": replace(best, prefix_cache="off"),
             "lever": replace(best, lever=cfg["lever"])}
    runs = [replace(best, variant=f"continuous_{load_name(load)}", load=load)
            for load in [SATURATED, *sweep_loads(cfg)]]
    ablation_load = float(cfg["ablation_load"])
    runs += [replace(steps[step], variant=variant, load=ablation_load) for step, variant in ablation_variants(cfg)
             if step in steps]
    policy_load = float(cfg["policy_load"])
    runs += [replace(best, variant=f"{policy}_{load_name(policy_load)}", policy=policy, load=policy_load)
             for policy in cfg["policies"] if policy != "continuous"]
    prefix = cfg["shared_prefix"]
    runs += [replace(best, variant=f"prefix_{switch}", workload="prefix", rate=float(prefix["rate_req_per_s"]),
                     prefix_cache=switch) for switch in ("on", "off")]
    runs += [replace(steps["chunked"], variant=f"long_{budget or 'off'}", workload="long", rate=math.inf,
                     max_step_tokens=int(budget)) for budget in cfg["long_prompts"]["budgets"]]
    tenants = cfg["tenants"]
    runs += [replace(best, variant=f"tenants_{policy}", workload="tenants", tenant_policy=policy,
                     rate=float(tenants["request_rate_req_per_s"])) for policy in ("fifo", "fair")
             if tenants["enabled"]]
    order = list(dict.fromkeys(run.server_key for run in runs))
    return sorted(runs, key=lambda run: order.index(run.server_key))


ABLATION_STEPS = ("slab", "kernels", "paged", "chunked", "prefix", "lever")  # the table's order


def ablation_variants(cfg: dict) -> list[tuple[str, str]]:
    """(step, run variant) of the ablation table in order, each idea added to the one before: the configured
    `ablation_steps` (lever only when a lever is set; prefix is the sweep's run at the ablation load)."""
    load = load_name(float(cfg["ablation_load"]))
    chosen = set(cfg.get("ablation_steps", ABLATION_STEPS)) - (set() if has_lever(cfg) else {"lever"})
    return [(step, f"continuous_{load}" if step == "prefix" else f"ablation_{step}")
            for step in ABLATION_STEPS if step in chosen]


def reference_runs(cfg: dict) -> list[Run]:
    """The reference server's runs (one server, with our default switches where vLLM has them): the capacity
    sweep at our rates (and its own saturated run), the shared-prefix workload and the long-prompt workload."""
    vllm = Run("", "vllm", "random", math.nan, policy="vllm", max_step_tokens=int(cfg["max_step_tokens"]))
    runs = [replace(vllm, variant=f"vllm_{load_name(load)}", load=load) for load in [SATURATED, *sweep_loads(cfg)]]
    runs.append(replace(vllm, variant="vllm_prefix", workload="prefix",
                        rate=float(cfg["shared_prefix"]["rate_req_per_s"])))
    runs.append(replace(vllm, variant="vllm_long", workload="long", rate=math.inf))
    return runs


def trace_variants(cfg: dict) -> list[str]:
    """One server-side trace per run of our server."""
    return [run.variant for run in our_runs(cfg)]
