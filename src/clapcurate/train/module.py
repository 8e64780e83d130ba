"""The Lightning modules: a CLAP model trained with the contrastive or soft-label loss
(`ClapModule`), and a PANNs-style audio tagger pretrained on labelled clips (`TaggerModule`).
Both share Adam with ReduceLROnPlateau on the validation loss and an exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from lightning.pytorch import LightningModule
from torch import nn

from ..errors import ClapcurateError
from ..losses import contrastive_loss, soft_label_loss
from ..model import checkpoints
from ..model.audio_encoders import AudioTagger, save_panns_checkpoint
from ..model.clap import CLAP
from ..model.weights import tensors_hash
from ..metrics import average_precision, retrieval_metrics
from .config import LossConfig, OptimConfig

RETRIEVAL_KEYS = ("R@1", "R@5", "R@10")
TAGGER_CHECKPOINT = "audio_encoder.pth"  # in a tagger run's best/ and last/
FROZEN_WEIGHTS_KEY = "frozen_weights"  # in a resume state: {frozen part: tensors_hash}, their weights left out


class TrainingDivergedError(ClapcurateError):
    """The training loss became NaN or infinite."""


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def share_sizes(rows: int, device) -> list[int]:
    """The number of rows of every rank's share of the global batch, in rank order (every rank
    calls it with its own `rows`)."""
    if _world_size() == 1:
        return [rows]
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(_world_size())]
    dist.all_gather(sizes, torch.tensor([rows], dtype=torch.long, device=device))
    return [int(size) for size in sizes]


def gather_rows(tensor: torch.Tensor, with_grad: bool, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's rows [B_r, ...] into the global batch [sum B_r, ...], in rank order.

    `with_grad`: the gather is differentiable, each rank's rows keep their gradient path
    (the losses then see the global batch, as one large batch would). Shares of different sizes
    (a batch that does not divide evenly) are padded to the largest for the collective; `sizes`
    (`share_sizes`) saves asking for them again. Single process: as is.
    """
    if _world_size() == 1:
        return tensor
    sizes = sizes or share_sizes(tensor.shape[0], tensor.device)
    padded = torch.cat([tensor, tensor.new_zeros(max(sizes) - tensor.shape[0], *tensor.shape[1:])])
    # [W, max(sizes), ...]; torch's differentiable all_gather sums each part's gradient over the ranks
    parts = dist_nn.all_gather(padded) if with_grad else _stacked(padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0)


