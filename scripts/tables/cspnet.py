"""timm modules of the `cspnet` family (src/graph/families/cspnet.rs).

cspnet.py's entrypoints pass a `CspModelCfg` dataclass as `model_cfg`; `CspNet.__init__` overlays
any other keyword argument onto it (`replace(cfg, **kwargs)`), so its fields (`stem`, `stages`,
`act_layer`, `norm_layer`, `aa_layer`, `zero_init_last`) are written as the model's own
arguments. `CspStagesCfg.__post_init__` has already expanded every per-stage field to one value
per stage.
"""
import dataclasses

import gen_tables

MODULES = ['cspnet']


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = kwargs.pop('model_cfg')
    out = {f.name: gen_tables.to_json(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return {**out, **gen_tables.to_json(kwargs)}
