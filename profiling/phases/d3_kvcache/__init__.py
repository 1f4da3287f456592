"""D3 KV cache: when does the KV cache save you, and when does it eat your memory?"""
from .. import WallRow

NAME = "d3_kvcache"  # folder, config section, command, data/trace directory, figure prefix, anchor
FEEDS_ROOFLINE = True  # its timed prefill/decode rows become roofline points in the bottleneck phase
CHAPTER = "D3"
TITLE = {"en": "KV cache", "zh": "KV Cache"}
QUESTION = {"en": "When does the KV cache save you, and when does it eat your memory?",
            "zh": "KV Cache 何时救命、何时吃显存？"}
WALL = [
    WallRow("checklist", 5, "✅ 复现 `past_key_values` on/off 实验", ("KV Cache", "生成表格（prompt 长度 × 时间）")),
    WallRow("phases", 3, "D3 核心优化武器", ("Batching、KV Cache、并行", "“牺牲谁换谁？”")),
    WallRow("sprint", 3, "Day 3 KV Cache 认知跃迁",
            ("实验 prompt_len = 10/50/200 × KVCache on/off，计算每 token latency", "表格 + 结论：“何时救命/何时吃显存”")),
]
