"""Consecutive scanned stacks applied in order: a stack that is not one repeating pattern.

V-MoE's Last-n puts its MoE layers in the last n odd blocks only, so no period short of the
whole depth repeats. Scanned as two stacks, a dense prefix (one block scanned) and a
dense+MoE suffix (one pair scanned), it compiles three blocks whatever its depth.
"""

from collections.abc import Sequence

from praxis import base_layer, pax_fiddle

JTensor = base_layer.JTensor
LayerTpl = pax_fiddle.Config[base_layer.BaseLayer]


class SegmentedStack(base_layer.BaseLayer):
    """Applies `segments` (praxis StackedTransformerRepeated) one after another.

    Their params are 'segment_k/repeat/sub/...' (models/scan_layout.py reads that layout).
    """

    segments: Sequence[LayerTpl] = ()

    def setup(self) -> None:
        self.create_children("segment", [tpl.clone() for tpl in self.segments])

    def __call__(self, inputs: JTensor, paddings: JTensor) -> JTensor:
        x = inputs
        for segment in self.segment:
            x = segment(x, paddings)
        return x
