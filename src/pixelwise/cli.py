"""The ``pixelwise`` command: a thin argparse layer over the Python API.

Each subcommand parses its arguments, calls one API function and prints what it returns.
Every failure the user can fix (:class:`~pixelwise.errors.PixelwiseError`, a mistyped command
line, a path the file system refuses, a data check that finds problems, an export that fails its
parity check) prints one line ``error: ...`` to stderr and exits with status 2 (:func:`fail`),
without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from pixelwise.errors import ConfigError, DataError, PixelwiseError
from pixelwise.options import Spelling
from pixelwise.outputs import FORMATS


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = ["pixelwise", *argv]  # recorded in run.json
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except PixelwiseError as err:
        return fail(one_line(err))
    except OSError as err:  # the file system refused a path: a file where a folder must go, ...
        return fail(f"{err}; check the path and its permissions")


def fail(message: str) -> int:
    """Print the one line ``error: message`` to stderr; return the exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def one_line(err: PixelwiseError) -> str:
    """The error's message on one line. A DataLoader worker re-raises our error with the
    worker's traceback in its message, whose last line is ``module.Type: our message``; other
    messages may quote a multi-line reason (a YAML parser's), joined here."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].removeprefix(f"{type(err).__module__}.{type(err).__name__}: ")
    return " ".join(line.strip() for line in text.splitlines())


class _Parser(argparse.ArgumentParser):
    """argparse with the one error line of every other failure: a mistyped command line prints
    ``error: ...`` (no usage block) and exits with status 2, as argparse itself does."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(fail(f"{message}; try {self.prog} --help"))


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)  # argparse reports a ValueError as "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from pixelwise.version import __version__

    parser = _Parser(
        prog="pixelwise", description="Semantic segmentation: FCN and U-Net, train to predict.")
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train, evaluate and predict on synthetic data")
    demo.add_argument("--out", default="pixelwise-demo", help="output folder (default: %(default)s)")
    demo.add_argument("overrides", nargs="*", metavar="key=value",
                      help="change the demo config, e.g. train.epochs=2")
    demo.set_defaults(run=run_demo)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", nargs="?",
                       help="YAML file, e.g. configs/unet_isbi2012.yaml (with --resume: default "
                            "the run's own config.yaml)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.01")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run in DIR from its newest whole checkpoint")
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser("evaluate", help="FCN metrics of a checkpoint on a dataset")
    evaluate.add_argument("checkpoint", help="a .safetensors file written by train")
    evaluate.add_argument("--data", required=True, metavar="KIND",
                          help="dataset kind: synthetic, folder, voc, camvid, isbi2012, cityscapes")
    evaluate.add_argument("--root", default="", help="dataset folder")
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--tta", action="store_true", help="average with the mirrored image")
    evaluate.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], metavar="S",
                          help="also average over these input scales, e.g. 0.75 1 1.25")
    evaluate.add_argument("--batch-size", type=positive_int, default=1)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--out", help="output folder (default: eval-SPLIT beside the checkpoint)")
    evaluate.add_argument("--option", action="append", default=[], metavar="key=value",
                          help="extra dataset option, e.g. n=32 (repeatable)")
    evaluate.add_argument("--strict", action="store_true",
                          help="refuse a checkpoint whose class names differ from the data's "
                               "(default: a warning naming both)")
    evaluate.set_defaults(run=run_evaluate)

    predict = commands.add_parser("predict", help="label maps and overlays for images")
    predict.add_argument("checkpoint",
                         help="a .safetensors file written by train, or an .onnx file from export")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--format", nargs="+", default=["png", "overlay"], dest="formats",
                         choices=list(FORMATS), help="what to write per input (default: png "
                         "overlay); GeoTIFF inputs keep their CRS in geotiff and geojson")
    predict.add_argument("--tta", action="store_true", help="average with the mirrored image")
    predict.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], metavar="S",
                         help="also average over these input scales, e.g. 0.75 1 1.25")
    predict.add_argument("--min-area", type=int, default=0,
                         help="geojson/coco: drop objects smaller than this many pixels")
    predict.add_argument("--simplify", type=float, default=0.0,
                         help="geojson/coco: polygon simplification tolerance in pixels")
    predict.set_defaults(run=run_predict)

    export = commands.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    export.add_argument("checkpoint", help="a .safetensors file written by train")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    export.set_defaults(run=run_export)

    models = commands.add_parser("models", help="list the models with parameter counts")
    models.set_defaults(run=run_models)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True,
                                            metavar="COMMAND")
    show = config_commands.add_parser(
        "show", help="print the resolved configuration: defaults, then CONFIG, then key=value")
    show.add_argument("config", nargs="?", help="YAML file (default: the defaults alone)")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model.name=fcn8s")
    show.set_defaults(run=run_config_show)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    check = data_commands.add_parser("check", help="check a dataset folder for problems")
    check.add_argument("root", help="dataset folder")
    check.add_argument("--dataset", required=True, metavar="KIND", help="dataset kind")
    check.add_argument("--split", default="train")
    check.add_argument("--option", action="append", default=[], metavar="key=value",
                       help="extra dataset option, e.g. classes=3 for a folder (repeatable)")
    check.set_defaults(run=run_data_check)
    return parser


