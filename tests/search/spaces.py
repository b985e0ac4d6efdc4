"""The tiny search space the search tests share (a supernet of 2 stages that builds in
milliseconds)."""

TINY_SPACE = {
    "first_conv": 8,
    "first_block": 8,
    "widths": [8, 16],
    "depths": [2, 2],
    "strides": [2, 2],
    "candidates": ["3x3_MBConv3", "5x5_MBConv3", "3x3_MBConv6", "zero"],
    "feature_mix": 32,
}
