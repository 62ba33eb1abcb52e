"""Two CPU processes under PyTorch's FSDP (gloo) take the same training step as one process on the global batch.

Lightning refuses FSDP on CPU, so no ``Trainer.fit``: each process builds the strategy of configs/trainer/
gpu_fsdp.yaml (``LeffaFSDPStrategy``: the process group, the wrap policy, activation checkpointing, the ignored
VAE), lets it wrap a ``LeffaModule`` and runs one real ``training_step`` through the FSDP root as Lightning does
(diffusion + Leffa loss: reference features and attention records flow through the sharded blocks), backward,
the strategy's gradient-norm clipping (1.0) and SGD. The full parameters gathered by the strategy, and the
export written from them, equal the single-process step's; the planner's FSDP gradient bytes equal the shards'.
"""

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
import torch.multiprocessing as mp
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies.strategy import _ForwardRedirection
from safetensors.torch import load_file
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.utils.data import default_collate

from leffa_pl.callbacks.export_checkpoint import ExportReleasedCheckpoint
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.planning.plan import TrainingSetup, static_memory
from leffa_pl.testing.training import RandomTryOnDataset, SGDLeffaModule
from leffa_pl.training.sharding import LeffaFSDPStrategy, ShardedPrecision, blocks_to_shard

WORLD, PER_RANK = 2, 2
CLIP = 1.0
# Every sample takes the Leffa loss (no reference dropout, every timestep below the threshold), so each rank's
# mean loss is the global mean's share and FSDP's gradient average equals the global batch's gradient.
MODULE = dict(learning_rate=1.0, reference_dropout=0.0, leffa_loss=LeffaLossSettings(weight=1.0, theta_timestep=1000))


def _module() -> SGDLeffaModule:
    torch.manual_seed(0)
    module = SGDLeffaModule(**MODULE)
    module.set_stage(leffa_loss=True, end_step=None)
    # training_step reads the trainer (accumulation, logging, the finite-loss vote): a bare one, logging off.
    module.trainer = pl.Trainer(accelerator="cpu", devices=1, barebones=True, logger=False)
    return module


def _batch(indices) -> dict:
    dataset = RandomTryOnDataset(WORLD * PER_RANK, (32, 24))
    return default_collate([dataset[i] for i in indices])


def _sharded_step(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    strategy = LeffaFSDPStrategy(accelerator=CPUAccelerator(), parallel_devices=[torch.device("cpu")] * WORLD,
                                 cluster_environment=LightningEnvironment(), process_group_backend="gloo")
    strategy.precision_plugin = FSDPPrecision("32-true")  # what the trainer hands it
    strategy.setup_environment()
    module = _module()
    strategy.connect(module)
    strategy.model = strategy._setup_model(module)
    optimizer = module.configure_optimizers()
    units = [m for m in strategy.model.modules() if isinstance(m, FullyShardedDataParallel)]

    output = _ForwardRedirection()(strategy.model, module, "training_step", _batch(range(rank * PER_RANK,
                                                                                          (rank + 1) * PER_RANK)), 0)
    output["loss"].backward()
    strategy.precision_plugin.clip_gradients(optimizer, CLIP, "norm")
    optimizer.step()

    losses = torch.stack([output["loss"].detach(), output["leffa"].loss.detach()])
    torch.distributed.all_reduce(losses)
    state = strategy.lightning_module_state_dict()  # the full weights, gathered on rank 0 (every rank takes part)
    export = out / "export"
    ExportReleasedCheckpoint(dirpath=str(export), formats=(".safetensors",)).on_train_end(
        SimpleNamespace(strategy=strategy, is_global_zero=rank == 0, datamodule=None), module)
    if rank == 0:
        local = {name: p.numel() for name, p in module.model.named_parameters()}
        flat = [unit._flat_param for unit in units]  # each unit's FlatParameter: this rank's shard
        sharded = {"weights": sum(f.nbytes for f in flat), "gradients": sum(f.grad.nbytes for f in flat
                                                                             if f.grad is not None)}
        torch.save({"state": {k: v.clone() for k, v in state.items()}, "losses": losses / WORLD,
                    "units": len(units), "layers": len(output["leffa"].layers),
                    "precision": type(strategy.precision_plugin).__name__, "local_numel": local,
                    "sharded_bytes": sharded}, out / "rank0.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_fsdp_step_equals_one_process_step_on_the_global_batch(tmp_path):
    module = _module()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    expected_units = len(blocks_to_shard(module.model)) + 1  # + the root
    output = module.training_step(_batch(range(WORLD * PER_RANK)), 0)
    output["loss"].backward()
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, CLIP)
    module.configure_optimizers().step()
    single = module.model.state_dict()

    # fork: the ranks inherit the imports and the cached meta pass (seconds each under spawn)
    mp.start_processes(_sharded_step, args=(_free_port(), tmp_path), nprocs=WORLD, start_method="fork")
    sharded = torch.load(tmp_path / "rank0.pt", weights_only=True)

    assert sharded["precision"] == ShardedPrecision.__name__ and sharded["units"] == expected_units
    assert sharded["layers"] > 0  # attention records reached the Leffa loss through the sharded blocks
    # rank 0 held shards only: the parameters it kept locally are smaller than the model
    assert sum(sharded["local_numel"].values()) < sum(p.numel() for p in module.model.parameters())
    torch.testing.assert_close(sharded["losses"], torch.stack([output["loss"].detach(), output["leffa"].loss]),
                               rtol=1e-5, atol=1e-6)
    state = {k.removeprefix("model."): v for k, v in sharded["state"].items() if k.startswith("model.")}
    assert state.keys() == single.keys()
    moved = [k for k in single if not torch.equal(before[k], single[k])]
    assert any(k.startswith("unet.") for k in moved) and any(k.startswith("unet_encoder.") for k in moved)
    assert all(torch.equal(before[k], state[k]) for k in before if k.startswith("vae."))
    difference = max((state[k] - single[k]).abs().max().item() for k in single)
    # measured 1.2e-7 against a largest update of 0.05; clipping by the local shards' norm gives 1.5e-2
    assert difference <= 1e-5, difference
    # the planner's FSDP terms for 2 devices: the shards' bytes as FSDP holds them (up to its padding of each unit)
    plan = static_memory(module.model, TrainingSetup(devices=WORLD, strategy="fsdp", precision="32-true",
                                                     gradient_checkpointing=True, trainable="both", optimizer="adamw",
                                                     ema=False))
    padding = sharded["units"] * (WORLD - 1) * 4  # FSDP pads each unit's flat parameter to a multiple of WORLD
    assert abs(plan.gradients - sharded["sharded_bytes"]["gradients"]) <= padding  # measured: equal
    vae = sum(p.nbytes for p in module.model.vae.parameters())
    assert 0 < plan.weights - (vae + sharded["sharded_bytes"]["weights"]) < plan.gradients  # + the unsharded units
    exported = load_file(tmp_path / "export" / "leffa.safetensors")
    assert exported.keys() == single.keys() and all(torch.equal(exported[k], state[k]) for k in single)
