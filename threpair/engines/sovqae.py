"""The SOVQAE engine: the identity's trained network (inference.IdentityModel) as an engine.

It runs at the network's own resolution (`resolution`); the pipeline cuts crops at that size
for it. Its code hysteresis and latent-distance confidence are IdentityModel's.
"""

from __future__ import annotations

from dataclasses import replace

from threpair.errors import InputError
from threpair.identity import Identity
from threpair.inference import IdentityModel, resolve_device


def network_engine(
    identity: Identity, device: str = "auto", hysteresis: float = 0.0, precision: str = "auto"
) -> IdentityModel:
    """The identity's network ready for restore; InputError if it has none."""
    if identity.network is None or identity.network_config is None:
        raise InputError("this identity has no trained network (train-identity --minutes N)")
    cfg = identity.network_config
    meta = {**identity.network_meta, "crop": replace(identity.crop, size=cfg.resolution).to_dict()}
    return IdentityModel(identity.network, cfg, meta, resolve_device(device), hysteresis, precision)
