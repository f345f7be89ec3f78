"""timm modules of the `mobilenetv5` family (src/graph/families/mobilenetv5.rs): MobileNet-V5,
Gemma 3n's vision encoder.

Like the EfficientNet / MobileNet entrypoints, `_gen_mobilenet_v5` decodes block-definition strings
before `build_model_with_cfg`; the table records the helper's arguments (channel_multiplier,
group_size, encoder: the `MobileNetV5Encoder` class without a head), the strings it passed to
`decode_arch_def`, and the other model-class kwargs (stem_size, fix_stem, pad_type,
layer_scale_init_value, norm_layer / act_layer named as timm's strings).
"""
import functools
import inspect

import timm.models.mobilenetv5 as _mnv5

MODULES = ['mobilenetv5']

_last = {}


def _wrap():
    orig_decode = _mnv5.decode_arch_def

    @functools.wraps(orig_decode)
    def decode(arch_def, *args, **kwargs):
        _last['arch_def'] = [list(s) for s in arch_def]
        return orig_decode(arch_def, *args, **kwargs)

    _mnv5.decode_arch_def = decode

    orig_gen = _mnv5._gen_mobilenet_v5
    sig = inspect.signature(orig_gen)

    @functools.wraps(orig_gen)
    def gen(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        _last['gen'] = {k: v for k, v in bound.arguments.items()
                        if k not in ('variant', 'pretrained', 'kwargs')}
        _last.pop('arch_def', None)
        return orig_gen(*args, **kwargs)

    _mnv5._gen_mobilenet_v5 = gen


_wrap()


def serialize(arch, kwargs):
    from gen_tables import to_json
    if 'gen' not in _last or 'arch_def' not in _last:
        raise RuntimeError(f'{arch}: no _gen_mobilenet_v5 / decode_arch_def call captured')
    out = {k: to_json(v) for k, v in _last['gen'].items()}
    out['arch_def'] = _last['arch_def']
    # The decoded blocks and the rounding function are redone from the above.
    for k, v in kwargs.items():
        if k in ('block_args', 'round_chs_fn', 'features_only'):
            continue
        if k == 'act_layer' and isinstance(v, functools.partial) and v.func.__name__ == 'GELU':
            out[k] = 'gelu_tanh' if v.keywords.get('approximate') == 'tanh' else 'gelu'
        else:
            out[k] = to_json(v)
    return out
