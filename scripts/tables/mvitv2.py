"""timm modules of the `mvitv2` family (src/graph/families/mvitv2.rs).

mvitv2.py's entrypoints pass a `MultiScaleVitCfg` dataclass as `model_cfg`; its fields (after
`__post_init__` expanded embed_dim, num_heads and the adaptive stride_kv per stage) are written as
the model's own arguments.
"""
import dataclasses

import gen_tables

MODULES = ['mvitv2']


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = kwargs.pop('model_cfg')
    out = {f.name: gen_tables.to_json(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return {**out, **gen_tables.to_json(kwargs)}
