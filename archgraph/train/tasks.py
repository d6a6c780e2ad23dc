"""What the loss and the metrics follow: the output's shape. Classification scores ``[B, K]`` against ``[B]``
labels, a causal language model's next-token scores ``[B, T, V]`` against ``[B, T]`` targets, per-pixel scores
``[B, K, H, W]`` against ``[B, H, W]`` labels. Every task is cross entropy over its elements (one example's loss is
the mean over its positions or pixels), so the loop treats all three alike.

Evaluation sums :meth:`Task.stats` over batches (and processes) and turns the sums into metrics: ``loss`` and
``acc`` for all, ``bpc`` (bits per character: the loss in bits) for language models, ``miou`` (mean over classes of
intersection over union, classes absent from both prediction and truth left out) and ``pixel_acc`` for segmentation.

>>> import torch
>>> task = TASKS["segmentation"]
>>> out = torch.zeros(1, 3, 2, 2); out[0, 1] = 1                     # predicts class 1 everywhere
>>> m = task.metrics(task.stats(out, torch.tensor([[[1, 1], [0, 2]]])))
>>> round(m["pixel_acc"], 3), round(m["miou"], 3)                      # IoU: class 0 -> 0, 1 -> 0.5, 2 -> 0
(0.5, 0.167)
>>> lm = TASKS["language_model"]
>>> round(lm.metrics(lm.stats(torch.zeros(1, 4, 2), torch.tensor([[0, 1, 0, 1]])))["bpc"], 6)   # uniform over 2
1.0
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError


class Task:
    """Classification: one label per example."""
    name = "classification"

    def flat(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [N, K], labels [N])`` over every element of the batch."""
        return out, y

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             reduction: str = "mean") -> torch.Tensor:
        """Cross entropy: the batch mean of each example's mean over its elements (``sum``: the sum over
        examples)."""
        scores, labels = self.flat(out, y)
        ce = F.cross_entropy(scores, labels, label_smoothing=label_smoothing)
        return ce * y.shape[0] if reduction == "sum" else ce

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correct predictions in examples (an example of ``n`` elements adds ``right / n``), as a float."""
        scores, labels = self.flat(out, y)
        return (scores.argmax(1) == labels).sum().float() * (y.shape[0] / max(1, labels.shape[0]))

    def stats(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sums an evaluation adds up over batches: summed loss, correct and counted elements."""
        scores, labels = self.flat(out, y)
        return torch.stack([F.cross_entropy(scores, labels, reduction="sum"),
                            (scores.argmax(1) == labels).sum().double(),
                            torch.tensor(float(labels.shape[0]), device=scores.device)]).double()

    def metrics(self, stats) -> dict:
        loss, right, n = (float(v) for v in stats[:3])
        return {"loss": loss / max(1.0, n), "acc": right / max(1.0, n)}

    def train_metrics(self, loss: float) -> dict:
        """What an epoch's mean training loss adds to its metrics besides ``train_loss``."""
        return {}


class LanguageModel(Task):
    """Next-token prediction at every position of a causal model: ``bpc`` is the loss in bits."""
    name = "language_model"

    def flat(self, out, y):
        return out.reshape(-1, out.shape[-1]), y.reshape(-1)

    def metrics(self, stats) -> dict:
        m = super().metrics(stats)
        m["bpc"] = m["loss"] / math.log(2)
        return m

    def train_metrics(self, loss: float) -> dict:
        return {"train_bpc": loss / math.log(2)}


class TokenModel(LanguageModel):
    """Next-token prediction over a tokeniser's ids: ``ppl`` (perplexity, ``exp`` of the loss in nats per token)
    instead of bits per character."""
    name = "token_model"

    def metrics(self, stats) -> dict:
        m = Task.metrics(self, stats)
        m["ppl"] = math.exp(min(m["loss"], 700.0))
        return m

    def train_metrics(self, loss: float) -> dict:
        return {"train_ppl": math.exp(min(loss, 700.0))}


