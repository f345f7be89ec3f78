"""timm modules of the `nfnet` family (src/graph/families/nfnet.rs).

nfnet.py's entrypoints pass an `NfCfg` dataclass as `model_cfg`; `NormFreeNet.__init__` overlays any
other keyword argument onto it (`replace(cfg, **kwargs)`), so its fields are written as the model's
own arguments and config.json's `model_args` override them key by key, as in timm.
"""
import dataclasses

import gen_tables

MODULES = ['nfnet']


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = kwargs.pop('model_cfg')
    fields = {f.name: gen_tables.to_json(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return {**fields, **gen_tables.to_json(kwargs)}
