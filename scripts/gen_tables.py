"""Generates the architecture tables the native graph builders embed (src/graph/tables/<family>.json)
from timm's own registry: for every architecture a timm model module registers, the keyword arguments
its entrypoint passes to the model class (captured at `build_model_with_cfg`, before any weight is
made) and the config.json `save_for_hf` writes for the bare name (built on the meta device).

    .venv-gen/bin/python scripts/gen_tables.py FAMILY [FAMILY ...]

FAMILY is a file scripts/tables/FAMILY.py that names the timm modules it covers (`MODULES = [...]`)
and may define `serialize(arch, kwargs) -> dict` for arguments that are classes or functions
(act_layer=nn.SiLU, block=Bottleneck, ...); the default serialiser below handles the common ones.
Run by developers when timm is updated, never by CI; the output is committed.
"""
import dataclasses
import functools
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch.nn as nn

import timm
from timm.models._hub import save_config_for_hf

ROOT = Path(__file__).resolve().parent.parent
_BUILDER_KWARGS = {
    'pretrained_cfg', 'pretrained_cfg_overlay', 'feature_cfg', 'pretrained_strict',
    'pretrained_filter_fn', 'kwargs_filter', 'feature_cls',
}


class Captured(Exception):
    def __init__(self, kwargs):
        super().__init__('captured')
        self.kwargs = kwargs


def to_json(v):
    """A JSON form of a model-class argument, naming classes and functions as timm's string
    arguments do (nn.SiLU -> 'silu', LayerNorm2d -> 'layernorm2d')."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: to_json(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, functools.partial):
        return {'partial': to_json(v.func), **{k: to_json(x) for k, x in v.keywords.items()},
                **({'args': to_json(list(v.args))} if v.args else {})}
    if isinstance(v, type):
        return v.__name__.lower()
    if callable(v):
        return getattr(v, '__name__', repr(v)).lower()
    raise TypeError(f'cannot serialise {type(v).__name__}: {v!r}')


def entry_args(module, arch):
    orig = module.build_model_with_cfg

    def capture(model_cls, variant, pretrained, **kwargs):
        raise Captured(kwargs)

    module.build_model_with_cfg = capture
    try:
        timm.models._registry.model_entrypoint(arch)()
    except Captured as c:
        kw = {k: v for k, v in c.kwargs.items() if k not in _BUILDER_KWARGS}
        return kw
    finally:
        module.build_model_with_cfg = orig
    raise RuntimeError(f'{arch}: the entrypoint never called build_model_with_cfg')


def default_config(arch):
    m = timm.create_model(arch, pretrained=False, device='meta')
    with tempfile.TemporaryDirectory() as d:
        save_config_for_hf(m, d + '/config.json')
        return json.loads(Path(d, 'config.json').read_text())


def generate(family):
    spec = importlib.import_module(f'tables.{family}')
    archs = {}
    for modname in spec.MODULES:
        module = importlib.import_module(f'timm.models.{modname}')
        for arch in timm.list_models(module=modname):
            kwargs = entry_args(module, arch)
            ser = getattr(spec, 'serialize', None)
            args = ser(arch, kwargs) if ser else to_json(kwargs)
            archs[arch] = dict(module=modname, args=args, config=default_config(arch))
    out = dict(
        generated_by='scripts/gen_tables.py ' + family,
        timm=timm.__version__,
        modules=list(spec.MODULES),
        archs=dict(sorted(archs.items())),
    )
    path = ROOT / 'src' / 'graph' / 'tables' / f'{family}.json'
    path.write_text(json.dumps(out, indent=1, sort_keys=False) + '\n')
    print(f'{path.relative_to(ROOT)}: {len(archs)} architectures')


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for fam in sys.argv[1:]:
        generate(fam)
