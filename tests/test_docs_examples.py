"""Every example in README.md and docs/*.md is checked, so the docs cannot drift from the code.

Each fenced block is one test, named ``FILE:LINE`` of its opening fence:

- ``bash`` / ``sh`` / ``console`` (commands after ``$ ``): each ``pixelwise ...`` command (also
  after ``python -m pixelwise`` or ``torchrun ... -m pixelwise``) parses with the real parser;
  for ``train`` and ``demo`` the CONFIG file exists and the ``key=value`` overrides load through
  ``load_config``. Cheap commands (``models``, ``data check`` of synthetic data, ``config``,
  ``--version``) run. A ``console`` command followed by an ``error: ...`` line runs and must
  fail with that line (``...`` matches anything). ``python bench/X.py``: the script exists;
  ``make X``: the Makefile has the target.
- ``yaml`` with sections among model/data/optim/train: loads with ``load_config`` and names a
  real model, dataset, loss and real options of each.
- ``python``: runs in a fresh namespace, in a scratch checkout that holds ``configs/``,
  ``../shared`` (when present), a tiny trained checkpoint ``runs/exp/best.safetensors``,
  ``image.png`` (64x64 RGB), ``slide.tif`` (600x700 RGB) and ``tile.tif``; nothing is
  downloaded. A bare expression with a comment on its last line states its value: the comment
  must match ``repr`` of it (a tuple may drop its parentheses; ``...`` matches anything).

An HTML comment right before a block changes how it is run:

- ``<!-- docs-test: skip (reason) -->``: not run (python blocks are still compiled); the
  reason is required.
- ``<!-- docs-test: needs-shared-data -->``: runs only where ``../shared/data`` (beside the
  checkout) exists.
- ``<!-- docs-test: setup`` + lines of Python + ``-->``: runs first, in the block's namespace
  (what a fragment takes as given: a model, a label map).

A block without a language that starts like a command fails: label it, so that it is checked.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
import shutil
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

import pixelwise
from pixelwise.cli import build_parser, main
from pixelwise.config import load_config, to_yaml
from pixelwise.data import KINDS, SyntheticShapes, open_dataset
from pixelwise.engine.demo import demo_config
from pixelwise.errors import ConfigError, DataError, MissingExtraError
from pixelwise.losses import LOSSES
from pixelwise.models import model_options

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHARED = REPO.parent / "shared"
COMMAND_LANGUAGES = {"bash", "sh", "console"}
CONFIG_SECTIONS = {"model", "data", "optim", "train"}
SKIPPED_PROGRAMS = {"pip", "curl"}  # installs and HTTP clients: nothing of ours to check
LOOKS_LIKE_A_COMMAND = re.compile(r"^(\$ |pixelwise |python |python3 |pip |make |torchrun )")


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and the markers before it."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip: str | None = None  # the reason
    needs_shared_data: bool = False
    setup: str = ""
    marker_errors: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^\s*```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        block = Block(path, i + 1, opening.group(1), "\n".join(lines[i + 1:end]))
        read_markers(block, lines[:i])
        blocks.append(block)
        i = end + 1
    return blocks


def read_markers(block: Block, before: list[str]) -> None:
    """The ``<!-- docs-test: ... -->`` comments right before the block (blank lines between)."""
    end = len(before)
    while end > 0:
        if not before[end - 1].strip():
            end -= 1
            continue
        if not before[end - 1].rstrip().endswith("-->"):
            return
        start = next((k for k in range(end - 1, -1, -1) if "<!--" in before[k]), None)
        if start is None:
            return
        comment = "\n".join(before[start:end]).strip().removeprefix("<!--").removesuffix("-->")
        if comment.strip().startswith("docs-test:"):
            apply_marker(block, comment.strip().removeprefix("docs-test:"), start + 1)
        end = start


def apply_marker(block: Block, marker: str, line: int) -> None:
    first, _, rest = marker.partition("\n")
    first = first.strip()
    if skip := re.fullmatch(r"skip \((.+)\)", first):
        block.skip = skip.group(1)
    elif first == "needs-shared-data":
        block.needs_shared_data = True
    elif re.fullmatch(r"setup( \(.+\))?", first) and block.language == "python":
        block.setup = rest
    else:
        block.marker_errors.append(
            f"line {line}: docs-test marker must be 'skip (reason)', 'needs-shared-data' or "
            f"'setup' + code (python blocks only), got {first!r}")


BLOCKS = [block for path in DOCS for block in read_blocks(path)]


def blocks_in(*languages: str) -> list:
    return [pytest.param(b, id=b.where) for b in BLOCKS if b.language in languages]


def start(block: Block) -> None:
    """Fail on bad markers; skip as the markers say."""
    if block.marker_errors:
        pytest.fail(f"{block.where}: " + "; ".join(block.marker_errors))
    if block.skip:
        pytest.skip(f"{block.where}: {block.skip}")
    if block.needs_shared_data and not (SHARED / "data").is_dir():
        pytest.skip(f"{block.where}: needs {SHARED / 'data'}")


# --- commands -------------------------------------------------------------------------------------


@dataclass
class Command:
    line: int  # in the Markdown file
    words: list[str]
    error: str | None = None  # the `error: ...` line a console block shows after it


def read_commands(block: Block) -> list[Command]:
    """The block's commands: lines joined over trailing backslashes, comments stripped."""
    commands: list[Command] = []
    pending, first_line = "", 0
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        if block.language == "console" and not pending:
            if not raw.startswith("$ "):
                if raw.startswith("error: ") and commands and commands[-1].error is None:
                    commands[-1].error = raw
                continue
            raw = raw[2:]
        if not pending:
            first_line = offset
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        words = shlex.split(pending + raw, comments=True)
        pending = ""
        if words:
            commands.append(Command(first_line, words))
    return commands


