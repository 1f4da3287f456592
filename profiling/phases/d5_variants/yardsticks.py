"""D5's yardsticks: llama.cpp and vLLM, measured in the same run on the same prompt ids and threads, beside our
variants, and the verdicts against them. Reads the experiment's rows and meta.json; never runs anything.

    peer rows     llama.cpp (variant `llama.cpp`, knob `quant`) and vLLM's LLM.generate (variant `vllm_offline`,
                  knob `mode`): one row per system and batch size; a configured system that did not run is one
                  row with available False and why
    step_p50_s    median over repeats of each repeat's median decode step (one step of all B sequences), seconds;
                  vLLM's step per repeat = (e2e of N tokens - e2e of 1 token) / (N - 1)
    weight_bits   our variant's weight storage: the N of int<N> (or w<N>a8) in its quant lever, else its dtype's bits
    agreement     exact: every greedy token equal to the reference's at that batch size; approximate otherwise
    TARGETS       our fastest candidate's decode step / the peer's (at most the bound) at the smallest batch, the
                  candidates: exact or at least 8-bit variants against q8_0, 4-bit ones against q4_1, the engine's
                  float32 path (engine_float32: the reference and the variants that change only the engine's own
                  settings, linears aten | prepacked | small_batch and attention eager | sdpa; its default is prepacked + sdpa)
                  against f32 (its decode steps hf or fused: cpu_decoder); at every
                  larger batch our best exact variant's decode tok/s / vLLM's (compiled, else eager; at least
                  the bound): vLLM's tokens are the reference's, so an approximate variant is no match for it.
                  verdict: met | missed | no_peer (the peer was not measured) | no_candidate (no variant of that kind)
"""
from __future__ import annotations

import math
import re

import pandas as pd

from ...metrics import per_repeat
from ...stats import summarize
from . import LLAMA_CPP, VLLM
PEERS = {LLAMA_CPP: ("quant", "llama.cpp"), VLLM: ("mode", "vLLM")}  # variant -> (setting knob, label)
DTYPE_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}

# key -> (our candidates, peer label, bound on our step / peer step at the smallest batch)
STEP_TARGETS = {
    "exact_or_8bit_vs_llama_q8_0": ("exact_or_8bit", "llama.cpp q8_0", 1.0),
    "4bit_vs_llama_q4_1": ("4bit", "llama.cpp q4_1", 1.0),
    "engine_float32_vs_llama_f32": ("engine_float32", "llama.cpp f32", 1.5),
}
VLLM_TARGET = ("best_exact_vs_vllm", 1.0)  # our best exact decode tok/s / vLLM's at each larger batch, at least this
NOT_RUN = {"measured": False, "note": "not run by this experiment"}  # meta.json without the peer's entry


def weight_bits(described: dict | None) -> float:
    """Bits per stored weight of one variant from its levers (meta.json's variants entry); NaN when unknown."""
    if not described:
        return float("nan")
    found = re.search(r"(?:int|w)(\d+)", str(described.get("quant", "")))  # int8_..., int4_..., w8a8
    return float(found.group(1)) if found else float(DTYPE_BITS.get(described.get("dtype"), "nan"))


def engine_float32(described: dict | None) -> bool:
    """True for a variant that the engine runs in float32 by its own settings alone (cpu_linears, attention): no
    quantisation, no compilation, the dynamic cache, all threads, decode steps by transformers' modules or our fused
    layer (cpu_decoder: hf | fused); the reference and the engine's default among them."""
    if not described:
        return False
    return (described.get("dtype") == "float32" and described.get("quant") == "none"
            and described.get("compile") == "none" and described.get("cache") == "dynamic"
            and not described.get("threads"))


