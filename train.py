"""Train network g with LightningCLI.

    python train.py --config configs/coco_wsg.yaml                 # fit (no subcommand needed)
    python train.py --config configs/coco_wsg.yaml --print_config  # show the resolved settings
    python train.py --config configs/coco_wsg.yaml --ckpt_path runs/.../last.ckpt   # resume

Any setting can be overridden on the command line (``--model.lr 1e-3``,
``--trainer.precision 16-mixed``, ``--trainer.devices 2``). The resolved config is saved next to
each run's logs. ``--data.image_size`` also sets the model's recorded ``input_size``.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from wwbl.lit_module import WWbLModule


class WWbLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume training from")
        parser.link_arguments("data.init_args.image_size", "model.input_size")


def main(args: list[str] | None = None) -> WWbLCLI:
    cli = WWbLCLI(WWbLModule, subclass_mode_data=True, run=False, args=args, auto_configure_optimizers=False,
                  save_config_kwargs={"overwrite": True})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    return cli


if __name__ == "__main__":
    main()
