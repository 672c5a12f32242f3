#!/usr/bin/python3
"""Tiny PyTorch zip-format checkpoints for agla::io::read_pytorch_checkpoint's tests.

Made with Debian 12's python3-torch (torch 1.13.1), `torch.save` defaults (zip format, pickle
protocol 2). Values are simple formulas so the C++ test can rebuild them:

  basic.pt         nn.Linear(3, 2) state dict (an OrderedDict with `_metadata`, BUILD opcode) plus
                   f32 = arange(6).reshape(2, 3) / 4, f64 = [0.1, -2.5], f16 = arange(-4, 4) / 8,
                   bf16 = arange(5) * 1.5, i64 = [-3, 0, 2**40], i32 = [7, -7], u8 = [0, 255],
                   i8 = [-128, 127], b = [True, False, True], scalar = tensor(3.25), empty = zeros(0, 3),
                   base = arange(12).reshape(3, 4) (float32), base_t = base.t() (non-contiguous view of
                   base's storage), base_window = base[1:, 1:3] (offset view), expanded =
                   tensor([5.]).expand(4) (stride 0), param = nn.Parameter(ones(2)) (_rebuild_parameter)
                   (weight/bias of the Linear are torch.manual_seed(0) values, exported to basic_linear.npy
                   as [weight.flatten(), bias] float32 for the test)
  nested.pth       {"model": {"w": arange(4) float32, "v": arange(3) int64}, "epoch": 3,
                   "config": {"lr": 0.1, "name": "blip", "flags": [True, None, False], "shape": (2, 3),
                   "big": 2**70, "neg": -5}}  -- LAVIS's layout
  shard-00001-of-00002.bin, shard-00002-of-00002.bin, shard.bin.index.json
                   a two-shard checkpoint: a = arange(3), b = arange(4) * 2 in shard 1, c = ones(2, 2) in shard 2
  malicious_os_system.pt   calls os.system when unpickled by pickle/torch.load(weights_only=False)
  malicious_eval.pt        calls builtins.eval
  malicious_class.pt       an instance of a custom class (`__main__.Payload`, BUILD with state)
  oob_size.pt      a tensor of 100 elements claimed over a 4-element storage
  oob_offset.pt    a 2-element tensor at offset 3 of a 4-element storage
  legacy.pt        the pre-1.6 (non-zip) format
  truncated.pt     the first half of basic.pt
"""
import collections
import json
import os

import numpy as np
import torch

assert torch.__version__.startswith("1.13"), torch.__version__
here = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(here, name)


torch.manual_seed(0)
linear = torch.nn.Linear(3, 2)
sd = linear.state_dict()
np.save(path("basic_linear.npy"), torch.cat([sd["weight"].flatten(), sd["bias"]]).numpy())
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
sd["f32"] = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4
sd["f64"] = torch.tensor([0.1, -2.5], dtype=torch.float64)
sd["f16"] = (torch.arange(-4, 4, dtype=torch.float32) / 8).half()
sd["bf16"] = (torch.arange(5, dtype=torch.float32) * 1.5).bfloat16()
sd["i64"] = torch.tensor([-3, 0, 2**40], dtype=torch.int64)
sd["i32"] = torch.tensor([7, -7], dtype=torch.int32)
sd["u8"] = torch.tensor([0, 255], dtype=torch.uint8)
sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
sd["b"] = torch.tensor([True, False, True])
sd["scalar"] = torch.tensor(3.25)
sd["empty"] = torch.zeros(0, 3)
sd["base"] = base
sd["base_t"] = base.t()
sd["base_window"] = base[1:, 1:3]
sd["expanded"] = torch.tensor([5.0]).expand(4)
sd["param"] = torch.nn.Parameter(torch.ones(2))
torch.save(sd, path("basic.pt"))

torch.save({"model": {"w": torch.arange(4, dtype=torch.float32), "v": torch.arange(3)}, "epoch": 3,
            "config": {"lr": 0.1, "name": "blip", "flags": [True, None, False], "shape": (2, 3),
                       "big": 2**70, "neg": -5}}, path("nested.pth"))

torch.save(collections.OrderedDict(a=torch.arange(3, dtype=torch.float32), b=torch.arange(4, dtype=torch.float32) * 2),
           path("shard-00001-of-00002.bin"))
torch.save(collections.OrderedDict(c=torch.ones(2, 2)), path("shard-00002-of-00002.bin"))
with open(path("shard.bin.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 52}, "weight_map": {"a": "shard-00001-of-00002.bin",
               "b": "shard-00001-of-00002.bin", "c": "shard-00002-of-00002.bin"}}, f, indent=2)


class OsSystem:
    def __reduce__(self):
        return (os.system, ("touch /tmp/agla_pytorch_checkpoint_pwned",))


class Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch /tmp/agla_pytorch_checkpoint_pwned')",))


class Payload:
    def __init__(self):
        self.command = "touch /tmp/agla_pytorch_checkpoint_pwned"


torch.save({"weight": torch.zeros(2), "payload": OsSystem()}, path("malicious_os_system.pt"))
torch.save({"weight": torch.zeros(2), "payload": Eval()}, path("malicious_eval.pt"))
torch.save({"weight": torch.zeros(2), "payload": Payload()}, path("malicious_class.pt"))


class Rebuild:
    """Pickles as torch._utils._rebuild_tensor_v2 over a real storage with chosen geometry."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


storage = torch.arange(4, dtype=torch.float32).storage()
torch.save({"bad": Rebuild(storage, 0, (100,), (1,))}, path("oob_size.pt"))
torch.save({"bad": Rebuild(storage, 3, (2,), (1,))}, path("oob_offset.pt"))

torch.save({"w": torch.ones(2)}, path("legacy.pt"), _use_new_zipfile_serialization=False)
data = open(path("basic.pt"), "rb").read()
open(path("truncated.pt"), "wb").write(data[: len(data) // 2])
