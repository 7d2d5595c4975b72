"""`segrt predict` locally vs `--engine ray` with 1 and 2 actors, on the same photos, in one run
(a local Ray instance; startup excluded: each summary times the prediction itself). On 2 cores Ray
can only add overhead (actors, object store, serialization); this measures how much.

    python benchmarks/ray_throughput.py --images ../shared/data/oxford_iiit_pet_subset/images --count 150

Writes benchmarks/results/<date>-<tag>-ray.json/.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
from pathlib import Path

from common import link_photos, photo_args, save

from segrt.cpuinfo import cpu_info, describe_cpu
from segrt.predict.options import PredictOptions
from segrt.predict.run import run_predict


def main():
    p = photo_args(argparse.ArgumentParser(), rounds=3)
    p.add_argument("--provider", default="auto")
    args = p.parse_args()
    import ray

    from segrt.scale.ray import predict as ray_predict

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(dir=".", prefix=".ray-bench-") as tmp:
        tmp = Path(tmp)
        src = link_photos(args.images, args.count, tmp / "in")
        runs = {"local": lambda out: run_predict([str(src)], args.model, provider=args.provider, log=lambda m: None,
                                                 opts=PredictOptions(out=out, batch_size=args.batch_size, progress=False)),
                **{f"ray, {k} worker(s)": (lambda k: lambda out: ray_predict(
                    [str(src)], args.model, str(out), provider=args.provider, batch_size=args.batch_size,
                    num_workers=k, log=lambda m: None))(k) for k in (1, 2)}}
        rates = {name: [] for name in runs}
        for r in range(args.rounds + 1):  # the first round warms up (actors, compile cache)
            for name, fn in runs.items():
                rate = fn(tmp / f"out-{r}-{len(rates[name])}-{name[:5]}")["images_per_s"]
                if r:
                    rates[name].append(rate)
    ray.shutdown()
    local = statistics.median(rates["local"])
    result = {"date": dt.date.today().isoformat(), "cpu": cpu_info(), "model": str(args.model), "images": args.count,
              "batch_size": args.batch_size, "rounds": args.rounds,
              "images_per_s": {k: statistics.median(v) for k, v in rates.items()}, "all": rates}
    lines = [f"### segrt predict: local vs Ray Data, {args.count} photos, batch {args.batch_size}, median of "
             f"{args.rounds} rounds ({result['date']})", "", f"CPU: {describe_cpu(result['cpu'])}, "
             f"{result['cpu']['cores']} cores", "", "| engine | images/s | vs local |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v / local:.2f}x |" for k, v in result["images_per_s"].items()]
    save(result, "\n".join(lines) + "\n", f"{result['date']}-{args.tag}-ray")


if __name__ == "__main__":
    main()
