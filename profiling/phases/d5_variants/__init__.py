"""D5 variants: "where do I dig next?" Optimisation variants (attention kernel, dtype, int8 weights, static KV cache
+ torch.compile, threads, CUDA graphs) measured on the D1 request against the float32 eager reference, their
timelines side by side, and the next directions ranked by measured headroom.

    variants.py     how each variant is built from the reference, and its generation loop
    experiment.py   the measurements (measurements.csv, meta.json, one trace per variant)
    analysis.py     the variant table, the timeline comparison and findings.json (reads files only)
"""
from .. import WallRow

NAME = "d5_variants"  # folder, config section, command, data/trace directory, figure prefix, anchor
CHAPTER = "D5"
REFERENCE = "reference"  # the float32 eager variant every other is measured against
VLLM = "vllm_offline"  # the variant name of vLLM's rows in measurements.csv (knob `mode`: compiled | eager)
LLAMA_CPP = "llama.cpp"  # the variant name of llama.cpp's rows (knob `quant`: q4_1 | q8_0 | f32)
TITLE = {"en": "Next steps: optimisation variants", "zh": "延伸方向：优化变体"}
QUESTION = {"en": "Where do I dig next?", "zh": "下一步怎么深挖？"}
WALL = [
    WallRow("checklist", 7, "✅ 列出下一步扩展方向（Serving、Kernel、系统工程）", ("系统", "结合 Phase D5"),
            note="directions"),
    WallRow("phases", 5, "D5 延伸方向", ("性能/工程/系统三条支线", "“下一步怎么深挖？”")),
]
