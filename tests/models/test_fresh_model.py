"""mmdiag.models.load.fresh_model: random weights initialised once, never left uninitialised."""
import torch
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel

from mmdiag.models.weights import fresh_model
from mmdiag.models.presets import PRESETS


def test_weights_follow_the_models_own_init():
    torch.manual_seed(0)
    model = fresh_model(BertModel, PRESETS["bert-base-uncased"].make_config())
    params = {k: p.detach() for k, p in model.named_parameters()}
    assert not any(torch.isnan(p).any() for p in params.values())
    std = BertConfig().initializer_range  # _init_weights: N(0, 0.02) for linear and embedding weights
    w = params["encoder.layer.0.attention.self.query.weight"]
    assert abs(float(w.std()) - std) < 0.002 and abs(float(w.mean())) < 0.002
    assert torch.all(params["encoder.layer.0.output.LayerNorm.weight"] == 1)
    assert torch.all(params["encoder.layer.0.attention.self.query.bias"] == 0)


def test_seeded_and_deterministic():
    cfg = PRESETS["tiny-clip"].make_config()
    from transformers import CLIPModel

    torch.manual_seed(3)
    a = fresh_model(CLIPModel, cfg).state_dict()
    torch.manual_seed(3)
    b = fresh_model(CLIPModel, cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert abs(float(a["logit_scale"]) - cfg.logit_scale_init_value) < 1e-6  # set by the constructor, kept


class _PartialConfig(PretrainedConfig):
    model_type = "mmdiag-partial-init"


class _PartialInit(PreTrainedModel):
    """A model whose _init_weights covers one of its two layers."""

    config_class = _PartialConfig

    def __init__(self, config):
        super().__init__(config)
        self.covered = torch.nn.Linear(4, 4)
        self.forgotten = torch.nn.Linear(4, 4)
        self.post_init()

    def _init_weights(self, module):
        if module is self.covered:
            torch.nn.init.zeros_(module.weight)


def test_a_parameter_the_model_does_not_init_falls_back_to_the_ordinary_build():
    model = fresh_model(_PartialInit, _PartialConfig())
    assert not any(torch.isnan(p).any() for p in model.parameters())
    assert float(model.forgotten.weight.detach().abs().sum()) > 0  # torch's default init ran
