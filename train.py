"""Train network g with LightningCLI.

    python train.py --config coco_wsg.yaml                         # a name in configs/ is enough
    python train.py --config configs/coco_wsg.yaml --print_config  # show the resolved settings
    python train.py --config configs/coco_wsg.yaml --ckpt_path runs/.../last.ckpt   # resume

Any setting can be overridden on the command line (``--model.lr 1e-3``,
``--trainer.precision 16-mixed``, ``--trainer.devices 2``). The resolved config is saved next to
each run's logs. ``--data.image_size`` also sets the model's recorded ``input_size``. User errors
(a config that does not exist, a bad setting, missing data or weights) end in one line on stderr
and exit status 2.

Runs survive a kill: checkpoints are written atomically (``wwbl.checkpoint_io``), ``last.ckpt``
is rewritten every ``--step_checkpoint.every_n_train_steps`` steps (default 500) and at every
validation, and a run resumed from it continues in the same folder with the batches an
uninterrupted run would have seen (``wwbl.data.resumable``), so it ends at the same weights;
its CSV log continues the folder's ``metrics.csv`` (``wwbl.run_logs``).
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# Default of --step_checkpoint.every_n_train_steps (README, "Training").
CHECKPOINT_EVERY_N_STEPS = 500


def find_config(name: str) -> str:
    """``name`` as given if it is a file, else the file of that name (with or without ``.yaml``)
    under ``configs/``; FileNotFoundError naming where it looked otherwise."""
    if Path(name).is_file():
        return name
    candidates = [CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"]
    candidates += sorted(CONFIG_DIR.rglob(Path(name).name)) + sorted(CONFIG_DIR.rglob(f"{Path(name).name}.yaml"))
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    available = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config {name!r} not found (looked at ./{name} and in {CONFIG_DIR}); "
                            f"available: {available}")


def resolve_configs(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config X`` / ``--config=X`` pointing at an existing file."""
    out, take = [], False
    for arg in argv:
        if take:
            out.append(find_config(arg))
            take = False
        elif arg == "--config":
            out.append(arg)
            take = True
        elif arg.startswith("--config="):
            out.append("--config=" + find_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def continue_in_run_folder(trainer: Any, ckpt_path: str | None) -> None:
    """A run resumed from ``…/version_N/checkpoints/x.ckpt`` logs and checkpoints into that same
    ``version_N`` folder (not a new one), so ModelCheckpoint keeps its best/last tracking there."""
    if not ckpt_path:
        return
    folder = Path(ckpt_path).resolve().parent
    version = folder.parent.name.removeprefix("version_")
    if folder.name != "checkpoints" or not version.isdigit():
        return
    for logger in trainer.loggers:  # CSV / TensorBoard loggers name their folder after `_version`
        if hasattr(logger, "_version") and Path(logger.root_dir).resolve() == folder.parent.parent:
            logger._version = int(version)


def keep_csv_history(trainer: Any) -> None:
    """Lightning's CSV log becomes a :class:`wwbl.run_logs.ContinuingCSVLogger`: flushed at every
    checkpoint, continued (not deleted) by a resumed run."""
    from lightning.pytorch.loggers import CSVLogger  # loaded late, as in main()

    from wwbl.run_logs import ContinuingCSVLogger

    trainer.loggers = [ContinuingCSVLogger.like(logger) if type(logger) is CSVLogger else logger
                       for logger in trainer.loggers]


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(args: list[str] | None = None) -> Any:
    try:
        argv = resolve_configs(list(sys.argv[1:] if args is None else args))
    except FileNotFoundError as error:
        _fail(str(error))
    # Lightning and torch load only once the config files are known to exist (errors answer at once).
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from wwbl.checkpoint_io import StepCheckpoint
    from wwbl.errors import AnnotationError, MissingResourceError, ModelFileError
    from wwbl.lit_module import WWbLModule, check_resume_checkpoint

    class WWbLCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="checkpoint to resume training from")
            parser.link_arguments("data.init_args.image_size", "model.input_size")
            # last.ckpt every N optimiser steps: a killed run resumed from it redoes at most N steps.
            parser.add_lightning_class_args(StepCheckpoint, "step_checkpoint")
            parser.set_defaults({"step_checkpoint.every_n_train_steps": CHECKPOINT_EVERY_N_STEPS,
                                 "step_checkpoint.save_top_k": 0, "step_checkpoint.save_last": True,
                                 "step_checkpoint.enable_version_counter": False})

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):  # the parser's usage dump is replaced by its error line
            cli = WWbLCLI(WWbLModule, subclass_mode_data=True, run=False, args=argv, auto_configure_optimizers=False,
                          save_config_kwargs={"overwrite": True},
                          trainer_defaults={"plugins": [{"class_path": "wwbl.checkpoint_io.AtomicCheckpointIO"}]})
    except SystemExit as exit_:
        if not exit_.code:
            raise
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        _fail(next((line.split("error:", 1)[1].strip() for line in reversed(lines) if "error:" in line),
                   lines[-1] if lines else "invalid arguments"))
    except (ValueError, FileNotFoundError) as error:  # a setting the model or data module refused
        _fail(f"{type(error).__name__}: {error}")
    sys.stderr.write(stderr.getvalue())
    continue_in_run_folder(cli.trainer, cli.config.ckpt_path)
    keep_csv_history(cli.trainer)
    try:
        if cli.config.ckpt_path:  # a damaged or foreign checkpoint is named before Lightning reads it
            check_resume_checkpoint(cli.config.ckpt_path, cli.model)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    except (MissingResourceError, AnnotationError, ModelFileError) as error:  # missing data or weights, damaged files
        _fail(str(error))
    return cli


if __name__ == "__main__":
    main()
