"""Under DDP the losses and whole fits see the global batch: 2 CPU processes (gloo) against one
process."""

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clapcurate.train import AugmentConfig, LossConfig, fit_student, fit_teacher, global_batch_loss
from clapcurate.train.config import placed

from test_train import pairs_csv, student_config, teacher_config, weights  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

WORLD_SIZE = 2
BATCH = 7  # global: shares of 3 and 4 rows


def global_inputs():
    generator = torch.Generator().manual_seed(0)
    audio, text, teacher_audio, teacher_text = (
        F.normalize(torch.randn(BATCH, 8, generator=generator), dim=-1) for _ in range(4)
    )
    return audio, text, teacher_audio, teacher_text


def loss_and_grads(audio, text, teacher_audio, teacher_text, loss_config, local_loss=False):
    audio, text = audio.clone().requires_grad_(True), text.clone().requires_grad_(True)
    loss = global_batch_loss(audio, text, torch.tensor(10.0), loss_config, teacher_audio, teacher_text,
                             local_loss=local_loss)
    loss.backward()
    return loss.detach(), audio.grad, text.grad


def run_rank(rank, port, loss_configs, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        share = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        for (name, local_loss), loss_config in loss_configs.items():
            results[(name, local_loss, rank)] = loss_and_grads(*(x[share] for x in global_inputs()), loss_config,
                                                               local_loss)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_loss_equals_one_process_on_the_concatenated_batch():
    loss_configs = {
        (name, local_loss): loss_config
        for name, loss_config in {
            "contrastive": LossConfig(kind="contrastive"),
            "soft_label": LossConfig(kind="soft_label", beta=0.3, target_norm="before_mix"),
            "softmax": LossConfig(kind="soft_label", beta=0.3, target_norm="softmax", target_temperature=0.2),
        }.items()
        for local_loss in (False, True)
    }
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(run_rank, args=(free_port(), loss_configs, results), nprocs=WORLD_SIZE, join=True)
        results = dict(results)
    for (name, local_loss), loss_config in loss_configs.items():
        loss, audio_grad, text_grad = loss_and_grads(*global_inputs(), loss_config)
        rank_losses = [results[(name, local_loss, rank)][0] for rank in range(WORLD_SIZE)]
        # Each rank's value averages to the global loss: with full gathering every rank holds it,
        # with local_loss each holds world size x its own rows' share.
        torch.testing.assert_close(sum(rank_losses) / WORLD_SIZE, loss, atol=1e-6, rtol=1e-6)
        if not local_loss:
            assert all(torch.allclose(rank_loss, loss, atol=1e-6) for rank_loss in rank_losses)
        else:
            assert not torch.allclose(rank_losses[0], loss, atol=1e-3)  # a share, not the whole loss
        for rank in range(WORLD_SIZE):
            _, rank_audio_grad, rank_text_grad = results[(name, local_loss, rank)]
            share = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
            # The gather's backward sums every rank's gradient for these rows (world size x the
            # global loss's gradient); DDP's gradient averaging divides by the world size again.
            torch.testing.assert_close(rank_audio_grad / WORLD_SIZE, audio_grad[share], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(rank_text_grad / WORLD_SIZE, text_grad[share], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ whole fits
DDP = dict(accelerator="cpu", devices=WORLD_SIZE, strategy="ddp")


def fit_rank(rank, port, fits):
    """One of the processes of a 2-process fit, as torchrun would start it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    for fit, config in fits:
        fit(config)


def on_processes(config, processes, **trainer):
    settings = DDP if processes > 1 else {}
    return dataclasses.replace(config, out_dir=f"{config.out_dir}_{processes}",
                               trainer=dataclasses.replace(config.trainer, **settings, **trainer))


@pytest.fixture
def dropout_free_teacher(tiny_clap_config, build_tiny_clap, tmp_path):
    """A teacher checkpoint without dropout: ranks draw dropout masks from generators of their
    own, so only a dropout-free model trains to the same numbers on any number of processes."""
    from clapcurate.model import checkpoints

    audio = dataclasses.replace(tiny_clap_config.audio, block_dropout=0.0, head_dropout=0.0)
    model = build_tiny_clap(dataclasses.replace(tiny_clap_config, audio=audio, projection_dropout=0.0))
    return checkpoints.save(model, tmp_path / "teacher"), model.config


def test_a_two_process_fit_equals_a_one_process_fit_on_the_same_global_batch(dropout_free_teacher, pairs_csv,
                                                                               tmp_path):
    teacher_dir, model_config = dropout_free_teacher
    soft_student = student_config(teacher_dir, pairs_csv, tmp_path / "soft", max_steps=4, augment=AugmentConfig(),
                                  loss=LossConfig(kind="soft_label", target_norm="after_mix"))
    soft_student = dataclasses.replace(soft_student, data=dataclasses.replace(soft_student.data, val_fraction=0.25,
                                                                                 min_val_pairs_warning=4),
                                       trainer=dataclasses.replace(soft_student.trainer, val_check_interval=2))
    local_student = student_config(teacher_dir, pairs_csv, tmp_path / "local", max_steps=3,
                                   loss=LossConfig(kind="contrastive"))
    local_student = dataclasses.replace(local_student, data=dataclasses.replace(local_student.data, batch_size=7))
    teacher = teacher_config(model_config, pairs_csv, tmp_path / "teacher_fit", max_steps=3,
                             freeze_audio_encoder=True)  # BatchNorm in training mode needs GPUs to synchronise
    fits = [(fit_student, soft_student, {}), (fit_student, local_student, {"local_loss": True}),
            (fit_teacher, teacher, {})]
    mp.spawn(fit_rank, args=(free_port(), [(fit, on_processes(config, WORLD_SIZE, **trainer))
                                           for fit, config, trainer in fits]), nprocs=WORLD_SIZE, join=True)
    for fit, config, trainer in fits:
        one, two = fit(on_processes(config, 1, **trainer)), Path(on_processes(config, WORLD_SIZE).out_dir)
        assert [json.loads((run / "summary.json").read_text())["processes"] for run in (one, two)] == [1, WORLD_SIZE]
        curves = [pd.read_csv(f"{run}/metrics.csv") for run in (one, two)]
        for key in ("train_loss", "val_loss"):
            if key in curves[0]:
                one_curve, two_curve = (curve[key].dropna().to_numpy() for curve in curves)
                assert len(one_curve) == len(two_curve) > 0
                # float32 sums in another order (the gathered batch, the gradient all-reduce)
                np.testing.assert_allclose(two_curve, one_curve, rtol=1e-5, atol=1e-6, err_msg=f"{two}: {key}")
        one_weights, two_weights = weights(one / "last"), weights(two / "last")
        assert one_weights.keys() == two_weights.keys()
        # The same gradients up to float32 rounding; Adam divides each gradient entry by its own
        # magnitude, so an entry whose gradient is at rounding level can step by up to lr either
        # way at each step, whatever the CPU's kernels round: every entry within the two runs'
        # steps, all but 0.1% of the trained ones within 1e-6.
        differences = torch.cat([(two_weights[name] - tensor).abs().flatten() for name, tensor in one_weights.items()
                                 if not name.startswith("text_encoder.")])  # frozen in these fits
        assert differences.max() <= 2 * config.optim.lr * config.trainer.max_steps * 1.01, two
        assert (differences > 1e-6).float().mean() < 1e-3, (two, (differences > 1e-6).float().mean())


# ------------------------------------------------------------------ the feature cache
def prepare_features(rank, config, manifest, counts, start):
    """One process of a fit preparing its pairs; counts the log-mels it computed itself."""
    from clapcurate import features
    from clapcurate.train.fit import _Inputs

    torch.set_num_threads(1)
    inputs = _Inputs.for_audio(config.model.audio, config)
    computed = []
    original = features.compute_logmel
    features.compute_logmel = lambda *args, **kwargs: computed.append(1) or original(*args, **kwargs)
    start.wait()  # both look at the empty cache at the same moment
    pairs, _, _ = inputs.prepare(manifest, "pairs", config.data)
    counts[rank] = (len(computed), len(pairs.clip_features))


def test_processes_sharing_a_feature_cache_compute_each_log_mel_once(tiny_clap_config, pairs_csv, tmp_path):
    config = placed(teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run",
                                   data={"feature_cache": str(tmp_path / "features")}))  # as a fit runs it
    manifest = pd.read_csv(pairs_csv)
    with mp.Manager() as manager:
        counts = manager.dict()
        mp.spawn(prepare_features, args=(config, manifest, counts, manager.Barrier(WORLD_SIZE)), nprocs=WORLD_SIZE,
                 join=True)
        counts = dict(counts)
    assert [counts[rank][1] for rank in range(WORLD_SIZE)] == [len(manifest)] * WORLD_SIZE  # all features, each
    assert sum(counts[rank][0] for rank in range(WORLD_SIZE)) == len(manifest)  # computed by one of them
