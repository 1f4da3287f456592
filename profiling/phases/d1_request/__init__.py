"""D1 request anatomy: what does one request compute, and how long does each stage take?"""
from .. import WallRow

NAME = "d1_request"  # folder, config section, command, data/trace directory, figure prefix, anchor
FEEDS_ROOFLINE = True  # its timed prefill/decode rows become roofline points in the bottleneck phase
CHAPTER = "D1"
TITLE = {"en": "Request anatomy", "zh": "推理请求基础"}
QUESTION = {"en": "What does one request compute?", "zh": "一次推理到底算了什么？"}
WALL = [
    WallRow("checklist", 2, "✅ 完成最小推理脚本并打印分段 STATS", ("基础", "记录第一份基准数据")),
    WallRow("phases", 1, "D1 推理请求基础", ("请求链路、算子执行顺序", "“一次推理到底算了什么？”")),
    WallRow("sprint", 1, "Day 1 最小可观测推理基线",
            ("完成模型/Tokenizer/metrics 脚手架，记录 load/tokenize/generate/decode 分段耗时",
             "单请求 latency、token/s、硬件环境记录")),
]
