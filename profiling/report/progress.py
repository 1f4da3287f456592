"""The progress wall: the learning plan's checklist, phase table and sprint table, ticked from artifacts.

Every item names the file under reports/ that proves it and a `note` function that reads that file and returns
the key number. An item is ☑ only when the file exists and its note can be computed from it; otherwise ☐ with
"not yet measured" (file missing) or the reason the check failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..io import read_json

DONE, TODO = "☑", "☐"

ENV = "env.json"
D1_FINDINGS = "data/d1_request/findings.json"
D2_FINDINGS = "data/d2_bottlenecks/findings.json"
BATCHING_FINDINGS = "data/d3_batching/findings.json"
KVCACHE_FINDINGS = "data/d3_kvcache/findings.json"
SERVING_FINDINGS = "data/d4_serving/findings.json"
NEXT_STEPS_FINDINGS = "data/d5_next_steps/findings.json"


def _finite(value) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _env_note(env: dict) -> str:
    return f"{env['device']} · {env['dtype']} · {env['device_name']} · torch {env['torch']}"


def _d1_note(f: dict) -> str:
    return (f"e2e p50 {_finite(f['e2e_p50_s']):.3f} s, prefill {_finite(f['prefill_p50_s']) * 1e3:.1f} ms, "
            f"decode step {_finite(f['decode_step_p50_s']) * 1e3:.1f} ms, "
            f"{_finite(f['output_tok_per_s_p50']):.1f} tok/s (n={f['repeats']})")


def _key_sentence(key: str) -> Callable[[dict], str]:
    """A note that is the findings' own one-line statement under `key` (for phases that write one)."""
    def note(findings: dict) -> str:
        text = str(findings[key]).strip()
        if not text:
            raise ValueError(f"{key} is empty")
        return text
    return note


@dataclass(frozen=True)
class Item:
    label: str  # the row's text, as in the learning plan
    proof: str  # path under reports/ of the file that proves it
    note: Callable[[dict], str]  # reads the proof (JSON) and returns the key number
    extra: tuple = ()  # further columns of the row (category, question, …)


@dataclass(frozen=True)
class Status:
    item: Item
    done: bool
    note: str

    @property
    def mark(self) -> str:
        return DONE if self.done else TODO


def evaluate(item: Item, reports: Path) -> Status:
    """☑ with the key number when the proof exists and its note computes; else ☐ and why."""
    path = reports / item.proof
    if not path.exists():
        return Status(item, False, "not yet measured")
    try:
        return Status(item, True, item.note(read_json(path)))
    except (KeyError, TypeError, ValueError) as error:
        return Status(item, False, f"proof incomplete ({type(error).__name__}: {error})")


CHECKLIST = [
    Item("✅ 明确设备/精度假设（CPU vs GPU / FP32 vs FP16）", ENV, _env_note, ("基础", "`config.py` 中记下硬件信息")),
    Item("✅ 完成最小推理脚本并打印分段 STATS", D1_FINDINGS, _d1_note, ("基础", "记录第一份基准数据")),
    Item("✅ 实现动态 batcher（固定等待窗口）", BATCHING_FINDINGS, _key_sentence("dynamic_summary"),
         ("Batch", "记录不同 batch 的 latency & throughput")),
    Item("✅ 给出“牺牲谁换谁”的文字结论", BATCHING_FINDINGS, _key_sentence("who_pays_for_whom"),
         ("Batch", "用真实数字说明")),
    Item("✅ 复现 `past_key_values` on/off 实验", KVCACHE_FINDINGS, _key_sentence("cache_summary"),
         ("KV Cache", "生成表格（prompt 长度 × 时间）")),
    Item("✅ 绘制简化的推理服务流程图", SERVING_FINDINGS, _key_sentence("flow_summary"),
         ("系统", "CPU/Queue/GPU Worker/Decode")),
    Item("✅ 列出下一步扩展方向（Serving、Kernel、系统工程）", NEXT_STEPS_FINDINGS, _key_sentence("directions_summary"),
         ("系统", "结合 Phase D5")),
]

PHASES = [
    Item("D1 推理请求基础", D1_FINDINGS, _d1_note,
         ("请求链路、算子执行顺序", "“一次推理到底算了什么？”", "d1")),
    Item("D2 性能瓶颈认知", D2_FINDINGS, _key_sentence("verdict_summary"),
         ("系统瓶颈、IO、显存访问", "“推理慢一定是算力不够吗？”", "d2")),
    Item("D3 核心优化武器", KVCACHE_FINDINGS, _key_sentence("cache_summary"),
         ("Batching、KV Cache、并行", "“牺牲谁换谁？”", "d3")),
    Item("D4 推理系统架构", SERVING_FINDINGS, _key_sentence("flow_summary"),
         ("调度、队列、多租户", "“一个真实推理服务长什么样？”", "d4")),
    Item("D5 延伸方向", NEXT_STEPS_FINDINGS, _key_sentence("directions_summary"),
         ("性能/工程/系统三条支线", "“下一步怎么深挖？”", "d5")),
]

SPRINT = [
    Item("Day 1 最小可观测推理基线", D1_FINDINGS, _d1_note,
         ("完成模型/Tokenizer/metrics 脚手架，记录 load/tokenize/generate/decode 分段耗时",
          "单请求 latency、token/s、硬件环境记录")),
    Item("Day 2 Batching 权衡", BATCHING_FINDINGS, _key_sentence("who_pays_for_whom"),
         ("实现 batcher（1/4/8 + 等待窗口），对比 latency/throughput，分析 GPU 利用率", "三组 batch 数据、结论性文字")),
    Item("Day 3 KV Cache 认知跃迁", KVCACHE_FINDINGS, _key_sentence("cache_summary"),
         ("实验 prompt_len = 10/50/200 × KVCache on/off，计算每 token latency", "表格 + 结论：“何时救命/何时吃显存”")),
]


def wall(reports: str | Path) -> dict:
    """Every table of the wall, evaluated against the artifacts under `reports`."""
    reports = Path(reports)
    tables = {name: [evaluate(item, reports) for item in items]
              for name, items in (("checklist", CHECKLIST), ("phases", PHASES), ("sprint", SPRINT))}
    tables["done"] = sum(status.done for status in tables["checklist"])
    tables["total"] = len(CHECKLIST)
    return tables


# ---- command line (python -m profiling progress) -------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--reports", default="reports", help="the reports/ directory to read and write")


def cli(args) -> None:
    from .render import render_progress

    render_progress(args.reports)