def pixelwise_argv(words: list[str]) -> list[str] | None:
    """The arguments of a ``pixelwise`` command, also as ``python -m`` / ``torchrun -m``."""
    if words[0] == "pixelwise":
        return words[1:]
    for k in range(len(words) - 1):
        if words[k:k + 2] == ["-m", "pixelwise"]:
            return words[k + 2:]
    return None


def parse(argv: list[str], where: str) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit as exit_:
        status = exit_.code
    if status == 0:  # --help, --version
        return argparse.Namespace(command=None)
    pytest.fail(f"{where}: pixelwise {shlex.join(argv)}: {stderr.getvalue().strip()}")


def check_config_and_overrides(args: argparse.Namespace, where: str, tmp_path: Path) -> None:
    """``train`` / ``demo``: the CONFIG file exists and the overrides load onto it."""
    overrides = list(args.overrides)
    if args.command == "demo":
        config = tmp_path / "demo_config.yaml"
        config.write_text(to_yaml(demo_config(args.out)))
    elif args.config is not None and "=" in args.config:  # `train --resume DIR key=value`
        config, overrides = None, [args.config, *overrides]
    else:
        config = None if args.config is None else REPO / args.config
        if config is not None and not config.is_file():
            pytest.fail(f"{where}: config file {args.config} must exist")
    try:
        load_config(config, overrides)
    except ConfigError as err:  # an unknown key, a wrong type: say which line of the docs
        pytest.fail(f"{where}: {shlex.join(overrides)} must load onto {args.config}: {err}")


def is_cheap(args: argparse.Namespace) -> bool:
    """Commands that finish in about a second (or a few, for `models`)."""
    return (args.command in ("models", "config")
            or (args.command == "data" and getattr(args, "dataset", None) == "synthetic"))


def run(argv: list[str]) -> tuple[int, str]:
    """``pixelwise argv`` through ``cli.main``: the exit status and stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse
            status = exit_.code
    return status, stderr.getvalue()


def wildcard(shown: str) -> re.Pattern:
    """``shown`` as a pattern: whitespace runs match any whitespace, ``...``/``…`` anything."""
    parts = re.split(r"\.\.\.|…", " ".join(shown.split()))
    return re.compile(".*".join(r"\s*".join(map(re.escape, p.split(" "))) for p in parts))


def check_pixelwise(command: Command, argv: list[str], where: str, tmp_path: Path) -> None:
    if command.error is not None:
        status, stderr = run(argv)
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if status != 2 or not wildcard(command.error).fullmatch(last):
            pytest.fail(f"{where}: pixelwise {shlex.join(argv)} must fail with\n  "
                        f"{command.error}\ngot status {status} and\n  {last}")
        return
    args = parse(argv, where)
    if args.command in ("train", "demo"):
        check_config_and_overrides(args, where, tmp_path)
    if args.command is not None and is_cheap(args):
        status, stderr = run(argv)
        if status != 0:
            pytest.fail(f"{where}: pixelwise {shlex.join(argv)} exited {status}: {stderr}")


def check_other_program(words: list[str], where: str) -> None:
    program = words[0]
    if program in ("python", "python3"):
        script = next((w for w in words[1:] if w.endswith(".py")), None)
        if script is None or not (REPO / script).is_file():
            pytest.fail(f"{where}: {shlex.join(words)} must name a script that exists")
    elif program == "make":
        makefile = (REPO / "Makefile").read_text()
        for target in words[1:]:
            if not re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE):
                pytest.fail(f"{where}: make {target}: the Makefile must have that target")
    elif program not in SKIPPED_PROGRAMS:
        pytest.fail(f"{where}: {program} is not a command tests/test_docs_examples.py knows; "
                    "teach it, or add it to SKIPPED_PROGRAMS")


@pytest.mark.parametrize("block", blocks_in(*COMMAND_LANGUAGES))
def test_command_block(block, scratch_checkout, monkeypatch, tmp_path):
    start(block)
    monkeypatch.chdir(scratch_checkout(tmp_path))
    for command in read_commands(block):
        where = f"{block.path.relative_to(REPO)}:{command.line}"
        argv = pixelwise_argv(command.words)
        if argv is None:
            check_other_program(command.words, where)
        else:
            check_pixelwise(command, argv, where, tmp_path)


def test_unlabelled_blocks_are_not_commands():
    unlabelled = [b.where for b in BLOCKS
                  if not b.language and LOOKS_LIKE_A_COMMAND.match(b.text.lstrip())]
    assert not unlabelled, f"label these bash (or console, with $ ) to check them: {unlabelled}"


# --- the command table ----------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser,
                prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """``{"train": parser, "data check": parser, ...}``: every runnable (sub)subcommand."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subcommands(sub, f"{prefix}{name} ")
                found.update(nested or {f"{prefix}{name}": sub})
    return found


