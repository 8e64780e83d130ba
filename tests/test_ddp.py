"""Under DDP the losses see the global batch: 2 CPU processes (gloo) against one process."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clapcurate.train import LossConfig, global_batch_loss

WORLD_SIZE = 2
BATCH = 6  # global


def global_inputs():
    generator = torch.Generator().manual_seed(0)
    audio, text, teacher_audio, teacher_text = (
        F.normalize(torch.randn(BATCH, 8, generator=generator), dim=-1) for _ in range(4)
    )
    return audio, text, teacher_audio, teacher_text


def loss_and_grads(audio, text, teacher_audio, teacher_text, loss_config):
    audio, text = audio.clone().requires_grad_(True), text.clone().requires_grad_(True)
    loss = global_batch_loss(audio, text, torch.tensor(10.0), loss_config, teacher_audio, teacher_text)
    loss.backward()
    return loss.detach(), audio.grad, text.grad


def run_rank(rank, port, loss_configs, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        share = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        for name, loss_config in loss_configs.items():
            results[(name, rank)] = loss_and_grads(*(x[share] for x in global_inputs()), loss_config)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_loss_equals_one_process_on_the_concatenated_batch():
    loss_configs = {
        "contrastive": LossConfig(kind="contrastive"),
        "soft_label": LossConfig(kind="soft_label", beta=0.3, target_norm="before_mix"),
    }
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(run_rank, args=(free_port(), loss_configs, results), nprocs=WORLD_SIZE, join=True)
        results = dict(results)
    for name, loss_config in loss_configs.items():
        loss, audio_grad, text_grad = loss_and_grads(*global_inputs(), loss_config)
        for rank in range(WORLD_SIZE):
            rank_loss, rank_audio_grad, rank_text_grad = results[(name, rank)]
            share = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
            assert torch.allclose(rank_loss, loss, atol=1e-6)
            # Every rank computes the same global loss; the gather's backward sums their
            # gradients, and DDP's gradient averaging divides by the world size again.
            assert torch.allclose(rank_audio_grad / WORLD_SIZE, audio_grad[share], atol=1e-6)
            assert torch.allclose(rank_text_grad / WORLD_SIZE, text_grad[share], atol=1e-6)
