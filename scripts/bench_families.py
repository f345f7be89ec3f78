#!/usr/bin/env python3
"""Per-family speed check (never run by CI): one architecture per timm module, libtimm's native graph
(release libtimm.so through the C ABI, benches/driver.c) against ONNX Runtime on timm's own torch.onnx
export of the same folder, at batch 1 and batch 8 on 2 intra-op threads. Two peers, two ratios
(ORT / libtimm; >= 1.00: libtimm at least as fast):

  paired   one process holds both: libtimm's native graph and the same ONNX Runtime library running
           the export (a peer folder of config.json + model.onnx, option graph=onnx, the same session
           options). The driver alternates one call of each (`driver ab`), so a neighbour's burst or
           the machine's drift falls on both members of a pair; the ratio is the median of the
           per-pair ratios over every repeat, with the middle half of them as its range. On a shared
           2-core machine this is the figure that holds from run to run. A median below 1.00 comes
           with a one-sided sign test (p: the chance that libtimm loses at least that many pairs
           when neither is faster); the model run against itself gives medians of 0.99-1.03.
  python   ONNX Runtime's Python API on the export (scripts/bench_peers.py run-ort), a fresh process
           per measurement alternating with the driver's `run`: each repeat's median against the
           other's, the median over repeats and their range. Noisier: the two never run at once.

    cargo build --release --lib && ln -sf libtimm.so target/release/libtimm.so.0 &&
    cc -O2 -pthread -Iinclude benches/driver.c -o .bench/bin/driver \\
        -Ltarget/release -ltimm -lm -Wl,-rpath,$PWD/target/release
    .venv-gen/bin/python scripts/bench_families.py --issue 18|15|16|17|24 [--archs a,b] [--repeats 3]
        [--peers paired,python] [--json out.json]

The models are made as the main benchmark makes them (scripts/bench_models.py: timm defaults, random
weights, BatchNorm calibrated, folder written by save_for_hf, export checked against timm) under
.bench/. Where a module's smallest architecture does not export, the next smallest stands in (three
tried); a module whose three smallest all fail to export is listed with the exporter's errors.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

# One architecture per timm module: the smallest commonly used variant at timm's default input size.
ISSUES = {
    18: {
        'swin_transformer': 'swin_tiny_patch4_window7_224',
        'swin_transformer_v2': 'swinv2_tiny_window8_256',
        'swin_transformer_v2_cr': 'swinv2_cr_tiny_ns_224',
        'maxxvit': 'maxvit_tiny_tf_224',
        'hiera': 'hiera_tiny_224',
        'pvt_v2': 'pvt_v2_b1',
        'twins': 'twins_pcpvt_small',
        'metaformer': 'caformer_s18',
        'mambaout': 'mambaout_tiny',
        'inception_next': 'inception_next_tiny',
        'rdnet': 'rdnet_tiny',
        'starnet': 'starnet_s1',
        'fasternet': 'fasternet_t0',
        'efficientvit_mit': 'efficientvit_b1',
        'efficientvit_msra': 'efficientvit_m0',
        'levit': 'levit_128s',
        'edgenext': 'edgenext_small',
        'tiny_vit': 'tiny_vit_5m_224',
        'efficientformer': 'efficientformer_l1',
        'efficientformer_v2': 'efficientformerv2_s0',
        'shvit': 'shvit_s1',
        'davit': 'davit_tiny',
        'focalnet': 'focalnet_tiny_srf',
        'gcvit': 'gcvit_xxtiny',
        'nextvit': 'nextvit_small',
    },
}

# The other family issues list their modules only: each is benchmarked on its smallest registered
# architecture (fewest parameters, timm's `test_*` models left out), chosen from timm at run time;
# where that one's export fails, on the next smallest.
MODULES = {
    15: ['resnet', 'sknet', 'senet', 'resnest', 'res2net', 'resnetv2', 'nfnet', 'densenet', 'inception_v3',
         'inception_v4', 'inception_resnet_v2', 'xception', 'xception_aligned', 'vgg', 'dla', 'dpn', 'cspnet',
         'hrnet', 'vovnet', 'selecsls', 'tresnet', 'regnet', 'convnext'],
    16: ['efficientnet', 'mobilenetv3', 'mobilenetv5', 'ghostnet', 'repghost', 'rexnet', 'hgnet', 'repvit', 'byobnet',
         'mobilevit', 'fastvit'],
    17: ['vision_transformer', 'eva', 'vision_transformer_relpos', 'vision_transformer_hybrid', 'beit', 'cait', 'xcit',
         'deit'],
    24: ['mlp_mixer', 'convmixer', 'sequencer', 'vision_transformer_sam', 'hieradet_sam2', 'qwen3_vit', 'gemma4_vit',
         'deepseek_vit', 'naflexvit', 'vitamin', 'volo', 'crossvit', 'pit', 'tnt', 'convit', 'visformer', 'nest', 'coat',
         'mvitv2', 'byoanet', 'iformer', 'swiftformer', 'lowformer', 'efficientvim', 'cpubone', 'csatv2', 'cspnext',
         'lcnetv2', 'hardcorenas', 'nasnet', 'pnasnet'],
}


def by_size(module):
    """The module's registered architectures, fewest parameters first (timm's `test_*` models left out)."""
    import timm
    sized = []
    for arch in timm.list_models(module=module):
        if arch.startswith('test_'):
            continue
        try:
            m = timm.create_model(arch, pretrained=False, device='meta')
        except Exception:  # noqa: BLE001 (an entrypoint that needs arguments)
            continue
        sized.append((sum(p.numel() for p in m.parameters()), arch))
    return [arch for _, arch in sorted(sized)]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_model():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def prepare(arch, bench):
    """Folder, export and reference under .bench/ (skipped when already made by this timm/torch)."""
    import bench_models
    stamp = bench_models.stamp_text()
    if bench_models.complete(bench, arch, stamp):
        return None
    try:
        bench_models.make_random(arch, bench, stamp, log)
    except SystemExit as e:
        return str(e)
    except Exception as e:  # the exporter's own failure: reported, not fatal for the other modules
        return f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'
    return None


def save_json(a, rows, peers):
    if a.json:
        out = [{**r, **{p: {f'b{b}': v for b, v in r[p].items()} for p in peers if p in r}} for r in rows]
        Path(a.json).write_text(json.dumps({'cpu': cpu_model(), 'threads': a.threads, 'time': time.time(),
                                            'rows': out}, indent=2))


def run(argv, env):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f'exit {r.returncode}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def peer_folder(bench, arch, folder, onnx):
    """config.json + timm's export as model.onnx: libtimm runs it on ONNX Runtime (graph=onnx)."""
    peer = bench / 'peer' / arch
    peer.mkdir(parents=True, exist_ok=True)
    (peer / 'config.json').write_bytes((folder / 'config.json').read_bytes())
    target = peer / 'model.onnx'
    if not target.exists() or target.stat().st_ino != onnx.stat().st_ino:
        target.unlink(missing_ok=True)
        try:
            os.link(onnx, target)
        except OSError:
            target.write_bytes(onnx.read_bytes())
    return peer


