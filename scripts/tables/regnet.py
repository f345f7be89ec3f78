"""timm modules of the `regnet` family (src/graph/families/regnet.rs).

regnet.py's entrypoints pass a `RegNetCfg` as `model_cfg`; `RegNet.__init__` overlays any other
keyword argument onto it (`replace(cfg, **kwargs)`), so its fields are written as the model's own
arguments: config.json's `model_args` then override them key by key, as in timm.
"""
import gen_tables

MODULES = ['regnet']


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = gen_tables.to_json(kwargs.pop('model_cfg'))
    return {**cfg, **gen_tables.to_json(kwargs)}