def command_table() -> list[str]:
    """The first cells of docs/cli.md's command table, without the backticks."""
    text = (REPO / "docs" / "cli.md").read_text()
    rows = re.findall(r"^\| `(pixelwise [^`]*)`", text, re.MULTILINE)
    assert rows, "docs/cli.md must have a table whose rows start with `pixelwise ...`"
    return rows


def documented_name(row: str, names: set[str]) -> str | None:
    words = row.split()[1:]
    return next((n for n in sorted(names, key=len, reverse=True)
                 if words[:len(n.split())] == n.split()), None)


def test_command_table_lists_every_subcommand():
    names = set(subcommands(build_parser()))
    documented = {documented_name(row, names) for row in command_table()}
    assert names - documented == set(), "add these to docs/cli.md's command table"


def test_command_table_names_only_real_options():
    parser = build_parser()
    commands = subcommands(parser)
    for row in command_table():
        name = documented_name(row, set(commands))
        sub = commands[name] if name else parser
        known = {s for action in sub._actions for s in action.option_strings}
        assert set(re.findall(r"--[a-z][a-z-]*", row)) <= known, row


def test_every_subcommand_has_a_checked_example():
    names = set(subcommands(build_parser()))
    shown = set()
    for block in BLOCKS:
        if block.language in COMMAND_LANGUAGES and not block.skip:
            for command in read_commands(block):
                argv = pixelwise_argv(command.words)
                if argv:
                    shown.add(documented_name("pixelwise " + " ".join(argv), names))
    assert names - shown == set(), "give these an example in a bash block of the docs"


# --- the demo's figures ---------------------------------------------------------------------------


def test_demo_epochs_and_measured_figures_agree_with_the_config_and_readme():
    epochs = load_config(REPO / "configs" / "synthetic_demo.yaml").train.epochs
    readme, cli = (REPO / "README.md").read_text(), (REPO / "docs" / "cli.md").read_text()
    assert f"for {epochs} epochs" in readme and f"fixed ({epochs}" in cli
    seconds, iou = re.search(r"`make demo`.*?(\d+) s wall.*?\*\*([\d.]+) %\*\*", readme).groups()
    assert f"{seconds} s wall" in cli and f"{iou} %" in cli, "docs/cli.md must quote the README"


# --- YAML -----------------------------------------------------------------------------------------


def is_config(block: Block) -> bool:
    content = yaml.safe_load(block.text)
    return isinstance(content, dict) and set(content) <= CONFIG_SECTIONS


@pytest.mark.parametrize("block", blocks_in("yaml", "yml"))
def test_yaml_config_block(block, tmp_path):
    start(block)
    if not is_config(block):
        pytest.skip(f"{block.where}: not a config (top-level keys beyond {CONFIG_SECTIONS})")
    path = tmp_path / "block.yaml"
    path.write_text(block.text)
    config = load_config(path)
    assert set(config.model.options) <= set(model_options(config.model.name)), block.where
    assert config.data.dataset in KINDS and config.optim.loss in LOSSES, block.where
    with contextlib.suppress(DataError):  # no files at root: the options were accepted first
        open_dataset(config.data.dataset, tmp_path / "no-data", "train", **config.data.options)


