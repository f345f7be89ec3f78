"""timm modules of the `levit` family (src/graph/families/levit.rs).

`create_levit` picks the model class (`LevitDistilled` unless the entrypoint passes
`distilled=False`) before `build_model_with_cfg`; the table records that choice as `distilled`,
the keyword `create_levit` itself takes, so model_args can override it as timm's would.
"""
import timm

from gen_tables import to_json

MODULES = ['levit']


def serialize(arch, kwargs):
    out = to_json(kwargs)
    out['distilled'] = hasattr(timm.create_model(arch, pretrained=False, device='meta'), 'head_dist')
    return out
