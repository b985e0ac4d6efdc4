"""Class-activation maps: where a classifier looked (Grad-CAM through Captum).

    python -m fruitnet.predict ckpt_path=best.ckpt input=photos/ explain=true
    python -m fruitnet.eval ckpt_path=best.ckpt data=chest_xray data.root=...   # explain=auto

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a conv layer's output by the mean gradient
of the class score over that channel, sums the channels and keeps the positive part: a coarse map
(6 x 6 for the basic CNN at 100 px, 7 x 7 for ResNet-50 and ProxylessNAS at 224 px) of the regions
that raise the class score. For a global-average-pool head (ResNet-50, ProxylessNAS) it equals
CAM exactly; behind the basic CNN's flattening head it is an approximation (a position-specific
weight is replaced by the channel's mean gradient). Captum's `LayerGradCam` computes it (its own
hooks, on the layer the model registry names as ``ModelSpec.cam_layer``) and
`LayerAttribution.interpolate` upsamples it bilinearly to the model's input size. Captum is an
optional extra (``pip install 'fruitnet[explain]'``), imported only when maps are made: it is pure
Python on top of torch, where the grad-cam package would bring OpenCV, SciPy and scikit-learn along.

Two classes are the exception (`CamExplainer.maps(contrast=True)`, eval's mistakes grid and
`cam_mean.png`): when one class is only the absence of the other's evidence (NORMAL vs
PNEUMONIA), every ReLU'd map of that class is zero. There the map is the signed, un-ReLU'd
Grad-CAM of the logit difference z_c - z_other (the log-odds of c): red where the image speaks for
c, blue where it speaks for the other class; the two classes' maps are each other's negative.

Images go in as predict and the datamodule feed them (uint8, already resized/cropped by
`fruitnet.data.io.load_image`), are normalised with the checkpoint's mean/std (`BatchTransform`,
norm=true or false alike) and go through the network in batches, in fp32, on the CPU or a GPU.
`to_image_geometry` puts an input-sized map back onto the original image: stretched back for
norm=false (squash), and onto the centre crop the network saw for norm=true (NaN outside it).

Modules: `gradcam` (the extra, the layer, the maps), `geometry` (map onto image), `figures`
(matplotlib), `overlays` (predict's PNGs), `focus` (the share of a map's mass in the centre of
the image: a measure of border and marker shortcuts).
"""

from fruitnet.explain.figures import mean_map_figure, mistakes_cam_figure, overlay_figure
from fruitnet.explain.focus import REGION, ShareRecorder, central_share, summarize
from fruitnet.explain.geometry import (
    DISPLAY_SIDE,
    display_image,
    input_region,
    to_image_geometry,
)
from fruitnet.explain.gradcam import (
    INSTALL_HINT,
    CamExplainer,
    ExplainUnavailableError,
    available,
    cam_layer_of,
    class_mean_maps,
    find_cam_layer,
    normalize_maps,
    require,
    sample_evenly,
    wanted,
)
from fruitnet.explain.overlays import overlay_names, write_overlays

__all__ = [
    "DISPLAY_SIDE",
    "INSTALL_HINT",
    "REGION",
    "ShareRecorder",
    "CamExplainer",
    "ExplainUnavailableError",
    "available",
    "cam_layer_of",
    "central_share",
    "class_mean_maps",
    "display_image",
    "find_cam_layer",
    "input_region",
    "mean_map_figure",
    "mistakes_cam_figure",
    "normalize_maps",
    "overlay_figure",
    "overlay_names",
    "require",
    "sample_evenly",
    "summarize",
    "to_image_geometry",
    "wanted",
    "write_overlays",
]