def classified(table: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The variant table with weight_bits and agreement (exact | approximate) per row."""
    described = meta["notes"].get("variants", {})
    table = table.copy()
    table["weight_bits"] = [weight_bits(described.get(name)) for name in table["variant"]]
    match = table["token_match_ratio"] if "token_match_ratio" in table else pd.Series(float("nan"), index=table.index)
    table["agreement"] = ["exact" if ratio == 1.0 else "approximate" for ratio in match]
    table["engine_float32"] = [engine_float32(described.get(name)) for name in table["variant"]]
    return table


# ---- the peers' rows ---------------------------------------------------------------------------------------------
def peer_row(rows: pd.DataFrame, variant: str, setting: str, batch: int, roof: float) -> dict:
    """One measured peer at one batch size (see the module docstring)."""
    knob, label = PEERS[variant]
    mine = rows[(rows["variant"] == variant) & (rows[knob] == setting)]
    at_batch = mine[mine["batch_size"] == batch]
    constants = mine[mine["batch_size"].isna()].set_index("metric")["value"]
    stats = summarize(per_repeat(at_batch, "decode_step_s"))
    step = stats.get("p50", float("nan"))
    weight_bytes = float(constants.get("step_weight_bytes", float("nan")))
    one_off = constants.get("startup_s", constants.get("load_model_s", float("nan")))
    match = mine[(mine["metric"] == "token_match_ratio")]["value"]
    prefill = per_repeat(at_batch, "prefill_s")
    return {"system": f"{label} {setting}", "peer": label, "setting": setting, "batch_size": batch, "available": True,
            "step_p50_s": step, "step_ci95_low_s": stats.get("ci95_low"), "step_ci95_high_s": stats.get("ci95_high"),
            "repeats": stats.get("n", 0), "step_half_width_ratio": stats.get("half_width_ratio"),
            "decode_tok_per_s": batch / step, "prefill_p50_s": float(pd.Series(prefill).median()) if prefill
            else float("nan"), "one_off_s": float(one_off), "step_weight_bytes": weight_bytes,
            "achieved_bandwidth_bytes_per_s": weight_bytes / step, "roof_share": weight_bytes / step / roof,
            "token_match_ratio": float(match.iloc[0]) if len(match) else float("nan"), "reason": ""}


def missing(label: str, setting: str | None, reason: str, reason_key: str = "") -> dict:
    """A configured peer that did not run: one row saying why (reason_key: a case the templates word)."""
    return {"system": f"{label} {setting}" if setting else label, "peer": label, "setting": setting,
            "batch_size": None, "available": False, "reason": reason, "reason_key": reason_key}


def peer_table(measurements: pd.DataFrame, meta: dict, cfg: dict, roof: float, batch_sizes: list[int]) -> list[dict]:
    """Rows of llama.cpp per configured type and vLLM per mode (compiled first), measured or saying why."""
    notes, peer_cfg = meta["notes"], cfg.get("reference", {})
    table = []
    llama = notes.get("llama_cpp") or NOT_RUN
    quants = peer_cfg.get("llama_cpp_quants", ["q4_1", "q8_0", "f32"])
    if not llama.get("measured"):
        table.append(missing("llama.cpp", None, llama.get("note", "")))
    else:
        for quant in quants:
            if quant in llama.get("failed", {}):
                table.append(missing("llama.cpp", quant, llama["failed"][quant]))
            else:
                table.extend(peer_row(measurements, LLAMA_CPP, quant, batch, roof) for batch in batch_sizes)
    vllm = notes.get("vllm_offline") or NOT_RUN
    modes = peer_cfg.get("vllm_modes", ["eager"])
    if not vllm.get("measured"):
        table.append(missing("vLLM", None, vllm.get("note", "")))
        return table
    for mode in ("compiled", "eager"):
        entry = vllm.get("modes", {}).get(mode)
        if mode not in modes or entry is None:
            table.append(missing("vLLM", mode, "", "not_configured"))
        elif not entry.get("measured"):
            table.append(missing("vLLM", mode, entry.get("note", "")))
        else:
            table.extend(peer_row(measurements, VLLM, mode, batch, roof) for batch in batch_sizes)
    return table


# ---- side by side and the verdicts -------------------------------------------------------------------------------
def side_by_side(table: pd.DataFrame, peers: list[dict], batch_sizes: list[int]) -> list[dict]:
    """One row per system: our available variants, exact ones first then approximate ones, each ranked by the
    decode step at the smallest batch; then the peers. step_s / repeats: one per batch size (batch_sizes order)."""
    small = min(batch_sizes)
    ours = table[table["available"]]
    rows = []
    for variant, group in ours.groupby("variant", sort=False):
        at = group.set_index("batch_size")
        first = at.loc[small]
        rows.append({"system": variant, "kind": "ours", "agreement": first["agreement"],
                     "weight_bits": first["weight_bits"], "token_match_ratio": first["token_match_ratio"],
                     "step_s": [float(at.loc[b, "step_p50_s"]) if b in at.index else None for b in batch_sizes],
                     "repeats": [int(at.loc[b, "repeats"]) if b in at.index else 0 for b in batch_sizes],
                     "step_weight_bytes": first["step_weight_bytes"], "roof_share": first["roof_share"],
                     "available": True})
    rows.sort(key=lambda row: (row["agreement"] != "exact", row["step_s"][0]))
    by_system: dict = {}
    for peer in peers:
        by_system.setdefault(peer["system"], []).append(peer)
    for system, group in by_system.items():
        first = group[0]
        if not first["available"]:
            rows.append({"system": system, "kind": first["peer"], "available": False, "reason": first["reason"],
                         "reason_key": first.get("reason_key", "")})
            continue
        at = {row["batch_size"]: row for row in group}
        rows.append({"system": system, "kind": first["peer"], "agreement": None, "weight_bits": None,
                     "token_match_ratio": first["token_match_ratio"],
                     "step_s": [at[b]["step_p50_s"] if b in at else None for b in batch_sizes],
                     "repeats": [at[b]["repeats"] if b in at else 0 for b in batch_sizes],
                     "step_weight_bytes": first["step_weight_bytes"], "roof_share": at.get(small, first)["roof_share"],
                     "one_off_s": first["one_off_s"], "available": True})
    return rows


def fastest(rows: pd.DataFrame, column: str = "step_p50_s") -> pd.Series | None:
    """The row with the smallest decode step (None when there is none)."""
    rows = rows.dropna(subset=[column])
    return None if rows.empty else rows.sort_values(column).iloc[0]


def verdict(ratio: float, bound: float, better: str) -> str:
    """met when the ratio is within its bound (at most for lower-is-better, at least for higher), else missed."""
    return "met" if (ratio <= bound if better == "lower" else ratio >= bound) else "missed"


def targets(table: pd.DataFrame, peers: list[dict], batch_sizes: list[int]) -> list[dict]:
    """The measured targets against the yardsticks (see TARGETS in the module docstring), in report order."""
    small = min(batch_sizes)
    ours = table[table["available"] & (table["batch_size"] == small)]
    candidates = {"exact_or_8bit": ours[(ours["agreement"] == "exact") | (ours["weight_bits"] >= 8)],
                  "4bit": ours[ours["weight_bits"] <= 4], "engine_float32": ours[ours["engine_float32"]]}
    measured = {(p["system"], p["batch_size"]): p for p in peers if p["available"]}
    found = []
    for key, (kind, peer_label, bound) in STEP_TARGETS.items():
        best, peer = fastest(candidates[kind]), measured.get((peer_label, small))
        found.append(target_entry(key, small, peer_label, bound, "lower", best, peer, "step_p50_s"))
    key, bound = VLLM_TARGET
    for batch in (b for b in sorted(batch_sizes) if b != small):
        rows = table[table["available"] & (table["batch_size"] == batch) & (table["agreement"] == "exact")]
        best = fastest(rows)
        peer = measured.get(("vLLM compiled", batch)) or measured.get(("vLLM eager", batch))
        found.append(target_entry(key, batch, peer["system"] if peer else "vLLM compiled", bound, "higher", best,
                                  peer, "decode_tok_per_s"))
    return found


def target_entry(key: str, batch: int, peer_label: str, bound: float, better: str, best, peer,
                 column: str) -> dict:
    """One measured target: our best row's `column` against the peer's (ratio ours / peer) and its verdict
    (no_candidate without a variant of ours, no_peer without the yardstick's figure)."""
    entry = {"key": key, "batch_size": batch, "peer": peer_label, "bound": bound, "better": better,
             "ours": None if best is None else str(best["variant"]),
             "ours_token_match_ratio": None if best is None else float(best["token_match_ratio"]),
             "ours_value": None if best is None else float(best[column]),
             "peer_value": None if peer is None else peer[column], "ratio": None}
    if best is None:
        entry["verdict"] = "no_candidate"
    elif peer is None or math.isnan(peer[column]):
        entry["verdict"] = "no_peer"
    else:
        entry["ratio"] = entry["ours_value"] / entry["peer_value"]
        entry["verdict"] = verdict(entry["ratio"], bound, better)
    return entry


def yardsticks(measurements: pd.DataFrame, meta: dict, cfg: dict, table: pd.DataFrame, roof: float,
               batch_sizes: list[int]) -> dict:
    """findings.json's `yardsticks`: the side-by-side rows, the targets, the peers' rows per batch and what ran."""
    for knob in ("quant", "mode"):
        if knob not in measurements:
            measurements = measurements.assign(**{knob: None})
    table = classified(table, meta)
    peers = peer_table(measurements, meta, cfg, roof, batch_sizes)
    notes = meta["notes"]
    return {"rows": side_by_side(table, peers, batch_sizes), "targets": targets(table, peers, batch_sizes),
            "peers": peers, "batch_sizes": batch_sizes,
            "llama_cpp": {k: v for k, v in (notes.get("llama_cpp") or NOT_RUN).items() if k != "files"},
            "vllm": notes.get("vllm_offline") or NOT_RUN}
