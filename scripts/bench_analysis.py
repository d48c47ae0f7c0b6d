"""Time the full analysis (collect + stats + report + plots) on N synthetic run records.

python scripts/bench_analysis.py [--n 10000] [--vs 1000] [--repeats 3] [--n-boot 1000]
                                 [--run-cis]

The figure to compare is the median CPU time (process_time) over the repeats: on a shared
machine the wall time mostly measures the other load. Issue 17's target: 10,000 records at
a median of at most 7 s CPU. Side by side (interleaved repeats) the same analysis of ``--vs``
records from the same grid: their ratio says how the cost grows with the records, apart
from what every analysis of the grid pays (its configuration rows and its figures).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from paramcorr.analysis import run_analysis
from paramcorr.analysis.synthetic import synthetic_records, write_junk, write_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="synthetic records")
    parser.add_argument("--vs", type=int, default=1_000,
                        help="records of the side-by-side analysis (0: none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--run-cis", action="store_true",
                        help="also bootstrap the run-level rows' CIs (off by default, as in "
                             "analyze.py)")
    parser.add_argument("--partial", action="store_true",
                        help="add partial-freezing runs (stages 1-3) to the grid")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_analysis_") as tmp:
        sizes = [args.n] + ([args.vs] if args.vs else [])
        sweeps = {}
        for n in sizes:
            sweeps[n] = Path(tmp) / f"sweep{n}"
            start = time.perf_counter()
            records = synthetic_records(n, partial_stages=(1, 2, 3) if args.partial else ())
            write_sweep(sweeps[n], records)
            write_junk(sweeps[n])
            print(f"wrote {len(records)} records (+ junk files) in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        del records  # an analysis process does not hold the generator's dicts
        totals, cpus, splits = [], [], []
        vs_cpus: list[float] = []
        for i in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            result = run_analysis([sweeps[args.n]], Path(tmp) / f"out{i}",
                                  n_boot=args.n_boot, run_cis=args.run_cis)
            totals.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)  # robust to other load on the machine
            # The phases in CPU time where the analysis gives them (wall time otherwise).
            split = getattr(result, "cpu_timings", None) or result.timings
            splits.append(split)
            print(f"run {i + 1}: {totals[-1]:.2f} s (cpu {cpus[-1]:.2f} s)  cpu split: "
                  + "  ".join(f"{k}={v:.2f}" for k, v in split.items()), flush=True)
            if args.vs:
                cpu = time.process_time()
                run_analysis([sweeps[args.vs]], Path(tmp) / f"vs{i}", n_boot=args.n_boot,
                             run_cis=args.run_cis)
                vs_cpus.append(time.process_time() - cpu)
                print(f"     {args.vs} records: cpu {vs_cpus[-1]:.2f} s", flush=True)
        print(result.summary)
        median = statistics.median(totals)
        phase = {k: statistics.median(s[k] for s in splits) for k in splits[0]}
        stats_s = phase["correlations"] + phase["beyond"]
        rest = phase["plots"] + phase["report"] + phase["write_csv"]
        print(f"median total: {median:.2f} s for {args.n} records "
              f"({median / args.n * 1000:.2f} s per 1,000 records); median cpu time "
              f"{statistics.median(cpus):.2f} s")
        print(f"cpu split (median): collect {phase['collect']:.2f} s | stats {stats_s:.2f} s "
              f"(correlations {phase['correlations']:.2f}, beyond-paper {phase['beyond']:.2f})"
              f" | report+plots {rest:.2f} s (plots {phase['plots']:.2f}, csv "
              f"{phase['write_csv']:.2f}, report {phase['report']:.2f})", flush=True)
        if vs_cpus:
            ratio = statistics.median(cpus) / statistics.median(vs_cpus)
            print(f"side by side: {args.n} vs {args.vs} records, median cpu "
                  f"{statistics.median(cpus):.2f} s vs {statistics.median(vs_cpus):.2f} s: "
                  f"ratio {ratio:.2f} for {args.n / args.vs:g}x the records", flush=True)
        print("removing the temp sweeps (slow on some file systems)...", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
