"""`segrt bench`."""

from __future__ import annotations

from pathlib import Path

import click

from segrt.cli.common import CORES, COUNT, NONNEG, THREADS, echo_out, gpu_options, provider_option, user_errors
from segrt.options import IntList, examples

__all__ = ["bench"]


@click.command(epilog=examples("segrt bench exported/pets", "segrt bench exported/pets --batch-sizes 1,8 --sizes 288,512 --json bench.json"))
@click.argument("model", type=click.Path(exists=True))
@provider_option
@gpu_options
@click.option("--batch-sizes", type=IntList(), default="1,8", show_default=True)
@click.option("--sizes", type=IntList(),
              help="square input sizes, rounded up to the size multiple (default: the size predict runs the model "
                   "at: its working size, else its training crop)")
@click.option("--warmup", type=NONNEG, default=3, show_default=True)
@click.option("--runs", type=COUNT, default=20, show_default=True)
@click.option("--threads", type=THREADS, default=0, help=f"inference threads, at most the {CORES} cores (0: all)")
@click.option("--artifact", "artifacts", multiple=True, help="only these files of the export (repeatable)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the results as JSON")
@click.option("--markdown", is_flag=True, help="print a markdown table")
@click.option("--record", is_flag=True, help="instead: time every gated CPU variant of the export together (batch 1 "
                                             "at its working size) and store it as the export's speed record, which "
                                             "--provider auto reads on a CPU like this one")
@user_errors
def bench(model, provider, trt_fp16, device, batch_sizes, sizes, warmup, runs, threads, artifacts, json_path, markdown,
          record):
    """Latency p50/p90/p99, images/s, first-run time and peak memory for every artifact of MODEL."""
    import json

    from segrt.bench.bench import format_table, run_bench
    from segrt.fsutil import write_bytes_atomic

    if record:
        from segrt.bench.speeds import record_speeds
        from segrt.fsutil import check_writable

        check_writable(model, "--record writes the speeds into its manifest")
        record_speeds(model, lambda m: click.echo(m, err=True))
        return
    result = run_bench(model, provider=provider, device=device, trt_fp16=trt_fp16, batch_sizes=batch_sizes, sizes=sizes,
                       warmup=warmup, runs=runs, threads=threads, artifacts=list(artifacts) or None,
                       log=lambda m: click.echo(m, err=True))
    echo_out(format_table(result, markdown))
    if json_path:
        write_bytes_atomic(Path(json_path), (json.dumps(result, indent=2) + "\n").encode())
