"""Time per training item of a config's data, read from the files and kept in memory.

    python bench/data_loading.py                                    # configs/camvid_cpu.yaml
    python bench/data_loading.py configs/isbi2012_cpu.yaml data.root=../shared/data/isbi2012

Opens the config's training split as `pixelwise train` does (`open_split`: the config's
augmentation included) twice, with `data.cache=false` and `data.cache=true`, and reads every
item for `--epochs` epochs in one thread of loop, as `data.workers: 0` does. Prints the median
milliseconds per item of each epoch: from the second epoch on, the kept pairs skip decoding,
checking and resampling the files, which is what `data.cache` saves a run per item.
Run it alone: a second job on the machine slows both columns.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pixelwise.config import load_config
from pixelwise.engine.data_setup import open_split


def item_times(config, epochs: int) -> list[float]:
    """Median seconds per training item in each of `epochs` passes over the split."""
    dataset = open_split(config.data, config.data.train_split, train=True)
    medians = []
    for _ in range(epochs):
        times = []
        for index in range(len(dataset)):
            start = time.perf_counter()
            dataset[index]
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/camvid_cpu.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value, as for pixelwise train")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {}
    for cache in (False, True):
        config = load_config(args.config, [*args.overrides, f"data.cache={str(cache).lower()}"])
        rows[cache] = item_times(config, args.epochs)
    print("| epoch | from the files, ms per item | data.cache, ms per item | ratio |")
    print("|---:|---:|---:|---:|")
    for epoch, (plain, kept) in enumerate(zip(rows[False], rows[True], strict=True), 1):
        print(f"| {epoch} | {plain * 1e3:.1f} | {kept * 1e3:.1f} | {kept / plain:.2f} |")


if __name__ == "__main__":
    main()
