"""The ``pixelwise`` command: a thin argparse layer over the Python API.

Each subcommand parses its arguments, calls one API function and prints what it returns.
Every failure the user can fix (:class:`~pixelwise.errors.PixelwiseError`, a mistyped command
line, a path the file system refuses, a data check that finds problems, an export that fails its
parity check) prints one line ``error: ...`` to stderr and exits with status 2 (:func:`fail`),
without a traceback.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import NoReturn

from pixelwise.choices import BACKENDS, FORMATS, TTA_VIEWS
from pixelwise.errors import ConfigError, PixelwiseError
from pixelwise.options import Spelling


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


def program() -> NoReturn:
    """The ``pixelwise`` program (console script, ``python -m pixelwise``, torchrun): exit with
    :func:`main`'s status, skipping the garbage collections Python runs over every object at
    exit, which torch's many objects make take 1 to 2 s (by then every file, loader worker and
    writer is closed; :func:`main` itself stays safe to call in a long-lived process)."""
    status = main()
    gc.freeze()
    raise SystemExit(status)


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
    add_tta_arguments(evaluate)
    evaluate.add_argument("--batch-size", type=positive_int, default=1)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--out", help="output folder (default: eval-SPLIT beside the checkpoint)")
    evaluate.add_argument("--option", action="append", default=[], metavar="key=value",
                          help="extra dataset option, e.g. n=32 (repeatable)")
    evaluate.add_argument("--report", nargs="?", const=True, default=False, metavar="PATH",
                          help="also write a self-contained HTML report (default PATH: "
                               "report.html in the output folder)")
    add_backend_arguments(evaluate, calibration_default="the split's first images")
    evaluate.add_argument("--strict", action="store_true",
                          help="refuse a checkpoint whose class names differ from the data's "
                               "(default: a warning naming both)")
    evaluate.add_argument("--progress", action=argparse.BooleanOptionalAction,
                          help="progress bar (default: only when stderr is a terminal)")
    evaluate.set_defaults(run=run_evaluate)

    predict = commands.add_parser(
        "predict", help="label maps and overlays for images (resumable; runs under torchrun)")
    predict.add_argument("checkpoint", nargs="?",
                         help="a .safetensors file written by train, or an .onnx file from export")
    predict.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    predict.add_argument("--out", help="output folder (required unless --manifest)")
    predict.add_argument("--manifest", metavar="DIR",
                         help="only report the progress of the prediction job in DIR")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--format", nargs="+", default=["png", "overlay"], dest="formats",
                         choices=list(FORMATS), help="what to write per input (default: png "
                         "overlay); GeoTIFF inputs keep their CRS in geotiff and geojson")
    add_tta_arguments(predict)
    predict.add_argument("--min-area", type=int, default=0,
                         help="geojson/coco: drop objects smaller than this many pixels")
    predict.add_argument("--simplify", type=float, default=0.0,
                         help="geojson/coco: polygon simplification tolerance in pixels")
    predict.add_argument("--background", nargs="+", metavar="ID",
                         help="class ids that are not objects (geojson/coco skip them, overlays "
                         "leave them untinted), or none (default: the checkpoint's)")
    predict.add_argument("--coco-rle", action="store_true",
                         help="coco: every object as RLE (default: polygons, RLE for objects "
                         "with holes)")
    predict.add_argument("--recursive", action="store_true",
                         help="folders: also the images of their subfolders (mirrored in --out)")
    predict.add_argument("--skip-bad", action="store_true",
                         help="skip unreadable images (each reported, counted at the end, exit "
                              "status 1) instead of stopping at the first")
    predict.add_argument("--workers", type=int, metavar="N",
                         help="image-decoding processes per process (default: what the CPUs "
                              "allow, 1 to 4; 0 decodes in the main process)")
    predict.add_argument("--progress", action=argparse.BooleanOptionalAction,
                         help="progress bars (default: only when stderr is a terminal)")
    add_backend_arguments(predict, calibration_default="the first inputs")
    predict.set_defaults(run=run_predict)

    serve = commands.add_parser("serve", help="serve a model over HTTP, with a page to look at it")
    serve.add_argument("model", metavar="CKPT_OR_ONNX",
                       help="a .safetensors file written by train, or an .onnx file from export")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    serve.add_argument("--max-batch", type=int, default=8,
                       help="most same-size images per model call (1: no batching)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="longest wait for more images to batch after the first")
    serve.add_argument("--max-upload-mb", type=float, default=32.0, help="request body limit")
    serve.add_argument("--max-pixels", type=int, default=4096 * 4096,
                       help="decoded image limit, checked on the header (default: %(default)s)")
    serve.add_argument("--tile-threshold", type=int, default=1024,
                       help="images with a longer side go through tiled inference")
    serve.set_defaults(run=run_serve)

    export = commands.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    export.add_argument("checkpoint", help="a .safetensors file written by train")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    export.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                        help="ONNX exporter: TorchScript tracing (legacy), torch.export (dynamo), "
                             "or tracing kept when it matches PyTorch at a second size, else "
                             "torch.export (auto, default)")
    export.set_defaults(run=run_export)

    models = commands.add_parser("models", help="list the models with parameter counts")
    models.add_argument("--preset", metavar="NAME",
                        help="show one preset (e.g. realtime): its model, options and config")
    models.add_argument("--encoders", action="store_true",
                        help="list the backbone= / encoder= names instead, with parameters and "
                             "whether their ImageNet weights are cached")
    models.add_argument("--filter", default="", metavar="STR",
                        help="with --encoders: names (or families) containing STR; timm's "
                             "models are listed too, or only them with timm:STR")
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


def add_tta_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tta", action="store_true", help="average with the mirrored image")
    command.add_argument("--tta-views", choices=TTA_VIEWS,
                         help="which views --tta averages (and implies it): h the image and its "
                              "mirror (the default), d4 its 8 rotations and mirrors, for images "
                              "with no up or left (microscopy, EM, aerial)")
    command.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], metavar="S",
                         help="also average over these input scales, e.g. 0.75 1 1.25")


def tta_setting(args: argparse.Namespace) -> bool | str:
    """``--tta`` / ``--tta-views`` as evaluate's ``tta``: False, or the views' name."""
    return args.tta_views or ("h" if args.tta else False)


def add_backend_arguments(command: argparse.ArgumentParser, calibration_default: str) -> None:
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


def shows_progress(args: argparse.Namespace) -> bool:
    """``--progress`` / ``--no-progress``, else a bar only where stderr is a terminal: a log
    file or a pipe would fill with carriage-return lines."""
    return sys.stderr.isatty() if args.progress is None else args.progress


def run_evaluate(args: argparse.Namespace) -> int:
    from pixelwise.config import parse_options
    from pixelwise.data import check_request
    from pixelwise.device import pick_device
    from pixelwise.engine.evaluate import evaluate

    options = parse_options(args.option)
    check_request(args.data, args.root, options, CLI_DATA_SPELLING)
    pick_device(args.device, spelling="--device {value}")
    scores = evaluate(args.checkpoint, args.data, args.root, args.split, out_dir=args.out,
                      tta=tta_setting(args), tta_scales=tuple(args.tta_scales),
                      batch_size=args.batch_size, device=args.device, report=args.report,
                      backend=args.backend, calibration=args.calibration,
                      strict=args.strict, progress=shows_progress(args), **options)
    if scores["rank"] != 0:  # under torchrun only rank 0 reports
        return 0
    print(scores["table"])
    print(f"wrote {', '.join(scores['files'].values())}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        from pixelwise.engine.manifest import progress_report

        print(progress_report(args.manifest))
        return 0
    if args.checkpoint is None or not args.inputs or args.out is None:
        raise ConfigError(
            "predict needs a CHECKPOINT, at least one INPUT and --out DIR, got "
            f"{args.checkpoint or 'no checkpoint'}, {len(args.inputs)} inputs, "
            f"{'--out ' + args.out if args.out else 'no --out'}; try pixelwise predict "
            "best.safetensors images/ --out predictions, or --manifest DIR to see how far a job "
            "has got")
    from pixelwise.device import pick_device
    from pixelwise.engine.predict_job import PredictionJob, run_prediction_job
    from pixelwise.inference.tta import tta_views

    pick_device(args.device, spelling="--device {value}")  # a device this machine lacks: one line
    summary = run_prediction_job(PredictionJob(
        checkpoint=args.checkpoint, inputs=args.inputs, out_dir=args.out,
        formats=tuple(args.formats), device=args.device, tta_flips=tta_views(tta_setting(args)),
        tta_scales=tuple(args.tta_scales), min_area=args.min_area, simplify=args.simplify,
        background=parse_background(args.background), coco_segmentation="rle" if args.coco_rle else "auto",
        backend=args.backend, calibration=args.calibration,
        skip_bad=args.skip_bad, recursive=args.recursive, workers=args.workers,
        progress=shows_progress(args)))
    if summary.rank == 0:  # under torchrun only rank 0 reports
        earlier = f" ({summary.done_before} done before)" if summary.done_before else ""
        print(f"wrote {', '.join(args.formats)} for {summary.predicted} images to "
              f"{args.out}{earlier}")
        if summary.skipped:
            print(f"error: skipped {summary.skipped} of {summary.inputs} inputs (each named "
                  "above); fix or remove them and run the same command again", file=sys.stderr)
    return 1 if summary.skipped else 0


def parse_background(values: list[str] | None) -> tuple[int, ...] | None:
    """``--background``: None when not given (the checkpoint's), ``()`` for ``none``, else the
    class ids (checked against the model's classes when it is loaded)."""
    if values is None:
        return None
    if [v.lower() for v in values] == ["none"]:
        return ()
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ConfigError(f"--background must be class ids or none, got {' '.join(values)}; "
                          "try --background 0") from None


def run_serve(args: argparse.Namespace) -> int:
    from pixelwise.serve import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels)
    serve(args.model, args.host, args.port, settings, tile_above=args.tile_threshold,
          device=args.device)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pixelwise.export import export_checkpoint

    options = {"exporter": args.exporter} if args.format == "onnx" else {}
    report = export_checkpoint(args.checkpoint, args.out, args.format, **options)
    print(report)
    if not report.passed:
        raise PixelwiseError(
            f"the {report.format} export {report.path} must match PyTorch within "
            f"{report.tolerance:g}, got {report.max_abs_diff:.2e}; try the other --format, or "
            "see docs/export.md"
        )
    return 0


def run_models(args: argparse.Namespace) -> int:
    from pixelwise.models import describe_encoders, describe_models, describe_preset

    if args.filter and not args.encoders:
        raise ConfigError(f"--filter needs --encoders, got --filter {args.filter!r} alone; try "
                          f"pixelwise models --encoders --filter {args.filter}")
    if args.preset:
        print(describe_preset(args.preset))
        return 0
    if args.encoders:
        print(describe_encoders(args.filter))
        return 0
    print(describe_models())  # the papers' configurations, built once each (a few seconds)
    print("\nEvery backbone= / encoder= name, and whether its ImageNet weights are cached: "
          "pixelwise models --encoders [--filter STR]")
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
