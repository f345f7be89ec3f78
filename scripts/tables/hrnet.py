"""timm modules of the `hrnet` family (src/graph/families/hrnet.rs).

hrnet.py's entrypoints pass one of its `cfg_cls` dicts as `model_cfg`; `HighResolutionNet.__init__`
overlays every other keyword argument onto it (`cfg.update(**kwargs)`, one level deep), so its keys
(`stem_width`, `stage1`..`stage4`) and the `_ssld` entrypoints' `head_conv_bias` are written as the
model's own arguments. `_create_hrnet` also hands the builder `features_only` (its generic feature
wrapper switch), which is not a model argument.
"""
import gen_tables

MODULES = ['hrnet']


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = kwargs.pop('model_cfg')
    kwargs.pop('features_only', None)
    return {**gen_tables.to_json(dict(cfg)), **gen_tables.to_json(kwargs)}
