"""D3 batching: who pays for whom? Static batches, the engine against generate, a dynamic batcher under load."""
from .. import WallRow

NAME = "d3_batching"  # folder, config section, command, data/trace directory, figure prefix, anchor
FEEDS_ROOFLINE = True  # its timed prefill/decode rows become roofline points in the bottleneck phase
CHAPTER = "D3"
TITLE = {"en": "Batching", "zh": "批处理"}
QUESTION = {"en": "Who pays for whom?", "zh": "牺牲谁换谁？"}
WALL = [
    WallRow("checklist", 3, "✅ 实现动态 batcher（固定等待窗口）", ("Batch", "记录不同 batch 的 latency & throughput"),
            note="dynamic"),
    WallRow("checklist", 4, "✅ 给出“牺牲谁换谁”的文字结论", ("Batch", "用真实数字说明")),
    WallRow("sprint", 2, "Day 2 Batching 权衡",
            ("实现 batcher（1/4/8 + 等待窗口），对比 latency/throughput，分析 GPU 利用率", "三组 batch 数据、结论性文字")),
]
