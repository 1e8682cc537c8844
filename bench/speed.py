"""Speed of every pixelwise model against its peers, and against this CPU's matmul peak, in one run.

    python bench/speed.py                              # all models, 5 rounds (about 10-15 minutes)
    python bench/speed.py --models unet_resnet34,smp --rounds 7 --json speed.json
    python bench/speed.py --quick --models fcn8s_mobilenet_v3,lraspp   # smoke test, seconds

Interleaved: each round times the fp32 and bf16 matmul once and then every model once at every
task, so load from other processes falls on all of them alike; figures are medians over the
rounds (after one untimed warm-up round) and a ratio pixelwise / peer is the median of the
per-round ratios. Per model:

- parameters; FLOPs (``torch.utils.flop_counter``, counted on the meta device: no compute) of a
  forward pass at the frame size and of one training step (forward + backward);
- latency of a label map (forward + argmax, batch 1, ``torch.inference_mode``, eval mode) at
  360x480 (a CamVid frame; also as frames per second) and at 512x512;
- one training step at batch 8 of 176x224 (forward, cross-entropy, backward, SGD step) in fp32,
  and under ``torch.autocast("cpu", dtype=torch.bfloat16)`` where this CPU's bf16 matmul is at
  least half as fast as its fp32 one (measured here, never assumed from the CPU's name);
- achieved GFLOP/s as a fraction of the measured matmul GFLOP/s of the same precision;
- peak resident memory (RSS) that the model adds: in a process forked per model before any
  timing, the peak above the RSS at the fork (Python, torch, torchvision: ``start``) after
  building the model and one 512x512 forward (``forward``), then after one training step
  (``train``). Linux only: the peak is read from /proc/self/status after resetting it with
  /proc/self/clear_refs.

Every model takes the same layout (``--layout``, default channels_last: the layout pixelwise's
training, evaluation and Segmenter use) and the same 11 classes (CamVid's). The valid
(paper) U-Net runs through ``same_size_output`` (mirror-extended input, output cropped back), as
prediction runs it. Peers: segmentation_models_pytorch ``Unet("resnet34")`` (rows skipped when
smp is not installed), torchvision ``fcn_resnet50`` and ``lraspp_mobilenet_v3_large``, all with
random weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from pixelwise.models import build, count_parameters, same_size_output
from pixelwise.models.presets import preset

NUM_CLASSES = 11  # CamVid's classes (void ignored)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class Sizes:
    """Input sizes of the tasks and of the matmul."""

    frame: tuple[int, int] = (360, 480)
    square: int = 512
    batch: int = 8
    crop: tuple[int, int] = (176, 224)
    matmul: int = 2048


FULL = Sizes()
QUICK = Sizes(frame=(40, 56), square=48, batch=2, crop=(32, 48), matmul=256)


@dataclass(frozen=True)
class Candidate:
    """A model to time: ``label`` (what ``--models`` matches), its library, and a builder."""

    label: str
    library: str
    make: Callable[[], nn.Module]


def pixelwise_model(name: str, **options) -> Callable[[], nn.Module]:
    return lambda: same_size_output(build(name, NUM_CLASSES, **options))


def candidates() -> list[Candidate]:
    """Every model of the comparison; smp's only when it is installed."""
    from torchvision.models import segmentation as tv

    realtime_name, realtime_options = preset("realtime")
    rows = [
        *(Candidate(f"fcn8s_{backbone}", "pixelwise", pixelwise_model("fcn8s", backbone=backbone))
          for backbone in ("vgg16", "resnet18", "resnet50", "mobilenet_v3_large")),
        Candidate("unet_paper", "pixelwise",
                  pixelwise_model("unet", padding="valid", batch_norm=False)),
        Candidate("unet_base32", "pixelwise", pixelwise_model("unet", base_channels=32)),
        Candidate("unet_resnet34", "pixelwise", pixelwise_model("unet", encoder="resnet34")),
        Candidate("unet_resnet34_smp_widths", "pixelwise", pixelwise_model(
            "unet", encoder="resnet34", decoder_channels=(256, 128, 64, 32, 16))),
        Candidate("realtime", "pixelwise", pixelwise_model(realtime_name, **realtime_options)),
        Candidate("tv_fcn_resnet50", "torchvision", lambda: tv.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)),
        Candidate("tv_lraspp_mobilenet_v3", "torchvision", lambda: tv.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES)),
    ]
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        print("segmentation_models_pytorch not installed: its rows are skipped")
    else:
        rows.append(Candidate("smp_unet_resnet34", "smp", smp_unet_resnet34))
    return rows


