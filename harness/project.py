"""Where the project's own files are, for commands run from any directory."""

import os

# The paper configs, gin/NAME.gin each (inspected by the suite, counted by the tests).
PAPER_CONFIGS = (
    "vit_b16",
    "vit_l16",
    "vit_h14",
    "vmoe_s32",
    "vmoe_b16",
    "vmoe_l16",
    "vmoe_h14",
    "vmoe_h14_last5",
    "vmoe_15b",
    "widenet_b",
    "widenet_l",
    "widenet_h",
    "vit22b",
    "softmoe_b16",
    "softmoe_l16",
)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
