"""archgraph.integrations.lightning: a LightningModule whose model is a Network grows and prunes with a method for
two epochs on the digits, on the CPU; the trainer's optimizer follows every rewrite and the run replays."""
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

import archgraph

pl_integration = pytest.importorskip("archgraph.integrations.lightning")
pl = pl_integration.pl


class Digits(pl_integration.NetworkModule):
    def training_step(self, batch, i):
        x, y = batch
        return F.cross_entropy(self(x), y) + self.method_loss()

    def validation_step(self, batch, i):
        x, y = batch
        out = self(x)
        self.log_dict({"val_loss": F.cross_entropy(out, y), "val_acc": (out.argmax(1) == y).float().mean()})

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.01)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}


def _loaders():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    train = torch.utils.data.TensorDataset(x[:512], y[:512])
    val = torch.utils.data.TensorDataset(x[1500:], y[1500:])
    return (torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, drop_last=True),
            torch.utils.data.DataLoader(val, batch_size=300))


@pytest.mark.parametrize("method,settings", [
    ("staged", {"stages": [
        {"step": 3, "rules": [{"rule": "add_filters", "args": {"node": "c2", "count": 4, "init": "preserve"}}]},
        {"epoch": 1, "rules": [{"rule": "prune_channels", "args": {"node": "c1", "indices": [0]}}]}],
        "require_exact": False}),
    ("scs", {"penalty": 2.0, "s_init": 0.5}),
])
def test_two_epochs_on_digits(tmp_path, method, settings):
    torch.manual_seed(0)
    net = archgraph.Network(ROOT / "examples" / "seeds" / "digits_cnn.yaml")
    model = Digits(net)
    callback = pl_integration.ArchgraphCallback(method, save_dir=str(tmp_path / "run"), **settings)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    train, val = _loaders()
    trainer.fit(model, train, val)
    opt = trainer.optimizers[0]
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(p) for p in net.module.parameters()}      # the trainer's optimizer holds the last version
    assert model.model is net.module and opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    if method == "staged":
        assert net.version == 2
        assert net.graph.nodes["c2"].out_channels == 12 and net.graph.nodes["c1"].out_channels == 3
    assert archgraph.replay(tmp_path / "run") == net.graph
    assert len([e for e in net.history if e["event"] == "epoch"]) == 2
