"""timm modules of the `maxxvit` family (src/graph/families/maxxvit.rs).

timm's MaxxVit entrypoints pass one `MaxxVitCfg` dataclass (`model_cfg`) holding a conv and a
transformer sub-config. The table flattens it the way `MaxxVit.__init__`'s `_overlay_kwargs`
reads keyword arguments, so config.json's model_args (`transformer_window_size`,
`conv_attn_layer`, `depths`, ...) override table entries key by key: the base fields as they
are, the conv fields prefixed `conv_`, the transformer fields `transformer_`. Values are the
dataclasses' after `__post_init__` (norm defaults resolved), as `dataclasses.replace` sees them.
"""
import dataclasses

from gen_tables import to_json

MODULES = ['maxxvit']


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = kwargs.pop('model_cfg')
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in ('conv_cfg', 'transformer_cfg'):
            prefix = f.name.split('_')[0] + '_'
            for g in dataclasses.fields(v):
                out[prefix + g.name] = to_json(getattr(v, g.name))
        else:
            out[f.name] = to_json(v)
    out.update(to_json(kwargs))
    return out