class Segmentation(Task):
    """Per-pixel classes: the stats add the confusion matrix, for the mean IoU."""
    name = "segmentation"
    output_what = "per-pixel classes of"

    def output_shape(self, ds) -> tuple:
        return (ds.num_classes, *ds.input_shape[1:])

    def flat(self, out, y):
        return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]), y.reshape(-1)

    def stats(self, out, y):
        scores, labels = self.flat(out, y)
        k = scores.shape[1]
        confusion = torch.bincount(labels * k + scores.argmax(1), minlength=k * k).double()
        return torch.cat([super().stats(out, y), confusion])

    def metrics(self, stats) -> dict:
        m = super().metrics(stats)
        k = int(round(math.sqrt(len(stats) - 3)))
        confusion = torch.as_tensor(stats[3:], dtype=torch.float64).view(k, k)   # rows: truth, columns: prediction
        inter = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - inter
        present = union > 0
        m["miou"] = float((inter[present] / union[present]).mean()) if bool(present.any()) else 0.0
        m["pixel_acc"] = m["acc"]
        return m


TASKS = {t.name: t for t in (Task(), LanguageModel(), TokenModel(), Segmentation())}


def task_of(dataset) -> Task:
    """The task of a loaded dataset (its ``task`` name)."""
    return TASKS[getattr(dataset, "task", "classification")]


def check_seed(task: Task, ds, input_shape, graph, source: str = "<config>") -> None:
    """The seed's one output fits ``ds``: ``[K]`` classes, ``[T, V]`` next-token scores (``V`` at least the
    training text's vocabulary, which the token input's declared ``vocab`` must hold too) or ``[K, H, W]``.

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
    >>> class Text: vocab_size, window, name = 104, 8, "text"
    >>> check_seed(TASKS["language_model"], Text(), g.inputs["image"], g)
    Traceback (most recent call last):
    archgraph.errors.ConfigError: <config>: field 'seed': data 'text' needs a token input {shape: [T], vocab: V}; \
the seed's input is a float input of shape [1, 8, 8]
    """
    if len(graph.outputs) != 1:
        raise ConfigError(f"the seed has {len(graph.outputs)} outputs; training needs exactly one", file=source,
                          field="seed")
    outs = tuple(graph.shapes()[graph.outputs[0]])
    if isinstance(task, LanguageModel):
        vocab = getattr(input_shape, "vocab", None)   # a token input's shape carries its vocabulary
        if vocab is None:
            raise ConfigError(f"data '{ds.name}' needs a token input {{shape: [T], vocab: V}}; the seed's input is "
                              f"a float input of shape {list(input_shape)}", file=source, field="seed")
        if ds.vocab_size is None:   # the user's Datasets: the seed's vocabulary is the vocabulary
            return
        if vocab < ds.vocab_size:
            what = ("the training text has {n} symbols (with the unknown one)" if task.name == "language_model"
                    else "the data's vocabulary has {n} tokens").format(n=ds.vocab_size)
            raise ConfigError(f"the seed's token input declares vocab {vocab}, but {what}: declare vocab >= "
                              f"{ds.vocab_size}", file=source, field="seed")
        if len(outs) != 2 or outs[0] != ds.window or outs[1] < ds.vocab_size:
            raise ConfigError(f"the seed's output must be next-token scores [{ds.window}, V] with V >= "
                              f"{ds.vocab_size} (the training text's symbols), not {list(outs)}", file=source,
                              field="seed")
        return
    classes = ds.num_classes or outs[0]   # the user's Datasets without num_classes: the seed's output says
    want = (classes,) if task.name == "classification" else (classes, *ds.input_shape[1:])
    if outs != want:
        what = "the classes of" if task.name == "classification" else "per-pixel classes of"
        raise ConfigError(f"the seed's output must have shape {list(want)} ({what} {ds.name}), not {list(outs)}",
                          file=source, field="seed")