# --- Python ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docs_files(tmp_path_factory) -> Path:
    """The files the Python examples read: a tiny trained checkpoint and three images."""
    folder = tmp_path_factory.mktemp("docs-files")
    pixelwise.train(load_config(None, [
        "model.options.base_channels=4", "model.options.depth=2", "data.options.n=8",
        "data.options.size=32", "data.batch_size=4", "data.val_batch_size=8", "train.epochs=1",
        "train.progress=false", "train.device=cpu", f"train.out_dir={folder / 'runs/exp'}"]))
    for name in ("last.state.pt", "previous.state.pt", "previous.safetensors"):
        (folder / "runs" / "exp" / name).unlink(missing_ok=True)
    image = SyntheticShapes(n=1, size=64, seed=0)[0][0]
    rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "image.png")
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "slide.tif", rng.integers(0, 256, (600, 700, 3), dtype=np.uint8))
    tifffile.imwrite(folder / "tile.tif", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return folder


@pytest.fixture
def scratch_checkout(docs_files):
    """``make(tmp_path)``: a folder laid out like the checkout, to run examples in."""

    def make(tmp_path: Path) -> Path:
        checkout = tmp_path / "pixelwise"
        shutil.copytree(docs_files, checkout)
        (checkout / "configs").symlink_to(REPO / "configs")
        if SHARED.is_dir():
            (tmp_path / "shared").symlink_to(SHARED)
        return checkout

    return make


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and every download refused."""
    import torch

    def refuse(*args, **kwargs):
        raise URLError("the docs examples must not download anything")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "urlopen", refuse)


def stated_values(source: str) -> dict[int, str]:
    """``{line: comment}`` for every line that ends with a comment."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def is_print(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "print")


def check_value(value: object, shown: str, where: str) -> None:
    forms = [repr(value)]
    if isinstance(value, tuple):
        forms.append(", ".join(map(repr, value)))
    if not any(wildcard(shown).fullmatch(" ".join(form.split())) for form in forms):
        pytest.fail(f"{where}: the comment says {shown}, the value is {forms[-1]}")


def run_python(block: Block) -> None:
    """Statement by statement, checking the values that comments state."""
    namespace: dict = {"__name__": "__docs__"}
    if block.setup:
        exec(compile(block.setup, f"{block.where} (setup)", "exec"), namespace)
    source = "\n" * block.line + block.text  # tracebacks give the Markdown file's line numbers
    filename = str(block.path)
    comments = stated_values(source)
    for statement in ast.parse(source, filename).body:
        shown = comments.get(statement.end_lineno)
        if isinstance(statement, ast.Expr) and shown and not is_print(statement.value):
            value = eval(compile(ast.Expression(statement.value), filename, "eval"), namespace)
            if value is not None:
                check_value(value, shown, f"{block.path.relative_to(REPO)}:{statement.end_lineno}")
            continue
        exec(compile(ast.Module([statement], []), filename, "exec"), namespace)


@pytest.mark.parametrize("block", blocks_in("python"))
def test_python_block(block, scratch_checkout, offline_hub, monkeypatch, tmp_path):
    compile(block.text, block.where, "exec")  # skipped blocks too
    start(block)
    monkeypatch.chdir(scratch_checkout(tmp_path))
    try:
        run_python(block)
    except MissingExtraError as err:  # an optional extra that this environment lacks
        pytest.skip(f"{block.where}: {err}")


def test_markers_are_well_formed():
    errors = [f"{b.where}: {e}" for b in BLOCKS for e in b.marker_errors]
    assert not errors, errors


# --- the checker itself ---------------------------------------------------------------------------


def write_page(tmp_path: Path, text: str) -> list[Block]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return read_blocks(page)


def test_markers_apply_to_the_block_right_after_them(tmp_path):
    first, second = write_page(tmp_path, (
        "<!-- docs-test: skip (slow) -->\n\n```python\n1\n```\n"
        "<!-- docs-test: setup\nx = 1\n-->\n<!-- docs-test: needs-shared-data -->\n"
        "```python\nx\n```\n"))
    assert (first.line, first.skip, first.setup) == (3, "slow", "")
    assert (second.line, second.skip, second.setup.strip()) == (10, None, "x = 1")
    assert second.needs_shared_data and not first.needs_shared_data


def test_a_skip_without_reason_is_a_marker_error(tmp_path):
    (block,) = write_page(tmp_path, "<!-- docs-test: skip -->\n```python\n1\n```\n")
    assert block.skip is None and "skip (reason)" in block.marker_errors[0]


def test_commands_join_backslash_lines_drop_comments_and_take_console_errors(tmp_path):
    (block,) = write_page(tmp_path, (
        "```console\n$ pixelwise train a.yaml \\\n    optim.lr=1  # fast\n"
        "error: something ... wrong\n$ pixelwise models\n```\n"))
    train, models = read_commands(block)
    assert (train.line, train.words) == (2, ["pixelwise", "train", "a.yaml", "optim.lr=1"])
    assert train.error == "error: something ... wrong" and models.error is None


def test_a_stated_value_must_match_the_comment():
    check_value((508, 524), "508, 524", "here")
    check_value({"a": 1, "b": 2}, "{'a': 1, ...}", "here")
    with pytest.raises(pytest.fail.Exception, match="the comment says 508, 520"):
        check_value((508, 524), "508, 520", "here")
