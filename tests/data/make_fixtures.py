"""Make the small torch-made checkpoints the torch-free tests start from.

Run with torch 2.13.0: `python tests/data/make_fixtures.py`.  The files are committed
so that the tests on Pythons without torch still read real `torch.save` output;
tests/test_fixtures.py checks, with torch, that they are what this script says.
"""

import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_model(parametrized):
    torch.manual_seed(0)
    convs = [nn.Conv1d(2, 3, 3), nn.ConvTranspose1d(3, 2, 4)]
    norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm
    return nn.Sequential(norm(convs[0]), norm(convs[1], dim=1))


def main():
    parametrized = tiny_model(parametrized=True).state_dict()
    legacy = tiny_model(parametrized=False).state_dict()
    torch.save(parametrized, os.path.join(HERE, "parametrized.bin"))
    torch.save(legacy, os.path.join(HERE, "legacy.bin"))
    torch.save(parametrized, os.path.join(HERE, "parametrized_legacy_format.bin"),
               _use_new_zipfile_serialization=False)


if __name__ == "__main__":
    main()