def run_demo(args: argparse.Namespace) -> int:
    from pixelwise.config import load_config, to_yaml
    from pixelwise.engine.demo import demo_config, run_demo

    base = Path(args.out) / "demo_config.yaml"
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_text(to_yaml(demo_config(args.out)))
    config = load_config(base, args.overrides)
    base.write_text(to_yaml(config))  # what this demo run used, overrides included
    print(f"pixelwise demo: training a small U-Net on synthetic shapes for {config.train.epochs} "
          f"epochs, writing to {args.out}/")
    scores = run_demo(config, args.out, argv=args.command_line)
    print(scores["table"])
    print(f"\nwrote {args.out}/: training_curves.png, predictions.png, "
          "eval/ (metrics.json, confusion_matrix.png, per_class_iou.png), "
          "predictions/ (label PNGs and overlays), run/ (checkpoints)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from pixelwise.config import load_config
    from pixelwise.engine.checkpoint import check_run_folder
    from pixelwise.engine.train import train

    config_path, overrides = config_and_overrides(args)
    if args.resume is not None:
        check_run_folder(args.resume)
    if config_path is None:
        if args.resume is None:
            raise ConfigError("train needs a CONFIG file, got none; try pixelwise train "
                              "configs/synthetic_demo.yaml, or --resume RUN_DIR to continue a run")
        config_path = Path(args.resume) / "config.yaml"
        if not config_path.is_file():
            raise ConfigError(f"run folder {args.resume} must hold the run's config.yaml, got "
                              f"none; try pixelwise train CONFIG --resume {args.resume}")
    config = load_config(config_path, overrides)
    result = train(config, resume=args.resume, argv=args.command_line)
    if result["rank"] != 0:  # under torchrun only rank 0 reports
        return 0
    if result["table"]:
        print(result["table"])
    print(f"best {result['metric']} {result['best']:.4f}; checkpoints in {result['run_dir']}")
    return 0


def config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The CONFIG positional and the overrides; a first positional ``k=v`` that is no file is
    an override (``train --resume DIR k=v``, ``config show k=v``)."""
    config_path, overrides = args.config, list(args.overrides)
    if config_path is not None and "=" in config_path and not Path(config_path).is_file():
        config_path, overrides = None, [config_path, *overrides]
    return config_path, overrides


# How the command line spells a dataset option and folder, for the "try ..." of a message.
CLI_DATA_SPELLING = Spelling("--option {name}={value}", "--root {value}")


def run_evaluate(args: argparse.Namespace) -> int:
    from pixelwise.config import parse_options
    from pixelwise.data import check_request
    from pixelwise.device import pick_device
    from pixelwise.engine.evaluate import evaluate

    options = parse_options(args.option)
    check_request(args.data, args.root, options, CLI_DATA_SPELLING)
    pick_device(args.device, spelling="--device {value}")
    scores = evaluate(args.checkpoint, args.data, args.root, args.split, out_dir=args.out,
                      tta=args.tta, tta_scales=tuple(args.tta_scales),
                      batch_size=args.batch_size, device=args.device, strict=args.strict,
                      **options)
    print(scores["table"])
    print(f"wrote {', '.join(scores['files'].values())}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelwise.device import pick_device
    from pixelwise.inference.predict import Segmenter
    from pixelwise.outputs import predict_to_files

    pick_device(args.device, spelling="--device {value}")  # a device this machine lacks: one line
    segmenter = Segmenter.from_checkpoint(
        args.checkpoint, device=args.device, tta_flips=("h",) if args.tta else (),
        tta_scales=tuple(args.tta_scales), progress=True)
    files = expand_inputs(args.inputs)
    for path in tqdm(files, desc="predict", unit="image", disable=len(files) == 1):
        predict_to_files(segmenter, path, Path(args.out) / path.stem, tuple(args.formats),
                         source_name=path.name, min_area=args.min_area, simplify=args.simplify)
    print(f"wrote {', '.join(args.formats)} for {len(files)} images to {args.out}")
    return 0


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the image files of each folder (sorted); DataError when none exist."""
    from pixelwise.data.io import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"input must be an image file or a folder, got {str(item)!r}")
    if not files:
        raise DataError(f"inputs must contain images ({', '.join(IMAGE_SUFFIXES)}), got none in "
                        f"{[str(i) for i in inputs]}")
    return files


def run_export(args: argparse.Namespace) -> int:
    from pixelwise.export import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.out, args.format)
    print(report)
    if not report.passed:
        raise PixelwiseError(
            f"the {report.format} export {report.path} must match PyTorch within "
            f"{report.tolerance:g}, got {report.max_abs_diff:.2e}; try the other --format, or "
            "see docs/export.md"
        )
    return 0


def run_models(args: argparse.Namespace) -> int:
    from pixelwise.models import describe_models
    from pixelwise.models.weights import describe_imagenet_weights

    print(describe_models())  # the papers' configurations, built once each (a few seconds)
    print(f"\n{describe_imagenet_weights()}")
    return 0


def run_config_show(args: argparse.Namespace) -> int:
    from pixelwise.config import load_config, to_yaml

    config_path, overrides = config_and_overrides(args)
    print(to_yaml(load_config(config_path, overrides)), end="")
    return 0


def run_data_check(args: argparse.Namespace) -> int:
    from pixelwise.config import parse_options
    from pixelwise.data import check_request
    from pixelwise.data.checks import run_data_check

    options = parse_options(args.option)
    check_request(args.dataset, args.root, options, CLI_DATA_SPELLING)
    run_data_check(args.root, args.dataset, args.split, **options)
    return 0
