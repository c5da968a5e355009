"""Binarization in one place: BNN / XNOR-Net layers (:mod:`~detkd.binary.layers`), the layer policy
(:mod:`~detkd.binary.policy`), bit packing and the XNOR/popcount inference path
(:mod:`~detkd.binary.packing`), the native kernel (:mod:`~detkd.binary.kernels`) and the latent-weight
clipping hook (:mod:`~detkd.binary.hooks`). It sits below :mod:`detkd.models`, which builds binarized
detectors from it; packed checkpoint files are the engine's (``detkd.engine.checkpoint.save_packed``).

Names are imported on first use (``from detkd.binary import BinaryConv2d``).
"""

from __future__ import annotations

from detkd._lazy import lazy_exports

_EXPORTS = {
    "BinaryActivation": "layers",
    "BinaryConv2d": "layers",
    "binarize_convs": "layers",
    "clip_latent_weights_": "layers",
    "has_binary_convs": "layers",
    "sign_ste": "layers",
    "stochastic_sign": "layers",
    "DEFAULT_RULE": "policy",
    "LayerRule": "policy",
    "rule_from_table": "policy",
    "select_binary_convs": "policy",
    "PackedBinaryConv2d": "packing",
    "pack_model": "packing",
    "pack_state": "packing",
    "packed_sizes": "packing",
    "unpack_state": "packing",
    "LatentWeightClipHook": "hooks",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
