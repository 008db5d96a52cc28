"""A small model with the structure of RVC's synthesizer, in both weight-norm forms.

The layer layout and prefixes follow RVC's SynthesizerTrn (dec.ups, dec.resblocks,
flow.flows.N.enc.in_layers / res_skip_layers / cond_layer, enc_q, emb_g), with tiny
channel counts so tests stay fast.  `build(parametrized)` gives the same weights
in either form: the layers are created from the same seed before weight norm is applied.
"""

import datetime
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

HIDDEN = 8
GIN = 4


def weight_norm(parametrized):
    if parametrized:
        return nn.utils.parametrizations.weight_norm
    return nn.utils.weight_norm


class ResBlock(nn.Module):
    def __init__(self, channels, norm):
        super().__init__()
        self.convs1 = nn.ModuleList(norm(nn.Conv1d(channels, channels, 3, padding=d, dilation=d)) for d in (1, 3, 5))
        self.convs2 = nn.ModuleList(norm(nn.Conv1d(channels, channels, 3, padding=1)) for _ in range(3))

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class Generator(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.conv_pre = nn.Conv1d(HIDDEN, HIDDEN, 7, padding=3)
        # RVC's upsamplers; g on dim 1, as a ConvTranspose's output channels are
        self.ups = nn.ModuleList(norm(nn.ConvTranspose1d(HIDDEN, HIDDEN, 4, stride=2, padding=1), dim=1)
                                 for _ in range(2))
        self.resblocks = nn.ModuleList(ResBlock(HIDDEN, norm) for _ in range(2))
        self.conv_post = nn.Conv1d(HIDDEN, 1, 7, padding=3, bias=False)
        self.cond = nn.Conv1d(GIN, HIDDEN, 1)

    def forward(self, x, g):
        x = self.conv_pre(x) + self.cond(g)
        for up, block in zip(self.ups, self.resblocks):
            x = block(up(F.leaky_relu(x, 0.1)))
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class WN(nn.Module):
    """WaveNet-style stack, as in RVC's flows and posterior encoder."""

    def __init__(self, norm, layers=2):
        super().__init__()
        self.cond_layer = norm(nn.Conv1d(GIN, 2 * HIDDEN * layers, 1))
        self.in_layers = nn.ModuleList(norm(nn.Conv1d(HIDDEN, 2 * HIDDEN, 5, padding=2)) for _ in range(layers))
        self.res_skip_layers = nn.ModuleList(
            norm(nn.Conv1d(HIDDEN, 2 * HIDDEN if i < layers - 1 else HIDDEN, 1)) for i in range(layers))

    def forward(self, x, g):
        output = torch.zeros_like(x)
        g = self.cond_layer(g)
        for i, (inner, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            acts = inner(x) + g[:, i * 2 * HIDDEN:(i + 1) * 2 * HIDDEN]
            acts = torch.tanh(acts[:, :HIDDEN]) * torch.sigmoid(acts[:, HIDDEN:])
            res = res_skip(acts)
            if i < len(self.in_layers) - 1:
                x = x + res[:, :HIDDEN]
                output = output + res[:, HIDDEN:]
            else:
                output = output + res
        return output


class CouplingLayer(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.pre = nn.Conv1d(HIDDEN // 2, HIDDEN, 1)
        self.enc = WN(norm)
        self.post = nn.Conv1d(HIDDEN, HIDDEN // 2, 1)

    def forward(self, x, g):
        x0, x1 = x.chunk(2, dim=1)
        x1 = x1 + self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1], 1)


class Flip(nn.Module):
    def forward(self, x, g):
        return x.flip(1)


class Flow(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(2):
            self.flows.append(CouplingLayer(norm))
            self.flows.append(Flip())

    def forward(self, x, g):
        for flow in self.flows:
            x = flow(x, g)
        return x


class PosteriorEncoder(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.pre = nn.Conv1d(HIDDEN, HIDDEN, 1)
        self.enc = WN(norm)


class Synthesizer(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.enc_p = nn.Sequential(nn.Conv1d(HIDDEN, HIDDEN, 3, padding=1))
        self.dec = Generator(norm)
        self.flow = Flow(norm)
        self.enc_q = PosteriorEncoder(norm)
        self.emb_g = nn.Embedding(2, GIN)

    def forward(self, x, speaker):
        g = self.emb_g(speaker).unsqueeze(-1)
        return self.dec(self.flow(self.enc_p(x), g), g)


def build(parametrized, seed=0):
    torch.manual_seed(seed)
    return Synthesizer(weight_norm(parametrized)).eval()


def inference_model(parametrized):
    """The model RVC's inference builds: no posterior encoder, weights loaded from `weight`."""
    model = build(parametrized)
    del model.enc_q
    return model


def sample_input(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, HIDDEN, 16, generator=generator), torch.tensor([1])


def rvc_inference_file(model):
    """What RVC's and Applio's savers write: fp16 weights without enc_q, and metadata."""
    return {
        "weight": {k: v.half() for k, v in model.state_dict().items() if "enc_q" not in k},
        "config": [HIDDEN, 0, HIDDEN, HIDDEN, 2, 2, 3, 0.0, "1", [3, 7, 11], [[1, 3, 5]] * 3,
                   [2, 2], HIDDEN, [4, 4], 2, GIN, 40000, None][:18],
        "info": "300epoch",
        "sr": "40k",
        "f0": 1,
        "version": "v2",
        # Applio's additions
        "epoch": 300,
        "step": 12345,
        "creation_date": datetime.datetime(2025, 1, 2, 3, 4, 5).isoformat(),
        "model_hash": "0" * 64,
        "model_name": "voice",
        "author": "someone",
        "embedder_model": "contentvec",
        "speakers_id": 1,
        "vocoder": "HiFi-GAN",
        "overtrain_info": "None",
        "dataset_length": 42,
    }


def training_checkpoint(model, steps=1):
    """A G_*.pth: the state dict with _metadata and AdamW's state after `steps` steps."""
    optimizer = torch.optim.AdamW(list(model.named_parameters()), lr=1e-4)
    train_steps(model, optimizer, steps)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": steps,
        "learning_rate": 1e-4,
    }, optimizer


def train_steps(model, optimizer, steps, seed=2):
    x, speaker = sample_input(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(x, speaker).square().mean()
        loss.backward()
        optimizer.step()


def parametrized_keys(state_dict):
    return [k for k in state_dict if "parametrizations." in k and k.endswith(("original0", "original1"))]


def legacy_name(key):
    prefix, rest = key.split("parametrizations.", 1)
    param, leaf = rest.split(".")
    return f"{prefix}{param}_{'g' if leaf == 'original0' else 'v'}"


def legacy_names(state_dict):
    return OrderedDict((legacy_name(k) if k in parametrized_keys(state_dict) else k, v)
                       for k, v in state_dict.items())


def spectral_discriminator(parametrized):
    """An RVC-style discriminator block: spectral-normed convs (one transposed) beside a weight-normed one."""
    torch.manual_seed(0)
    layers = [nn.Conv1d(2, 4, 3, padding=1), nn.ConvTranspose1d(4, 4, 4, stride=2, padding=1), nn.Conv1d(4, 2, 3)]
    spectral = nn.utils.parametrizations.spectral_norm if parametrized else nn.utils.spectral_norm
    weight_norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm
    return nn.Sequential(spectral(layers[0]), spectral(layers[1]), weight_norm(layers[2])).eval()