def smp_unet_resnet34() -> nn.Module:
    import segmentation_models_pytorch as smp  # seconds to import: only when chosen

    return smp.Unet("resnet34", encoder_weights=None, classes=NUM_CLASSES)


# (pixelwise, peer): the architectures that correspond.
PAIRS = (
    ("unet_resnet34_smp_widths", "smp_unet_resnet34"),
    ("unet_resnet34", "smp_unet_resnet34"),
    ("fcn8s_resnet50", "tv_fcn_resnet50"),
    ("fcn8s_mobilenet_v3_large", "tv_lraspp_mobilenet_v3"),
    ("realtime", "tv_lraspp_mobilenet_v3"),
)


def logits(output: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision's segmentation models return ``{"out": logits, ...}``."""
    return output["out"] if isinstance(output, dict) else output


# ---- the machine ------------------------------------------------------------------------------


def machine() -> dict:
    """CPU model, the SIMD flags that matter for fp32/bf16, torch's build, load and date."""
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass  # not Linux: the model name from platform, no flags
    return {
        "cpu": model, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags],
        "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_start": os.getloadavg()[0],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def matmul_size(dtype: torch.dtype, largest: int, budget_s: float = 0.5) -> int:
    """``largest``, or the largest power of two >= 256 whose square matmul takes about
    ``budget_s`` at the rate a 256 one runs: bf16 without native support can be 100x slower."""
    a = torch.randn(256, 256, dtype=dtype)
    a @ a
    seconds = time_once(lambda: a @ a)
    size = largest
    while size > 256 and seconds * (size / 256) ** 3 > budget_s:
        size //= 2
    return size


def matmul_task(dtype: torch.dtype, size: int) -> Callable[[], object]:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return lambda: a @ b


# ---- tasks ------------------------------------------------------------------------------------


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def label_map_task(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Forward + argmax, the label map a caller gets."""

    def run() -> torch.Tensor:
        model.eval()
        with torch.inference_mode():
            return logits(model(x)).argmax(1)

    return run


def train_step_task(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool
) -> Callable[[], object]:
    """One SGD step; under bf16 autocast the forward runs in bf16 and the loss in fp32."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def run() -> None:
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = logits(model(x))
        loss = nn.functional.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def inputs(sizes: Sizes, layout: torch.memory_format, device: str = "cpu") -> dict:
    """The tensors each task runs on (the same for every model)."""
    generator = torch.Generator().manual_seed(0)
    frame = torch.randn(1, 3, *sizes.frame, generator=generator)
    square = torch.randn(1, 3, sizes.square, sizes.square, generator=generator)
    batch = torch.randn(sizes.batch, 3, *sizes.crop, generator=generator)
    target = torch.randint(0, NUM_CLASSES, (sizes.batch, *sizes.crop), generator=generator)
    return {
        "frame": frame.to(device, memory_format=layout),
        "square": square.to(device, memory_format=layout),
        "batch": batch.to(device, memory_format=layout),
        "target": target.to(device),
    }


def model_tasks(
    model: nn.Module, data: dict, bf16: bool
) -> dict[str, Callable[[], object]]:
    tasks = {
        "frame": label_map_task(model, data["frame"]),
        "square": label_map_task(model, data["square"]),
        "step_fp32": train_step_task(model, data["batch"], data["target"], bf16=False),
    }
    if bf16:
        tasks["step_bf16"] = train_step_task(model, data["batch"], data["target"], bf16=True)
    return tasks


# ---- FLOPs and memory -------------------------------------------------------------------------


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                        transposed, _output_padding, _groups, output_mask, **_) -> int:
    """FLOPs of a convolution's backward: each gradient asked for (input, weight) takes as many
    multiply-adds as the forward. torch's own formula counts a grouped convolution's weight
    gradient as if ungrouped, ``groups`` times too much (960x for MobileNetV3's depthwise
    layers)."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: conv_backward_flops}


def count_flops(candidate: Candidate, sizes: Sizes, device: str = "meta") -> dict[str, float]:
    """GFLOP of a forward at the frame size and at the square, and of a training step (forward +
    backward), counted on ``device``: "meta" (shapes only, no memory) for the real sizes; "cpu"
    for --quick's tiny ones, where real kernels take a fourth of the meta device's Python ones."""
    with torch.device(device):
        model = candidate.make()
        data = inputs(sizes, torch.contiguous_format, device=device)
    counts = {}
    model.eval()
    for task in ("frame", "square"):
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
            model(data[task])
        counts[task] = counter.get_total_flops() / 1e9
    model.train()
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        nn.functional.cross_entropy(logits(model(data["batch"])), data["target"]).backward()
    counts["step"] = counter.get_total_flops() / 1e9
    return counts


def rss_mib(key: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {key}")


def rss_child(candidate: Candidate, sizes: Sizes, layout: torch.memory_format, queue) -> None:
    """In a forked child: resident memory at the start, then the peak above it after building
    the model and one forward at the square size, and after one training step."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: the peak (VmHWM) starts again from the current RSS
    start = rss_mib()
    data = inputs(sizes, layout)
    model = candidate.make().to(memory_format=layout)
    label_map_task(model, data["square"])()
    forward = rss_mib("VmHWM") - start
    train_step_task(model, data["batch"], data["target"], bf16=False)()
    queue.put({"start": start, "forward": forward, "train": rss_mib("VmHWM") - start})


def measure_rss(candidate: Candidate, sizes: Sizes, layout: torch.memory_format) -> dict:
    """:func:`rss_child` in a process forked from this one; call it before any timing, while no
    thread pool has started (forking after OpenMP work is not safe)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=rss_child, args=(candidate, sizes, layout, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


# ---- the run ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One model's figures; times are medians in seconds."""

    label: str
    library: str
    parameters: int
    gflop: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)


