#!/usr/bin/env python3
"""Full-size check of the native graphs against timm (never run by CI): for every architecture the
given timm modules register with fewer than --max-params parameters, builds the model at timm's
default arguments with random weights made like the fixtures (constants randomised, BatchNorm
calibrated), saves it as timm does (save_for_hf: config.json + model.safetensors), loads that folder
through libtimm's C ABI (ctypes on libtimm.so) and compares the logits with timm's:
|libtimm - timm| <= 1e-4 * max|timm| on a batch of 2.

    scripts/setup-generator-env && cargo build --release --lib
    .venv-gen/bin/python scripts/check_fullsize.py --modules resnet,convnext [--only NAME,...]
        [--skip NAME,...] [--max-params 300e6] [--lib target/release/libtimm.so] [--json out.json] [--f64]

Prints one row per architecture and a table per module: architectures, built, matching timm.
An architecture libtimm refuses is listed with the status and the reason it gave. With --f64, a
row over the tolerance is measured against timm's float64 result: libtimm's error, timm's own float32
error and ONNX Runtime's on timm's torch.onnx export of the same model. Where libtimm is no farther
from float64 than one of those float32 peers, the row is listed as `f32 noise` (built, not counted as
matching): the random weights amplify float32 rounding, not a fault of the graph.

A row still over the tolerance (MISMATCH or f32 noise) is then made again with the BatchNorm
statistics kept as measured (no jitter): every BatchNorm then normalises its input, the random network
is well conditioned, and float32 rounding is no longer amplified with depth. Where libtimm matches
timm there, the row counts as matching (`match, exact BN`); both differences are listed. Where it still
misses, the float64 comparison is made at those statistics too: `f32 noise, exact BN` when libtimm is
no farther from float64 than a float32 peer there (built, not counted as matching).
"""
import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

TOL = 1e-4
# Architecture prefixes whose `*_enc` forward is a token sequence.
TOKEN_TOWERS = ('qwen3_vit_', 'deepseek_vit_', 'gemma4_vit_')


class Refused(RuntimeError):
    """libtimm refused the folder (its status message)."""


class Lib:
    """The handful of C functions the check needs."""

    def __init__(self, path):
        self.l = ctypes.CDLL(str(path))
        L = self.l
        L.timm_options_new.restype = ctypes.c_void_p
        L.timm_options_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        L.timm_options_free.argtypes = [ctypes.c_void_p]
        L.timm_create_model_with_options.restype = ctypes.c_void_p
        L.timm_create_model_with_options.argtypes = [ctypes.c_char_p, ctypes.c_bool, ctypes.c_void_p]
        L.timm_last_error.restype = ctypes.c_char_p
        L.timm_free.argtypes = [ctypes.c_void_p]
        L.timm_model_output_dim.restype = ctypes.c_size_t
        L.timm_model_output_dim.argtypes = [ctypes.c_void_p]
        L.timm_infer.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64),
                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]

    def run(self, folder, x, options=()):
        """Logits for x (numpy NCHW float32), or raises RuntimeError with libtimm's message."""
        import numpy as np
        L = self.l
        opts = L.timm_options_new()
        for k, v in options:
            L.timm_options_set(opts, k.encode(), v.encode())
        m = L.timm_create_model_with_options(f'local:{folder}'.encode(), True, opts)
        L.timm_options_free(opts)
        if not m:
            raise Refused(L.timm_last_error().decode())
        try:
            x = np.ascontiguousarray(x, dtype=np.float32)
            shape = (ctypes.c_int64 * 4)(*x.shape)
            dim = L.timm_model_output_dim(m)
            out = np.zeros((x.shape[0], dim), dtype=np.float32)
            st = L.timm_infer(m, x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), shape, 4,
                              out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size)
            if st != 0:
                raise Refused(L.timm_last_error().decode())
            return out
        finally:
            L.timm_free(m)


