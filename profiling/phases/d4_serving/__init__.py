"""D4 serving: what does a real inference service look like? The OpenAI-compatible service of profiling/serving
under load (policies, tenants), beside vLLM's server, and its flow drawn from measured spans.

    experiment.py   starts the service (and the reference server), drives the load, writes the data contract
    analysis.py     the policy table, goodput, the tenant table, the reference comparison, the flow's edge times
    view.py         charts: flow diagram, latency and goodput versus rate, queue depth, swimlane
"""
from .. import WallRow

NAME = "d4_serving"  # folder, config section, command, data/trace directory, figure prefix, anchor
CHAPTER = "D4"
TITLE = {"en": "Serving", "zh": "推理系统架构"}
QUESTION = {"en": "What does a real inference service look like?", "zh": "一个真实推理服务长什么样？"}
WALL = [
    WallRow("checklist", 6, "✅ 绘制简化的推理服务流程图", ("系统", "CPU/Queue/GPU Worker/Decode"), note="flow",
            artifact=f"figures/{NAME}_flow.png"),  # the diagram itself, drawn from the measured spans
    WallRow("phases", 4, "D4 推理系统架构", ("调度、队列、多租户", "“一个真实推理服务长什么样？”")),
]
