"""timm modules of the `efficientnet` family (src/graph/families/efficientnet.rs): EfficientNet,
MobileNet and HardCoRe-NAS.

timm's EfficientNet / MobileNet entrypoints call a `_gen_*` helper that decodes block-definition
strings (`ir_r2_k3_s2_e6_c24_se0.25`) into block kwargs before `build_model_with_cfg`. The table
records what the Rust builder needs to redo that exactly, also when config.json's model_args
override a generator argument (depth_multiplier, channel_multiplier, ...):
  * `gen`: the `_gen_*` helper's name (without `_gen_`) and its bound arguments (channel_multiplier,
    depth_multiplier, group_size, channel_divisor, fix_stem_head, as the entrypoint passed them);
  * `arch_def`, `depth_trunc`, `fix_first_last`: what the helper passed to `decode_arch_def`;
  * the other model-class kwargs (num_features, fix_stem, act_layer, bn_eps, pad_type, stem_size,
    head_bias, the SqueezeExcite partial as se_gate / se_force_act / se_round_chs / se_from_exp);
    num_features and fix_stem are timm's values for the entrypoint's own multipliers.
"""
import functools
import inspect

import timm.models.efficientnet as _effnet
import timm.models.hardcorenas as _hardcorenas
import timm.models.mobilenetv3 as _mnv3

# HardCoRe-NAS is timm's MobileNetV3 class over block strings too (its own `_gen_hardcorenas`).
MODULES = ['efficientnet', 'mobilenetv3', 'hardcorenas']

_last = {}


def _wrap_decode(module):
    orig = module.decode_arch_def
    sig = inspect.signature(orig)

    @functools.wraps(orig)
    def decode(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        dm = a['depth_multiplier']
        _last['decode'] = dict(
            arch_def=[list(s) for s in a['arch_def']],
            depth_multiplier=list(dm) if isinstance(dm, tuple) else dm,
            depth_trunc=a['depth_trunc'],
            experts_multiplier=a['experts_multiplier'],
            fix_first_last=a['fix_first_last'],
        )
        return orig(*args, **kwargs)

    module.decode_arch_def = decode


def _wrap_gens(module):
    for name, fn in list(vars(module).items()):
        if not (name.startswith('_gen_') and callable(fn)):
            continue
        sig = inspect.signature(fn)

        def make(fn=fn, name=name, sig=sig):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                params = {k: v for k, v in bound.arguments.items()
                          if k not in ('variant', 'pretrained', 'kwargs')}
                _last['gen'] = dict(name=name[len('_gen_'):], params=params)
                _last.pop('decode', None)
                return fn(*args, **kwargs)
            return gen

        setattr(module, name, make())


for _m in (_effnet, _mnv3, _hardcorenas):
    _wrap_decode(_m)
    _wrap_gens(_m)


def _name(v):
    """timm's string name of an activation / gate given as a class, function or string."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, type):
        return v.__name__.lower()
    return getattr(v, '__name__', repr(v)).lower()


def serialize(arch, kwargs):
    from gen_tables import to_json
    gen = _last.get('gen')
    dec = _last.get('decode')
    if gen is None or dec is None:
        raise RuntimeError(f'{arch}: no _gen_* / decode_arch_def call captured')
    out = dict(gen=gen['name'])
    for k, v in gen['params'].items():
        out[k] = to_json(v)
    out['arch_def'] = dec['arch_def']
    out['depth_trunc'] = dec['depth_trunc']
    out['fix_first_last'] = dec['fix_first_last']
    if dec['experts_multiplier'] != 1:
        out['experts_multiplier'] = dec['experts_multiplier']
    # The decoded blocks and the rounding function are redone from the above; features_only is
    # the builder's own plumbing.
    derived = {'block_args', 'round_chs_fn', 'features_only'}
    for k, v in kwargs.items():
        if k in derived:
            continue
        if k == 'norm_layer':
            if isinstance(v, functools.partial) and v.func.__name__ == 'BatchNorm2d':
                if 'eps' in v.keywords:
                    out['bn_eps'] = v.keywords['eps']
            else:
                out['norm_layer'] = to_json(v)
        elif k == 'act_layer':
            out['act_layer'] = _name(v)
        elif k == 'se_layer':
            if isinstance(v, functools.partial) and v.func.__name__ == 'SqueezeExcite':
                kw = v.keywords
                out['se_gate'] = _name(kw.get('gate_layer', 'sigmoid'))
                out['se_force_act'] = _name(kw.get('force_act_layer'))
                out['se_round_chs'] = kw.get('rd_round_fn') is not None
            else:
                out['se_layer'] = to_json(v)
        elif k == 'pruned' and v:
            # As for the pruned ResNets: timm's pruning file's conv widths (the weights' with weights).
            from tables.resnet import _pruned_widths
            out['pruned'] = _pruned_widths(arch)
        else:
            out[k] = to_json(v)
    return out