def run_rounds(
    timed: dict[str, dict[str, Callable[[], object]]], warmup: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """``timed[who][task]`` run once per round each, in a fixed order; times of the timed rounds."""
    times = {who: {task: [] for task in tasks} for who, tasks in timed.items()}
    for index in range(warmup + rounds):
        for who, tasks in timed.items():
            for task, fn in tasks.items():
                seconds = time_once(fn)
                if index >= warmup:
                    times[who][task].append(seconds)
        if index >= warmup:
            print(f"round {index - warmup + 1}/{rounds} done", flush=True)
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i] (interleaved: both timed in the same round)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def measure(args: argparse.Namespace) -> dict:
    sizes = QUICK if args.quick else FULL
    layout = getattr(torch, args.layout)
    chosen = [c for c in candidates() if any(part in c.label for part in args.models.split(","))]
    rss = {c.label: measure_rss(c, sizes, layout) for c in chosen}  # before any timing: forks
    info = machine()
    peak_sizes = {"fp32": sizes.matmul, "bf16": matmul_size(torch.bfloat16, sizes.matmul)}
    timed: dict[str, dict[str, Callable[[], object]]] = {
        "matmul": {p: matmul_task(getattr(torch, "float32" if p == "fp32" else "bfloat16"), n)
                   for p, n in peak_sizes.items()}
    }
    # One probe round decides bf16: it must not be much slower than fp32 on this CPU.
    probe = {p: 2 * n**3 / time_once(fn) for (p, fn), n in
             zip(timed["matmul"].items(), peak_sizes.values(), strict=True)}
    bf16 = probe["bf16"] >= 0.5 * probe["fp32"]
    data = inputs(sizes, layout)
    rows = {}
    for candidate in chosen:
        print(f"building {candidate.label}", flush=True)
        torch.manual_seed(0)
        model = candidate.make().to(memory_format=layout)
        rows[candidate.label] = Row(candidate.label, candidate.library, count_parameters(model),
                                    count_flops(candidate, sizes, "cpu" if args.quick else "meta"),
                                    rss_mib=rss[candidate.label])
        timed[candidate.label] = model_tasks(model, data, bf16)
    times = run_rounds(timed, warmup=1, rounds=args.rounds)
    peak = {p: 2 * n**3 / statistics.median(times["matmul"][p]) / 1e9
            for p, n in peak_sizes.items()}
    for label, row in rows.items():
        row.seconds = {task: statistics.median(t) for task, t in times[label].items()}
    info["load_average_end"] = os.getloadavg()[0]
    pairs = [
        {"pixelwise": a, "peer": b,
         "gflop": rows[a].gflop["frame"] / rows[b].gflop["frame"],
         **{task: median_ratio(times[a][task], times[b][task]) for task in times[a]}}
        for a, b in PAIRS if a in rows and b in rows
    ]
    return {
        "machine": info, "threads": args.threads, "layout": args.layout, "rounds": args.rounds,
        "sizes": asdict(sizes), "num_classes": NUM_CLASSES, "bf16_timed": bf16,
        "matmul_size": peak_sizes, "matmul_gflops": peak, "matmul_probe_gflops":
        {p: g / 1e9 for p, g in probe.items()}, "models": [asdict(row) for row in rows.values()],
        "pairs": pairs,
    }


