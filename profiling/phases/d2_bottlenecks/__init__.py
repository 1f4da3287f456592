"""D2 bottlenecks: is slow inference always a lack of compute? Measured ceilings, roofline, time breakdown."""
from .. import WallRow

NAME = "d2_bottlenecks"  # folder, config section, command, data/trace directory, figure prefix, anchor
ROOF = "ceilings.json"  # its data file with the measured roofs (bandwidth, FLOP/s), which other phases compare with
CHAPTER = "D2"
TITLE = {"en": "Bottlenecks", "zh": "性能瓶颈认知"}
QUESTION = {"en": "Is slow inference always a lack of compute?", "zh": "推理慢一定是算力不够吗？"}
WALL = [
    WallRow("phases", 2, "D2 性能瓶颈认知", ("系统瓶颈、IO、显存访问", "“推理慢一定是算力不够吗？”")),
]