def _stacked(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' equally sized tensors [B, ...] stacked in rank order: [W, B, ...]."""
    parts = [torch.empty_like(tensor) for _ in range(_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (a copy; single process: as is)."""
    if _world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / _world_size()


def global_batch_loss(audio_emb, text_emb, logit_scale, loss: LossConfig | None,
                      teacher_audio=None, teacher_text=None, teacher_scale: float | None = None,
                      local_loss: bool = False) -> torch.Tensor:
    """The configured loss over the global batch (every rank's rows gathered). `teacher_scale`:
    the teacher's logit scale, the default 1 / temperature of softmax soft targets.

    Each rank returns a value whose mean over the ranks is the global loss, and whose gradients,
    summed across ranks by the gather's backward and averaged by DDP, are the global loss's: the
    whole loss on every rank, or with `local_loss` world size x this rank's share (its own rows
    of the similarity matrix against every gathered row: n x N memory instead of N x N).
    """
    sizes = share_sizes(audio_emb.shape[0], audio_emb.device)
    audio_emb, text_emb = gather_rows(audio_emb, True, sizes), gather_rows(text_emb, True, sizes)  # [N, d]
    rows = None
    if local_loss and len(sizes) > 1:
        first = sum(sizes[:dist.get_rank()])
        rows = slice(first, first + sizes[dist.get_rank()])
    if loss is None or loss.kind == "contrastive":
        value = contrastive_loss(audio_emb, text_emb, logit_scale, rows=rows)
    else:
        value = soft_label_loss(
            audio_emb, text_emb, logit_scale, gather_rows(teacher_audio, False, sizes),
            gather_rows(teacher_text, False, sizes), beta=loss.beta, target_norm=loss.target_norm,
            target_scale=1.0 / loss.target_temperature if loss.target_temperature else teacher_scale, rows=rows,
        )
    return value * len(sizes) if rows is not None else value


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_finite(loss: torch.Tensor, module: LightningModule) -> None:
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"the training loss became {loss.item()} at step {module.global_step} (epoch {module.current_epoch}); "
            "training stopped, the last good checkpoint is the run folder's last/ "
            "(try a lower optim.lr or precision 32)"
        )


class PlateauModule(LightningModule):
    """Adam on the trainable parameters of `self.model`, the learning rate cut by
    ReduceLROnPlateau after each validation, and the state an exact resume needs."""

    def __init__(self, optim: OptimConfig):
        super().__init__()
        self.optim = optim
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._restored_plateau_state: dict | None = None

    def save_model(self, folder) -> None:
        """Write the trained model to `folder` (`best/`, `last/` of a run)."""
        raise NotImplementedError

    def step_plateau(self, val_loss: float) -> None:
        if self.plateau is not None and not self.trainer.sanity_checking:
            self.plateau.step(val_loss)
            self.log("lr", self.plateau.optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.optim.plateau_factor, patience=self.optim.plateau_patience
        )
        if self._restored_plateau_state is not None:
            self.plateau.load_state_dict(self._restored_plateau_state)
        return optimizer

    # -------------------------------------------------------------- exact resume
    def frozen_parts(self) -> list[str]:
        """Names of the submodules that training never changes and that a resumed run rebuilds
        as they were (from its config): the resume state keeps only their hash."""
        return []

    def _frozen_weights(self, state: dict) -> dict[str, dict[str, torch.Tensor]]:
        """{frozen part: {name within it: tensor}} of a state dict of this module."""
        parts = {part: {} for part in self.frozen_parts()}
        for key, tensor in state.items():
            part = next((p for p in parts if key.startswith(p + ".")), None)
            if part is not None:
                parts[part][key[len(part) + 1:]] = tensor
        return parts

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["plateau"] = self.plateau.state_dict() if self.plateau is not None else None
        checkpoint["torch_rng"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
        state = checkpoint["state_dict"]
        checkpoint[FROZEN_WEIGHTS_KEY] = {}
        for part, weights in self._frozen_weights(state).items():
            checkpoint[FROZEN_WEIGHTS_KEY][part] = tensors_hash(weights)
            for key in weights:
                del state[f"{part}.{key}"]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning loads the state dict after this hook: the frozen parts go back in first
        current = self._frozen_weights(self.state_dict())
        for part, expected in checkpoint.get(FROZEN_WEIGHTS_KEY, {}).items():
            weights = current.get(part, {})
            if tensors_hash(weights) != expected:
                raise ClapcurateError(
                    f"cannot resume: the frozen {part.removeprefix('model.').replace('_', ' ')} differs from the one the run "
                    f"was saved with (sha256 {expected}); resume with the same teacher and text encoder")
            checkpoint["state_dict"].update({f"{part}.{key}": tensor for key, tensor in weights.items()})
        self._restored_plateau_state = checkpoint.get("plateau")
        torch.set_rng_state(checkpoint["torch_rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])


class ClapModule(PlateauModule):
    """Trains `model`; `teacher` (frozen) gives online soft-label targets when `loss` asks for them.

    `freeze_batchnorm`: BatchNorm layers stay in eval mode, keeping their running statistics.
    `freeze_text_encoder`: the text encoder is not trained (its projection is);
    `freeze_audio_encoder` likewise for the audio encoder (e.g. a pretrained one and few pairs).
    `local_loss`: under DDP each rank computes only its own rows of the loss (`global_batch_loss`).
    """

    def __init__(self, model: CLAP, optim: OptimConfig, loss: LossConfig | None = None,
                 teacher: CLAP | None = None, freeze_batchnorm: bool = False, freeze_text_encoder: bool = False,
                 freeze_audio_encoder: bool = False, local_loss: bool = False):
        super().__init__(optim)
        self.local_loss = local_loss
        self.model = model
        self.teacher = teacher
        self.loss_config = loss
        # a student starts as a copy of its teacher: the teacher's logit scale, for softmax targets
        self.teacher_scale = float(model.logit_scale_exp().detach())
        self.freeze_batchnorm = freeze_batchnorm
        self.freeze_text_encoder = freeze_text_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        if freeze_audio_encoder:
            model.audio_encoder.requires_grad_(False)
        if teacher is not None:
            teacher.requires_grad_(False)
        if freeze_text_encoder:
            model.text_encoder.requires_grad_(False)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._val_losses: list[tuple[float, int]] = []

    def frozen_parts(self) -> list[str]:
        parts = ["teacher"] if self.teacher is not None else []
        if self.freeze_text_encoder:
            parts.append("model.text_encoder")
        if self.freeze_audio_encoder:
            parts.append("model.audio_encoder")
        return parts

    # -------------------------------------------------------------- modes
    def train(self, mode: bool = True):
        super().train(mode)
        frozen = []
        if self.teacher is not None:
            frozen.append(self.teacher)
        if self.freeze_text_encoder:
            frozen.append(self.model.text_encoder)
        if self.freeze_audio_encoder:
            frozen.append(self.model.audio_encoder)
        if self.freeze_batchnorm:
            frozen.extend(batchnorm_layers(self.model))
        for module in frozen:
            module.eval()
        return self

    def on_train_start(self) -> None:
        # Lightning keeps the modes modules arrive in; a loaded checkpoint arrives in eval mode.
        self.train()

    # -------------------------------------------------------------- forward
    @staticmethod
    def embed(model: CLAP, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio_emb, text_emb), each [B, d_proj], L2-normalised."""
        audio = model.encode_logmel(batch["logmel"])
        if "text_features" in batch:
            return audio, model.encode_text_features(batch["text_features"])
        return audio, model.encode_text(batch["captions"])

    def teacher_targets(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Teacher embeddings of the batch for soft labels: cached ones, or the frozen teacher's."""
        if self.loss_config is None or self.loss_config.kind != "soft_label":
            return None, None
        if self.loss_config.teacher_targets == "cached":
            return batch["teacher_audio"], batch["teacher_text"]
        with torch.no_grad():
            return self.embed(self.teacher, batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        audio_emb, text_emb = self.embed(self.model, batch)
        teacher_audio, teacher_text = self.teacher_targets(batch)
        loss = global_batch_loss(audio_emb, text_emb, self.model.logit_scale_exp(), self.loss_config,
                                 teacher_audio, teacher_text, self.teacher_scale, self.local_loss)
        value = mean_over_ranks(loss.detach()) if self.local_loss else loss.detach()  # the global loss
        check_finite(value, self)
        self.log("train_loss", value, prog_bar=True, batch_size=audio_emb.shape[0])
        self.log("logit_scale", self.model.logit_scale_exp(), batch_size=audio_emb.shape[0])
        return loss

    # -------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_outputs.clear()
        self._val_losses.clear()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        audio_emb, text_emb = self.embed(self.model, batch)
        loss = contrastive_loss(audio_emb, text_emb, self.model.logit_scale_exp())
        self._val_losses.append((loss.item(), audio_emb.shape[0]))
        self._val_outputs.append((audio_emb.float().cpu(), text_emb.float().cpu(), batch["clip_index"].cpu()))

    def on_validation_epoch_end(self) -> None:
        losses = np.array(self._val_losses)  # [batches, 2]: loss, size
        val_loss = float((losses[:, 0] * losses[:, 1]).sum() / losses[:, 1].sum())
        audio = torch.cat([out[0] for out in self._val_outputs]).numpy()
        text = torch.cat([out[1] for out in self._val_outputs]).numpy()
        clip_index = torch.cat([out[2] for out in self._val_outputs]).numpy()
        _, first_row = np.unique(clip_index, return_index=True)  # one audio row per clip, clips in index order
        metrics = retrieval_metrics(audio[first_row], text, clip_index)
        self.log("val_loss", val_loss, prog_bar=True)
        for key in RETRIEVAL_KEYS:
            self.log(f"val_t2a_{key}", metrics[f"text_to_audio/{key}"])
            self.log(f"val_a2t_{key}", metrics[f"audio_to_text/{key}"])
        self.step_plateau(val_loss)

    def save_model(self, folder) -> None:
        checkpoints.save(self.model, folder)


class TaggerModule(PlateauModule):
    """Trains an `AudioTagger` with binary cross-entropy per class; validation logs `val_loss`
    and `val_mAP`."""

    def __init__(self, model: AudioTagger, optim: OptimConfig, labels: list[str]):
        super().__init__(optim)
        self.model = model
        self.labels = list(labels)
        self._val_scores: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model.forward_logmel(batch["logmel"])
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"]), logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        check_finite(loss, self)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["logmel"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_scores.clear()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, logits = self._loss(batch)
        self._val_scores.append((logits.float().cpu(), batch["labels"].cpu()))

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat([out[0] for out in self._val_scores])
        targets = torch.cat([out[1] for out in self._val_scores])
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(logits, targets))
        self.log("val_loss", val_loss, prog_bar=True)
        self.log("val_mAP", average_precision(logits.numpy(), targets.numpy()), prog_bar=True)
        self.step_plateau(val_loss)

    def save_model(self, folder) -> None:
        save_panns_checkpoint(self.model, Path(folder) / TAGGER_CHECKPOINT, self.labels)