# ---- printing ---------------------------------------------------------------------------------


def fraction(row: dict, task: str, peak: float) -> str:
    """Achieved GFLOP/s of ``task`` as a share of the matmul peak."""
    gflop = row["gflop"]["frame" if task == "frame" else "step"]
    return f"{gflop / row['seconds'][task] / peak:.0%}"


def print_report(result: dict) -> None:
    m, sizes, peak = result["machine"], result["sizes"], result["matmul_gflops"]
    h, w = sizes["frame"]
    busy = m["load_average_start"] > result["threads"] or m["load_average_end"] > result["threads"]
    print(f"\n{m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}, torch {m['torch']} "
          f"({m['torch_cpu_capability']}), {result['threads']} threads, {result['layout']}, "
          f"{m['date']}")
    print(f"load average {m['load_average_start']:.1f} -> {m['load_average_end']:.1f}"
          + ("  BUSY MACHINE: absolute times are inflated; the interleaved ratios hold better"
             if busy else ""))
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s ({result['matmul_size']['fp32']}^2), "
          f"bf16 {peak['bf16']:.1f} GFLOP/s ({result['matmul_size']['bf16']}^2)"
          + ("" if result["bf16_timed"] else ": under half of fp32, bf16 steps not timed"))
    step = f"step {sizes['batch']}x{sizes['crop'][0]}x{sizes['crop'][1]}"
    header = ["model", "params", f"GFLOP {h}x{w}", f"ms {h}x{w}", "fps", "of fp32 peak",
              f"ms {sizes['square']}",
              f"{step} GFLOP", "fp32 ms", "of fp32 peak"]
    if result["bf16_timed"]:
        header += ["bf16 ms", "of bf16 peak"]
    header += ["RSS + fwd / train MiB"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in result["models"]:
        s, rss = row["seconds"], row["rss_mib"]
        cells = [row["label"], f"{row['parameters'] / 1e6:.2f}M", f"{row['gflop']['frame']:.2f}",
                 f"{s['frame'] * 1e3:.0f}", f"{1 / s['frame']:.1f}",
                 fraction(row, "frame", peak["fp32"]), f"{s['square'] * 1e3:.0f}",
                 f"{row['gflop']['step']:.3g}", f"{s['step_fp32'] * 1e3:.0f}",
                 fraction(row, "step_fp32", peak["fp32"])]
        if result["bf16_timed"]:
            cells += [f"{s['step_bf16'] * 1e3:.0f}", fraction(row, "step_bf16", peak["bf16"])]
        cells += [f"{rss['forward']:.0f} / {rss['train']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    if result["models"]:
        print(f"RSS +: peak resident memory above the "
              f"{result['models'][0]['rss_mib']['start']:.0f} MiB of the process before building, "
              f"in a process forked per model: build + one {sizes['square']}^2 forward / + one "
              "training step")
    if result["pairs"]:
        tasks = [t for t in ("frame", "square", "step_fp32", "step_bf16") if t in result["pairs"][0]]
        print("\nratio pixelwise / peer (time; median of per-round ratios; < 1: pixelwise faster)")
        print("| pixelwise | peer | FLOPs | " + " | ".join(tasks) + " |\n|" + "---|" * (3 + len(tasks)))
        for pair in result["pairs"]:
            print(f"| {pair['pixelwise']} | {pair['peer']} | {pair['gflop']:.2f} | "
                  + " | ".join(f"{pair[t]:.2f}" for t in tasks) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (5; --quick 1)")
    parser.add_argument("--models", default="",
                        help="comma-separated parts of labels to keep (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--layout", choices=("channels_last", "contiguous_format"),
                        default="channels_last")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the figures here")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    torch.set_num_threads(args.threads)
    result = measure(args)
    print_report(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
