"""PyTorch Lightning: grow and prune a :class:`~archgraph.fx.network.Network` with any method inside
``pl.Trainer.fit`` (optional extra ``lightning``: ``pip install 'archgraph[lightning]'``).

Two pieces: :class:`NetworkModule`, a ``LightningModule`` base whose model is a ``Network`` (``self.net``; its
module is registered as ``self.model`` and replaced after every rewrite, so ``self.parameters()``, device moves and
checkpoints see the current version), and :class:`ArchgraphCallback`, which attaches the method when fitting starts
(``archgraph.methods.attach`` with the trainer's optimizer, ``max_epochs`` and batches per epoch), steps it after
every optimizer step, ends its epochs with the logged metrics (``val_loss``, ``val_acc``, ...), finishes it when
fitting ends and, with ``save_dir``, writes the run directory. The trainer's optimizer is rewired in place at every
rewrite (the same object, its parameter groups and LR scheduler kept)::

    class Digits(NetworkModule):
        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self(x), y) + self.method_loss()
        def validation_step(self, batch, i):
            x, y = batch
            out = self(x)
            self.log_dict({"val_loss": F.cross_entropy(out, y), "val_acc": (out.argmax(1) == y).float().mean()})
        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=0.01)

    model = Digits(archgraph.Network("examples/seeds/digits_cnn.yaml"))
    pl.Trainer(max_epochs=20, callbacks=[ArchgraphCallback("scs", penalty=0.5, save_dir="runs/pl")]).fit(model, ...)

One process, one optimizer (Lightning's DDP wraps the module it was given: rebuild is not automatic; use
``archgraph grow`` with ``torchrun`` for multi-process runs).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..compat import import_torchvision

import_torchvision()   # pytorch_lightning imports torchvision (through torchmetrics): the wheel fix goes first
try:
    import pytorch_lightning as pl
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError("archgraph.integrations.lightning needs pytorch-lightning: "
                      "pip install 'archgraph[lightning]'") from err

from ..fx.network import Network  # noqa: E402  (after the torchvision fix above, like every import here)
from ..methods import Method, attach  # noqa: E402


class NetworkModule(pl.LightningModule):
    """A ``LightningModule`` whose model is ``net`` (an :class:`archgraph.Network`): ``self(x)`` runs the current
    version (masked while a method trains masks); ``self.method_loss()`` is the attached method's extra term."""

    def __init__(self, net: Network):
        super().__init__()
        self.net = net
        self.model = net.module
        self.method: Optional[Method] = None
        net.follow(self._follow)

    def _follow(self, rewrite: object) -> None:
        self.model = self.net.module   # the new version replaces the old submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.module(x)

    def method_loss(self) -> torch.Tensor:
        """The attached method's extra loss for the last training forward pass (zero without a method)."""
        if self.method is None:
            return torch.zeros((), device=self.device)
        return self.method.loss()


class ArchgraphCallback(pl.Callback):
    """Runs method ``name`` (a run-file method: ``gnap``, ``cgap``, ``scs``, ``gbp``, ``gumbel``, ``budget``,
    ``staged``) with ``settings`` on the :class:`NetworkModule` being fitted; ``save_dir`` writes its run
    directory when fitting ends (``archgraph replay``/``render``/``report`` read it)."""

    def __init__(self, name: str, *, save_dir: Optional[str] = None, **settings: Any):
        self.name = name
        self.settings = settings
        self.save_dir = save_dir
        self.method: Optional[Method] = None

    def _attached(self) -> Method:
        if self.method is None:
            raise RuntimeError("ArchgraphCallback: no method is attached (on_fit_start has not run)")
        return self.method

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, NetworkModule):
            raise TypeError("ArchgraphCallback needs the LightningModule to be an "
                            "archgraph.integrations.lightning.NetworkModule")
        if len(trainer.optimizers) != 1:
            raise ValueError(f"ArchgraphCallback needs exactly one optimizer, not {len(trainer.optimizers)}")
        if trainer.max_epochs is None:
            raise ValueError("ArchgraphCallback needs the Trainer's max_epochs (methods plan by the epoch budget)")
        batches = trainer.num_training_batches
        self.method = attach(self.name, pl_module.net, trainer.optimizers[0], epochs=int(trainer.max_epochs),
                             steps_per_epoch=int(batches) if batches and batches != float("inf") else None,
                             **self.settings)
        pl_module.method = self.method

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._attached().step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if torch.is_tensor(v) and v.numel() == 1}
        self._attached().epoch_end(metrics)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._attached().finish()
        assert isinstance(pl_module, NetworkModule)   # on_fit_start refused any other
        pl_module.method = None
        if self.save_dir is not None:
            pl_module.net.save(self.save_dir)