def quartiles(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def slower_p(ratios):
    """One-sided sign test: the chance of at least this many pairs with libtimm the slower one
    (ORT / libtimm < 1) if neither were faster. Below 0.05, libtimm is slower, not just unlucky."""
    n = sum(1 for r in ratios if r != 1.0)
    k = sum(1 for r in ratios if r < 1.0)
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n if n else 1.0


def measure_paired(row, arch, folder, onnx, ref, batches, a, env):
    peer = peer_folder(REPO / '.bench', arch, folder, onnx)
    phases = [f'{b}:{3 if b == 1 else 1}:{max(12, a.pairs // b)}' for b in batches]
    lat = {b: ([], []) for b in batches}
    diff = {}
    for _ in range(a.repeats):  # a fresh process each time: its placement and caches differ
        out = run([a.driver, 'ab', f'local:{folder}', f'local:{peer}', str(ref), *phases,
                   f'intra_op_threads={a.threads}', 'inter_op_threads=1', 'graph=native', 'b:graph=onnx'], env)
        for ph in out['phases']:
            lat[ph['batch']][0].extend(ph['a_ms'])
            lat[ph['batch']][1].extend(ph['b_ms'])
            for k, c in (('a', 'libtimm'), ('b', 'ort')):
                rel = ph[f'{k}_max_abs_diff'] / max(ph['max_abs_ref'], 1e-30)
                diff[c] = max(diff.get(c, 0.0), rel)
    row['paired'] = {}
    for b in batches:
        t, o = lat[b]
        ratios = [y / x for x, y in zip(t, o)]
        lo, mid, hi = quartiles(ratios)
        row['paired'][b] = {'libtimm_ms': statistics.median(t), 'ort_ms': statistics.median(o), 'ratio': mid,
                            'ratio_lo': lo, 'ratio_hi': hi, 'pairs': len(t), 'slower_p': slower_p(ratios)}
    row['paired_max_rel_diff'] = diff


def measure_python(row, folder, onnx, ref, batches, a, env):
    phases = [f'{b}:{3 if b == 1 else 1}:{max(3, a.runs // b)}:1' for b in batches]
    lat = {(c, b): [] for c in ('libtimm', 'ort') for b in batches}
    per_rep = {(c, b): [] for c in ('libtimm', 'ort') for b in batches}  # one median per repeat
    diff = {}
    for rep in range(a.repeats):
        order = ('libtimm', 'ort') if rep % 2 == 0 else ('ort', 'libtimm')
        for c in order:
            if c == 'libtimm':
                argv = [a.driver, 'run', f'local:{folder}', str(ref), *phases,
                        f'intra_op_threads={a.threads}', 'inter_op_threads=1']
            else:
                argv = [sys.executable, str(SCRIPTS / 'bench_peers.py'), 'run-ort', str(onnx), str(ref),
                        str(a.threads), *phases]
            out = run(argv, env)
            for ph in out['phases']:
                lat[(c, ph['batch'])] += ph['lat_ms']
                per_rep[(c, ph['batch'])].append(statistics.median(ph['lat_ms']))
                rel = ph['max_abs_diff'] / max(ph['max_abs_ref'], 1e-30)
                diff[c] = max(diff.get(c, 0.0), rel)
    row['python'] = {}
    for b in batches:
        # Each repeat's two runs are adjacent in time: their ratio cancels slow drift.
        pairs = [x / y for x, y in zip(per_rep[('ort', b)], per_rep[('libtimm', b)])]
        row['python'][b] = {'libtimm_ms': statistics.median(lat[('libtimm', b)]),
                            'ort_ms': statistics.median(lat[('ort', b)]), 'ratio': statistics.median(pairs),
                            'ratio_lo': min(pairs), 'ratio_hi': max(pairs)}
    row['python_max_rel_diff'] = diff


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--issue', type=int, choices=sorted(set(ISSUES) | set(MODULES)))
    ap.add_argument('--archs', help='comma-separated architectures (instead of, or narrowing, --issue)')
    ap.add_argument('--modules', help='comma-separated timm modules narrowing --issue')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batches', default='1,8')
    ap.add_argument('--runs', type=int, default=20, help='timed calls at batch 1 (fewer at larger batches)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--driver', default=str(REPO / '.bench' / 'bin' / 'driver'))
    ap.add_argument('--ort-library', default=str(REPO / '.onnxruntime' / 'cpu' / 'libonnxruntime.so.1.31.1'))
    ap.add_argument('--pairs', type=int, default=40, help='paired calls at batch 1 per repeat (fewer at larger batches)')
    ap.add_argument('--peers', default='paired,python', help='which peers to measure: paired, python or both')
    ap.add_argument('--json')
    a = ap.parse_args()
    peers = [p.strip() for p in a.peers.split(',') if p.strip()]
    if not peers or set(peers) - {'paired', 'python'}:
        ap.error('--peers takes paired, python or both')

    table = dict(ISSUES.get(a.issue, {}))
    if a.issue in MODULES:
        import warnings
        warnings.filterwarnings('ignore')
        # --modules narrows the issue's list and orders it (cheap modules first, say).
        only = [m.strip() for m in (a.modules or '').split(',') if m.strip()]
        if unknown := [m for m in only if m not in MODULES[a.issue]]:
            ap.error(f'--modules: not modules of issue {a.issue}: {", ".join(unknown)} '
                     f'(its modules: {", ".join(MODULES[a.issue])})')
        table = {m: xs for m in only or MODULES[a.issue] if (xs := by_size(m))}
    else:
        table = {m: [x] for m, x in table.items()}
    if a.archs:
        want = [x.strip() for x in a.archs.split(',') if x.strip()]
        table = {m: [x for x in xs if x in want][:1] for m, xs in table.items() if set(xs) & set(want)} \
            or {x: [x] for x in want}
    if a.modules and a.issue not in MODULES:
        ap.error(f'--modules narrows --issue {"/".join(map(str, MODULES))}')
    if not table:
        ap.error('give --issue or --archs')
    bench = REPO / '.bench'
    env = dict(os.environ, TIMM_ORT_LIBRARY=a.ort_library)
    batches = [int(b) for b in a.batches.split(',')]
    log(f'CPU: {cpu_model()}, {os.cpu_count()} cores; {a.threads} intra-op threads; batches {batches}')

    rows = []
    for module, candidates in table.items():
        # A module's smallest architecture whose torch.onnx export fails has no peer: the next
        # smallest stands in (at most three tried), and the failures are listed with the row.
        skipped = []
        for arch in candidates[:3]:
            err = prepare(arch, bench)
            if not err:
                break
            skipped.append(f'{arch}: torch.onnx export failed ({err})')
            log(skipped[-1])
        row = {'module': module, 'arch': arch, **({'export_failed': skipped} if skipped else {})}
        rows.append(row)
        if err:
            row['error'] = 'no peer: ' + '; '.join(skipped)
            continue
        folder, onnx, ref = bench / 'models' / arch, bench / 'onnx' / f'{arch}.onnx', bench / 'ref' / arch
        try:
            if 'paired' in peers:
                measure_paired(row, arch, folder, onnx, ref, batches, a, env)
            if 'python' in peers:
                measure_python(row, folder, onnx, ref, batches, a, env)
        except RuntimeError as e:
            row['error'] = f'run failed: {e}'
            log(f'{arch}: {row["error"]}')
            continue
        save_json(a, rows, peers)  # after every row: a long run cut short keeps what it measured
        log(f'{arch}: ' + '; '.join(
            f'{p} b{b} {row[p][b]["libtimm_ms"]:.1f} ms vs {row[p][b]["ort_ms"]:.1f} ms ({row[p][b]["ratio"]:.2f})'
            for p in peers for b in batches))

    print(f'\nCPU: {cpu_model()}; {a.threads} threads; median latency (ms); ratio = ORT / libtimm')
    hdr = ['module', 'architecture'] + [f'{p} b{b} {w}' for p in peers for b in batches
                                        for w in ('libtimm / ORT ms', 'ratio (range)')]
    print('| ' + ' | '.join(hdr) + ' |')
    print('|' + '---|' * len(hdr))
    for r in rows:
        if 'error' in r:
            print(f'| {r["module"]} | {r["arch"]} | ' + r['error'] + ' |' * (len(hdr) - 2))
            continue
        cells = []
        for p in peers:
            for b in batches:
                x = r[p][b]
                sign = f' p={x["slower_p"]:.2f}' if 'slower_p' in x and x['ratio'] < 1.0 else ''
                cells += [f'{x["libtimm_ms"]:.1f} / {x["ort_ms"]:.1f}',
                          f'{x["ratio"]:.2f} ({x["ratio_lo"]:.2f}-{x["ratio_hi"]:.2f}){sign}']
        print(f'| {r["module"]} | {r["arch"]} | ' + ' | '.join(cells) + ' |')
    for r in rows:
        for x in r.get('export_failed', []) if 'error' not in r else []:
            print(f'{r["module"]}: measured on {r["arch"]}; {x}')
    ok = [r for r in rows if 'error' not in r]
    for p in peers:
        below = [r for r in ok if any(r[p][b]['ratio'] < 1.0 for b in batches)]
        line = f'{p}: {len(ok)} of {len(rows)} compared; median ratio >= 1.00 at every batch: {len(ok) - len(below)}'
        if p == 'paired':
            # A median just under 1.00 is what two equal engines give half the time; the sign test
            # says whether libtimm lost more pairs than chance allows.
            slow = [r['arch'] for r in below if any(r[p][b]['slower_p'] < 0.05 for b in batches)]
            tied = [r['arch'] for r in below if r['arch'] not in slow]
            line += (f'; below 1.00 but within chance (sign test p >= 0.05): {len(tied)}'
                     + (f' ({", ".join(tied)})' if tied else '')
                     + f'; slower (p < 0.05): {len(slow)}' + (f' ({", ".join(slow)})' if slow else ''))
        elif below:
            line += f'; below 1.00 somewhere: {", ".join(r["arch"] for r in below)}'
        print(line)
    save_json(a, rows, peers)


if __name__ == '__main__':
    main()