def param_count(arch):
    import timm
    m = timm.create_model(arch, pretrained=False, device='meta')
    return sum(p.numel() for p in m.parameters())


def check(lib, arch, work, seed=0, f64=False, bn_jitter=True):
    import numpy as np
    import torch
    import timm
    from fixtures.common import calibrate_batchnorm, randomize_constants, smooth_images
    if arch.startswith('coat_'):
        # CoaT shares modules under several names, which save_for_hf's safetensors writer
        # refuses; the fixture generator's patch gives each name its own copy (timm reloads the
        # folder strictly).
        import fixtures.family_coat  # noqa: F401
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    gen = torch.Generator().manual_seed(seed + 1)
    cfg = model.pretrained_cfg
    size = tuple(cfg['input_size'])
    randomize_constants(model, gen)
    calibrate_batchnorm(model, size, cfg['mean'], cfg['std'], gen, batches=2, batch_size=2, jitter=bn_jitter)
    model.eval()
    x = smooth_images(2, size, cfg['mean'], cfg['std'], torch.Generator().manual_seed(seed + 2))
    # The VLM encoder towers have no head: their forward is a token sequence (option output=tokens),
    # compared as N rows of T * D values like logits.
    tokens = arch.endswith('_enc') and arch.startswith(TOKEN_TOWERS)
    flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    with torch.no_grad():
        ref = flat(model(x).numpy())
    folder = Path(work) / arch
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    # One-off folders: no entry in the user's optimised-model cache.
    options = [('graph', 'native'), ('graph_cache', 'false')] + ([('output', 'tokens')] if tokens else [])
    got = lib.run(folder, x.numpy(), options=options)
    scale = float(np.abs(ref).max()) or 1.0
    d = float(np.abs(got - ref).max()) / scale
    if not f64 or d <= TOL:
        return d, None
    # timm's own float32 rounding, amplified by the random weights (attention logits in the
    # thousands, growing residual streams), can exceed the tolerance: measured against float64,
    # with ONNX Runtime's float32 rounding on timm's own torch.onnx export of the same model.
    ort_ref = ort_on_export(model, x, Path(work) / f'{arch}.onnx')
    with torch.no_grad():
        ref64 = flat(model.double()(x.double()).numpy())
    if ort_ref is not None:
        ort_ref = flat(ort_ref)
    del model
    s64 = float(np.abs(ref64).max()) or 1.0
    err = lambda a: float(np.abs(a - ref64).max()) / s64  # noqa: E731
    return d, (err(ref), err(got), err(ort_ref) if ort_ref is not None else None)


