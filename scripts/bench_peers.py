#!/usr/bin/env python3
"""The benchmark's Python contenders, one measurement per process (run by scripts/bench_run.py with
the generator venv's python, which pins the same onnxruntime 1.31.1 libtimm loads).

    bench_peers.py load-timm FOLDER          import timm + timm.create_model('local-dir:FOLDER', pretrained=True)
    bench_peers.py load-ort ONNX             onnxruntime.InferenceSession on an ONNX file (weights embedded)
    bench_peers.py run-ort ONNX REF_DIR THREADS PHASE...
    bench_peers.py run-torch FOLDER REF_DIR THREADS PHASE...
    bench_peers.py run-ov ONNX REF_DIR THREADS PRECISION PHASE...   (OpenVINO's Python API, CPU)

`run-*` mirror benches/driver.c: load once, then for each PHASE = BATCH:WARMUP:RUNS:CONCURRENCY,
CONCURRENCY Python threads share one session / module (both release the GIL while computing), each
times RUNS calls after WARMUP, on a batch that repeats the reference images; the output is checked
against timm's reference logits. THREADS is the intra-op thread count (ORT intra_op_num_threads,
torch.set_num_threads, OpenVINO INFERENCE_NUM_THREADS); 0 = the library's default. run-ov compiles the
export for OpenVINO's CPU device with INFERENCE_PRECISION_HINT=PRECISION (f32 or bf16), one stream,
the LATENCY hint and one infer request per calling thread; it runs in the bench venv (.venv-bench/,
openvino pinned as scripts/fetch-openvino pins the runtime libtimm loads).
Output: one JSON object on stdout, with the same keys as the driver's.
"""
import json
import sys
import threading
import time

T_START = time.perf_counter()  # before any heavy import: a load measure includes `import timm`


def status_kb():
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(('VmHWM:', 'VmRSS:')):
                out[line.split(':')[0]] = int(line.split()[1])
    return out['VmHWM'], out['VmRSS']


def emit(obj):
    print(json.dumps(obj))


def load_timm(folder):
    import timm
    t_import = time.perf_counter() - T_START
    model = timm.create_model(f'local-dir:{folder}', pretrained=True)
    model.eval()
    dt = time.perf_counter() - T_START
    hwm, rss = status_kb()
    emit({'load_s': dt, 'import_s': t_import, 'hwm_kb': hwm, 'rss_kb': rss})


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])


def load_ort(path):
    import onnxruntime  # noqa: F401  (the library load is reported apart from the session)
    t_import = time.perf_counter() - T_START
    hwm0, rss0 = status_kb()
    t0 = time.perf_counter()
    ort_session(path, 0)
    dt = time.perf_counter() - t0
    hwm, rss = status_kb()
    emit({'load_s': dt, 'import_s': t_import, 'hwm_before_kb': hwm0, 'rss_before_kb': rss0,
          'hwm_kb': hwm, 'rss_kb': rss})


def timed_threads(call, warmup, runs, conc):
    """Runs `call` WARMUP + RUNS times on each of CONC threads; returns (latencies ms, wall s, outputs)."""
    barrier = threading.Barrier(conc + 1)
    lat = [[] for _ in range(conc)]
    outs = [None] * conc
    errors = []

    def work(t):
        try:
            for _ in range(warmup):
                outs[t] = call()
        except Exception as e:  # surfaced below; a silent thread death would skew the numbers
            errors.append(e)
        barrier.wait()
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                outs[t] = call()
                lat[t].append((time.perf_counter() - t0) * 1e3)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(conc)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [x for per in lat for x in per], wall, outs


def run(kind, path, ref, threads, phases):
    import numpy as np
    threads = int(threads)
    ref_in = np.fromfile(f'{ref}/input.f32', dtype='<f4')
    ref_out = np.fromfile(f'{ref}/logits.f32', dtype='<f4')
    t0 = time.perf_counter()
    if kind == 'ort':
        sess = ort_session(path, threads)
        shape = [d if isinstance(d, int) else None for d in sess.get_inputs()[0].shape]
        name = sess.get_inputs()[0].name
    elif kind == 'ov':
        import openvino as ov
        precision = phases.pop(0)
        core = ov.Core()
        ov_model = core.read_model(path)
        cfg = {'INFERENCE_PRECISION_HINT': precision, 'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': '1'}
        if threads:
            cfg['INFERENCE_NUM_THREADS'] = str(threads)
        compiled = core.compile_model(ov_model, 'CPU', cfg)
        shape = [d.get_length() if d.is_static else None for d in ov_model.inputs[0].get_partial_shape()]
        local = threading.local()
    else:
        import torch
        import timm
        if threads:
            torch.set_num_threads(threads)
        model = timm.create_model(f'local-dir:{path}', pretrained=True).eval()
        shape = [None] + list(model.pretrained_cfg['input_size'])
    load = time.perf_counter() - t0
    per = int(np.prod(shape[1:]))
    ref_batch = ref_in.size // per
    ref_in = ref_in.reshape([ref_batch] + shape[1:])
    ref_out = ref_out.reshape(ref_batch, -1)
    results = []
    for ph in phases:
        batch, warmup, runs, conc = (int(v) for v in ph.split(':'))
        x = np.ascontiguousarray(ref_in[np.arange(batch) % ref_batch])
        want = ref_out[np.arange(batch) % ref_batch]
        if kind == 'ort':
            def call():
                return sess.run(None, {name: x})[0]
        elif kind == 'ov':
            def call():
                if not hasattr(local, 'req'):
                    local.req = compiled.create_infer_request()
                local.req.infer({0: x})
                return np.array(local.req.get_output_tensor(0).data)
        else:
            xt = torch.from_numpy(x)

            def call():
                with torch.inference_mode():
                    return model(xt).numpy()

        lat, wall, outs = timed_threads(call, warmup, runs, conc)
        diff = max(float(np.max(np.abs(o - want))) for o in outs)
        hwm, rss = status_kb()
        results.append({'batch': batch, 'concurrency': conc, 'wall_s': wall, 'images': batch * runs * conc,
                        'max_abs_diff': diff, 'max_abs_ref': float(np.max(np.abs(want))), 'hwm_kb': hwm,
                        'rss_kb': rss, 'lat_ms': lat})
    emit({'load_s': load, 'phases': results})


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == 'load-timm':
        load_timm(args[1])
    elif len(args) == 2 and args[0] == 'load-ort':
        load_ort(args[1])
    elif len(args) >= 5 and args[0] in ('run-ort', 'run-torch'):
        run(args[0][4:], args[1], args[2], args[3], args[4:])
    elif len(args) >= 6 and args[0] == 'run-ov':
        run('ov', args[1], args[2], args[3], args[4:])
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
