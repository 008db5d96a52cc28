"""Make the example checkpoints: a small HiFi-GAN-style generator saved twice by torch.save, once
with torch>=2.1's parametrized weight norm and once with the legacy one.

Run with torch 2.13.0 from the repository's root: `python examples/make_examples.py`. The output
is the same bytes on every run (tests/test_examples.py checks the committed files against it).
"""

import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Generator(nn.Module):
    """The shape of a HiFi-GAN vocoder, as RVC and many TTS models use it, in miniature: weight-normed
    convolutions before, in and after one upsampling step."""

    def __init__(self, weight_norm):
        super().__init__()
        self.conv_pre = weight_norm(nn.Conv1d(8, 16, 7, padding=3))
        self.ups = nn.ModuleList([weight_norm(nn.ConvTranspose1d(16, 8, 4, stride=2, padding=1))])
        self.resblock = nn.ModuleList([weight_norm(nn.Conv1d(8, 8, 3, padding=d, dilation=d)) for d in (1, 3)])
        self.conv_post = weight_norm(nn.Conv1d(8, 1, 7, padding=3))

    def forward(self, x):
        x = self.ups[0](nn.functional.leaky_relu(self.conv_pre(x), 0.1))
        for conv in self.resblock:
            x = x + conv(nn.functional.leaky_relu(x, 0.1))
        return torch.tanh(self.conv_post(x))


def generator(parametrized):
    torch.manual_seed(0)
    norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm
    return Generator(norm).eval()


def main():
    torch.save(generator(parametrized=True).state_dict(), os.path.join(HERE, "parametrized.pth"))
    torch.save(generator(parametrized=False).state_dict(), os.path.join(HERE, "legacy.pth"))


if __name__ == "__main__":
    main()