def ort_on_export(model, x, path):
    """ONNX Runtime (Python, CPU) on timm's torch.onnx export of `model`; None if it cannot export."""
    import torch
    import onnxruntime as ort
    try:
        with torch.no_grad():
            torch.onnx.export(model, x, str(path), opset_version=18, dynamo=False,
                              input_names=['input'], output_names=['output'])
    except Exception as e:  # noqa: BLE001 (some models do not trace)
        print(f'  (torch.onnx.export failed: {type(e).__name__}: {str(e)[:120]})', flush=True)
        return None
    so = ort.SessionOptions()
    sess = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
    return sess.run(None, {'input': x.numpy()})[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--modules', required=True, help='comma list of timm model modules (resnet, vision_transformer, ...)')
    ap.add_argument('--only', help='comma list of architectures (default: every one of the modules)')
    ap.add_argument('--skip', help='comma list of architectures not to check (e.g. those an earlier run did)')
    ap.add_argument('--max-params', type=float, default=300e6)
    ap.add_argument('--lib', default=str(REPO / 'target' / 'release' / 'libtimm.so'))
    ap.add_argument('--json', help='write the rows to this file')
    ap.add_argument('--f64', action='store_true',
                    help="a row that misses the tolerance is measured against timm in float64, with timm's own float32 "
                         "error and ONNX Runtime's on timm's export as peers (f32 noise when libtimm's is no larger)")
    args = ap.parse_args()
    os.environ.setdefault('TIMM_ORT_LIBRARY', str(REPO / '.onnxruntime' / 'cpu' / 'libonnxruntime.so.1.31.1'))
    import warnings
    warnings.filterwarnings('ignore')
    import torch
    import timm
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    lib = Lib(args.lib)
    only = set(args.only.split(',')) if args.only else None
    skip = set(args.skip.split(',')) if args.skip else set()
    rows = []
    for module in args.modules.split(','):
        for arch in timm.list_models(module=module):
            if (only and arch not in only) or arch in skip:
                continue
            t0 = time.time()
            row = dict(module=module, arch=arch)
            try:
                n = param_count(arch)
                row['params'] = n
                if n >= args.max_params:
                    row['status'] = 'skipped (>= max params)'
                    rows.append(row)
                    continue
                with tempfile.TemporaryDirectory() as work:
                    d, noise = check(lib, arch, work, f64=args.f64)
                row['rel_diff'] = d
                row['status'] = 'match' if d <= TOL else 'MISMATCH'
                if noise is not None:
                    row['timm_f32_vs_f64'], row['libtimm_vs_f64'], row['ort_export_vs_f64'] = noise
                    peers = [e for e in (noise[0], noise[2]) if e is not None]
                    if noise[1] <= max(peers):
                        row['status'] = 'f32 noise'
                    ort_txt = f', ORT on timm\'s export vs f64 {noise[2]:.2e}' if noise[2] is not None else ''
                    row['reason'] = (f'timm f32 vs f64 {noise[0]:.2e}, libtimm vs f64 {noise[1]:.2e}{ort_txt}')
                    with tempfile.TemporaryDirectory() as work:
                        d_exact, noise_exact = check(lib, arch, work, f64=True, bn_jitter=False)
                    row['rel_diff_exact_bn'] = d_exact
                    row['reason'] += f'; with exact BatchNorm statistics {d_exact:.2e}'
                    if d_exact <= TOL:
                        row['status'] = 'match, exact BN'
                    elif noise_exact is not None:
                        # Still over with exact statistics: the same float64 comparison there.
                        t32, l64, o64 = noise_exact
                        row['exact_bn_vs_f64'] = dict(timm_f32=t32, libtimm=l64, ort_export=o64)
                        row['reason'] += f' (timm f32 vs f64 {t32:.2e}, libtimm vs f64 {l64:.2e})'
                        if l64 <= max(e for e in (t32, o64) if e is not None):
                            row['status'] = 'f32 noise, exact BN'
            except Refused as e:
                row['status'] = 'refused'
                row['reason'] = str(e).splitlines()[0][:300]
            except Exception as e:  # timm itself failed to build or save the model
                row['status'] = 'timm error'
                row['reason'] = f'{type(e).__name__}: {e}'[:300]
                traceback.print_exc(limit=1)
            row['seconds'] = round(time.time() - t0, 1)
            rows.append(row)
            print(f"{module:<24} {arch:<48} {row['status']:<10} "
                  f"{row.get('rel_diff', float('nan')):.2e} {row.get('reason', '')}", flush=True)
            if args.json:  # after every row, so a sweep cut short keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=1) + '\n')
    print()
    print('| module | architectures (< max params) | built | matching timm | of which with exact BN |')
    print('|---|---|---|---|---|')
    for module in args.modules.split(','):
        mine = [r for r in rows if r['module'] == module and not r['status'].startswith('skipped')]
        built = [r for r in mine if r['status'] in ('match', 'match, exact BN', 'MISMATCH', 'f32 noise',
                                                    'f32 noise, exact BN')]
        ok = [r for r in mine if r['status'].startswith('match')]
        exact = [r for r in ok if r['status'] == 'match, exact BN']
        print(f'| {module} | {len(mine)} | {len(built)} | {len(ok)} | {len(exact)} |')


if __name__ == '__main__':
    main()
