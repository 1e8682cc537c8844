"""The ``pixelwise`` command: a thin argparse layer over the Python API.

Each subcommand parses its arguments, calls one API function and prints what it returns.
Failures the user can fix (:class:`~pixelwise.errors.PixelwiseError`) print one line
``error: ...`` to stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pixelwise.errors import ConfigError, DataError, PixelwiseError
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
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: PixelwiseError) -> str:
    """The error's message on one line. A DataLoader worker re-raises our error with the
    worker's traceback in its message, whose last line is ``module.Type: our message``; other
    messages may quote a multi-line reason (a YAML parser's), joined here."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].removeprefix(f"{type(err).__module__}.{type(err).__name__}: ")
    return " ".join(line.strip() for line in text.splitlines())


def build_parser() -> argparse.ArgumentParser:
    from pixelwise.version import __version__

    parser = argparse.ArgumentParser(
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
    evaluate.add_argument("--batch-size", type=int, default=1)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--out", help="output folder (default: eval-SPLIT beside the checkpoint)")
    evaluate.add_argument("--option", action="append", default=[], metavar="key=value",
                          help="extra dataset option, e.g. n=32 (repeatable)")
    add_backend_arguments(evaluate, calibration_default="the split's first images")
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
    add_backend_arguments(predict, calibration_default="the first inputs")
    predict.set_defaults(run=run_predict)

    export = commands.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    export.add_argument("checkpoint", help="a .safetensors file written by train")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    export.set_defaults(run=run_export)

    models = commands.add_parser("models", help="list the models with parameter counts")
    models.set_defaults(run=run_models)

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


def add_backend_arguments(command: argparse.ArgumentParser, calibration_default: str) -> None:
    from pixelwise.inference.backends import BACKENDS

    command.add_argument("--backend", choices=[*BACKENDS, "auto"],
                         help="how the model runs (default: PyTorch fp32, or onnxruntime for an "
                              ".onnx file); auto measures them here and takes the fastest whose "
                              "labels agree with fp32")
    command.add_argument("--calibration", metavar="DIR",
                         help="images for onnx-int8 and auto: DIR's first four (default: "
                              f"{calibration_default})")


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
    from pixelwise.engine.train import train

    config_path, overrides = args.config, list(args.overrides)
    if config_path is not None and "=" in config_path and not Path(config_path).is_file():
        config_path, overrides = None, [config_path, *overrides]  # `train --resume DIR k=v`
    if config_path is None:
        if args.resume is None:
            raise ConfigError("train needs a CONFIG file, got none; try pixelwise train "
                              "configs/synthetic_demo.yaml, or --resume RUN_DIR to continue a run")
        config_path = Path(args.resume) / "config.yaml"
    config = load_config(config_path, overrides)
    result = train(config, resume=args.resume, argv=args.command_line)
    if result["rank"] != 0:  # under torchrun only rank 0 reports
        return 0
    if result["table"]:
        print(result["table"])
    print(f"best {result['metric']} {result['best']:.4f}; checkpoints in {result['run_dir']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from pixelwise.config import parse_options
    from pixelwise.engine.evaluate import evaluate

    scores = evaluate(args.checkpoint, args.data, args.root, args.split, out_dir=args.out,
                      tta=args.tta, tta_scales=tuple(args.tta_scales),
                      batch_size=args.batch_size, device=args.device, backend=args.backend,
                      calibration=args.calibration, **parse_options(args.option))
    print(scores["table"])
    print(f"wrote {', '.join(scores['files'].values())}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pixelwise.inference.backends import CALIBRATED
    from pixelwise.inference.predict import CALIBRATION_IMAGES, Segmenter
    from pixelwise.outputs import predict_to_files

    def load(calibration) -> Segmenter:
        return Segmenter.from_checkpoint(
            args.checkpoint, device=args.device, tta_flips=("h",) if args.tta else (),
            tta_scales=tuple(args.tta_scales), progress=True, backend=args.backend,
            calibration=calibration)

    if args.backend in CALIBRATED and args.calibration is None:  # calibrate on the first inputs
        files = expand_inputs(args.inputs)
        segmenter = load(files[:CALIBRATION_IMAGES])
    else:  # a bad checkpoint is reported before bad inputs
        segmenter = load(args.calibration)
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
    return 0 if report.passed else 1


def run_models(args: argparse.Namespace) -> int:
    from pixelwise.models import describe_models

    print(describe_models())  # the papers' configurations, built once each (a few seconds)
    return 0


def run_data_check(args: argparse.Namespace) -> int:
    from pixelwise.config import parse_options
    from pixelwise.data.checks import run_data_check

    return run_data_check(args.root, args.dataset, args.split, **parse_options(args.option))
