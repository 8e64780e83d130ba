import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from clapcurate.losses import TARGET_NORMS, contrastive_loss, soft_label_loss, soft_targets

SCALE = {"none": None, "after_mix": None, "before_mix": None, "softmax": 2.0}  # 1 / temperature of softmax targets


def unit_rows(n, d, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=generator), dim=-1).to(dtype)


def test_contrastive_loss_is_symmetric_cross_entropy():
    audio, text = unit_rows(6, 8, 0), unit_rows(6, 8, 1)
    scale = torch.tensor(14.3)
    logits = scale * audio @ text.T
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(contrastive_loss(audio, text, scale), expected, atol=1e-6)


def test_contrastive_loss_two_pairs_by_hand():
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # C = 2 * [[1, 0.6], [0, 0.8]]
    row_term = (math.log(1 + math.exp(2 * 0.6 - 2)) + math.log(1 + math.exp(0 - 2 * 0.8))) / 2
    col_term = (math.log(1 + math.exp(0 - 2)) + math.log(1 + math.exp(2 * 0.6 - 2 * 0.8))) / 2
    loss = contrastive_loss(audio, text, 2.0)
    assert loss.item() == pytest.approx((row_term + col_term) / 2, abs=1e-6)


def test_contrastive_loss_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="must both be"):
        contrastive_loss(unit_rows(3, 4, 0), unit_rows(2, 4, 1), 10.0)


def test_soft_targets_none_clamps_negative_cosines_and_keeps_the_authors_mass():
    teacher = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    targets = soft_targets(teacher, beta=0.5, target_norm="none")
    expected = torch.tensor([
        [1.0, 0.3, 0.0],
        [0.3, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    ])
    assert torch.allclose(targets, expected, atol=1e-6)


def test_soft_targets_after_mix_divides_mixed_rows_by_their_sum():
    teacher = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    targets = soft_targets(teacher, beta=0.5, target_norm="after_mix")
    assert torch.allclose(targets[0], torch.tensor([1.0, 0.3, 0.0]) / 1.3, atol=1e-6)
    assert torch.allclose(targets[2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


def test_soft_targets_before_mix_normalises_teacher_rows_first():
    teacher = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    targets = soft_targets(teacher, beta=0.5, target_norm="before_mix")
    cos_row = torch.tensor([1.0, 0.6, 0.0]) / 1.6
    assert torch.allclose(targets[0], 0.5 * torch.tensor([1.0, 0.0, 0.0]) + 0.5 * cos_row, atol=1e-6)


def test_soft_targets_ignore_the_scale_of_teacher_embeddings():
    teacher = unit_rows(5, 7, 3)
    scaled = teacher * torch.tensor([[2.0], [0.5], [3.0], [1.0], [7.0]])
    for norm in TARGET_NORMS:
        assert torch.allclose(soft_targets(teacher, 0.3, norm, SCALE[norm]), soft_targets(scaled, 0.3, norm, SCALE[norm]),
                              atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), beta=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_normalised_targets_are_distributions_with_the_promised_diagonal(n, beta, seed):
    teacher = unit_rows(n, 4, seed)
    for norm in ("after_mix", "before_mix"):
        targets = soft_targets(teacher, beta, norm)
        assert torch.all(targets >= 0)
        assert torch.allclose(targets.sum(dim=1), torch.ones(n), atol=1e-5)
    assert torch.all(soft_targets(teacher, beta, "before_mix").diagonal() >= 1 - beta - 1e-6)


def test_soft_targets_reject_bad_arguments():
    with pytest.raises(ValueError, match="target_norm"):
        soft_targets(unit_rows(3, 4, 0), 0.3, "rows")
    with pytest.raises(ValueError, match="beta"):
        soft_targets(unit_rows(3, 4, 0), 1.5)


def _loss_and_grads(loss_fn, audio, text, scale):
    audio = audio.clone().requires_grad_(True)
    text = text.clone().requires_grad_(True)
    scale = scale.clone().requires_grad_(True)
    loss = loss_fn(audio, text, scale)
    loss.backward()
    return loss.detach(), audio.grad, text.grad, scale.grad


@pytest.mark.parametrize("target_norm", TARGET_NORMS)
def test_soft_label_loss_with_beta_zero_equals_contrastive_exactly(target_norm):
    audio, text = unit_rows(9, 16, 4), unit_rows(9, 16, 5)
    teacher_audio, teacher_text = unit_rows(9, 16, 6), unit_rows(9, 16, 7)
    scale = torch.tensor(1 / 0.07)
    reference = _loss_and_grads(contrastive_loss, audio, text, scale)
    soft = _loss_and_grads(
        lambda a, t, s: soft_label_loss(a, t, s, teacher_audio, teacher_text, beta=0.0, target_norm=target_norm,
                                        target_scale=SCALE[target_norm]),
        audio, text, scale,
    )
    for expected, got in zip(reference, soft):
        assert torch.equal(expected, got)


def test_soft_label_loss_is_kl_divergence_per_direction():
    audio, text = unit_rows(5, 8, 8), unit_rows(5, 8, 9)
    teacher_audio, teacher_text = unit_rows(5, 8, 10), unit_rows(5, 8, 11)
    logits = 10.0 * audio @ text.T
    a2t = F.kl_div(F.log_softmax(logits, 1), soft_targets(teacher_audio, 0.3, "after_mix"), reduction="batchmean")
    t2a = F.kl_div(F.log_softmax(logits.T, 1), soft_targets(teacher_text, 0.3, "after_mix"), reduction="batchmean")
    loss = soft_label_loss(audio, text, 10.0, teacher_audio, teacher_text, beta=0.3, target_norm="after_mix")
    assert torch.allclose(loss, (a2t + t2a) / 2, atol=1e-6)


def _kl_rows(targets, log_probs):
    return torch.where(targets > 0, targets * (targets.clamp_min(1e-30).log() - log_probs), torch.zeros(())).sum(1).mean()


@pytest.mark.parametrize("target_norm", TARGET_NORMS)
def test_soft_label_loss_uses_audio_targets_for_audio_rows(target_norm):
    """Eq. 3-5: audio->text rows (softmax over captions, C) take the teacher's audio-audio targets,
    text->audio rows (softmax over clips, C^T) the teacher's text-text targets."""
    audio, text = unit_rows(4, 8, 12), unit_rows(4, 8, 13)
    teacher_audio, teacher_text = unit_rows(4, 8, 14), unit_rows(4, 8, 15)
    logits = 10.0 * audio @ text.T
    audio_targets = soft_targets(teacher_audio, 0.3, target_norm, SCALE[target_norm])
    text_targets = soft_targets(teacher_text, 0.3, target_norm, SCALE[target_norm])
    expected = (_kl_rows(audio_targets, F.log_softmax(logits, 1)) + _kl_rows(text_targets, F.log_softmax(logits.T, 1))) / 2
    swapped = (_kl_rows(text_targets, F.log_softmax(logits, 1)) + _kl_rows(audio_targets, F.log_softmax(logits.T, 1))) / 2
    loss = soft_label_loss(audio, text, 10.0, teacher_audio, teacher_text, beta=0.3, target_norm=target_norm,
                           target_scale=SCALE[target_norm])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert (expected - swapped).abs() > 1e-3  # the test tells the two pairings apart


def test_unnormalised_targets_follow_the_kl_formula_with_zero_log_zero():
    audio, text = unit_rows(4, 8, 16), unit_rows(4, 8, 17)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    targets = soft_targets(teacher, 0.3, "none")
    assert (targets == 0).any()
    log_p = F.log_softmax(10.0 * audio @ text.T, 1)
    terms = torch.where(targets > 0, targets * (targets.clamp_min(1e-30).log() - log_p), torch.zeros(()))
    expected_a2t = terms.sum(1).mean()
    loss = soft_label_loss(audio, text, 10.0, teacher, teacher, beta=0.3, target_norm="none")
    log_q = F.log_softmax(10.0 * text @ audio.T, 1)
    terms_t = torch.where(targets > 0, targets * (targets.clamp_min(1e-30).log() - log_q), torch.zeros(()))
    assert torch.allclose(loss, (expected_a2t + terms_t.sum(1).mean()) / 2, atol=1e-6)


@pytest.mark.parametrize("loss_name", ["contrastive", "soft_label"])
def test_losses_work_in_bfloat16_and_return_float32(loss_name):
    audio32, text32 = unit_rows(8, 16, 18), unit_rows(8, 16, 19)
    teacher = unit_rows(8, 16, 20)

    def loss_fn(a, t):
        if loss_name == "contrastive":
            return contrastive_loss(a, t, 20.0)
        return soft_label_loss(a, t, 20.0, teacher.bfloat16(), teacher.bfloat16(), target_scale=20.0)

    audio = audio32.bfloat16().requires_grad_(True)
    loss = loss_fn(audio, text32.bfloat16())
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert audio.grad.dtype == torch.bfloat16 and torch.isfinite(audio.grad.float()).all()
    assert loss.item() == pytest.approx(loss_fn(audio32, text32).item(), rel=0.05)


def test_losses_under_bf16_autocast_compute_in_float32():
    audio, text = unit_rows(8, 16, 21), unit_rows(8, 16, 22)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_loss(audio, text, 50.0)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, contrastive_loss(audio, text, 50.0))


@pytest.mark.parametrize("target_norm", TARGET_NORMS)
def test_batch_of_one_gives_zero_loss_and_finite_gradients(target_norm):
    audio = unit_rows(1, 4, 23).requires_grad_(True)
    text = unit_rows(1, 4, 24)
    loss = soft_label_loss(audio, text, 30.0, unit_rows(1, 4, 25), unit_rows(1, 4, 26), target_norm=target_norm,
                           target_scale=SCALE[target_norm])
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(audio.grad).all()
    assert contrastive_loss(audio, text, 30.0).item() == 0.0


def test_softmax_targets_are_distributions_from_the_identity_to_sharper_rows():
    teacher = unit_rows(8, 6, 30)
    for beta in (0.0, 0.3, 1.0):
        targets = soft_targets(teacher, beta, "softmax", target_scale=10.0)
        assert torch.allclose(targets.sum(dim=1), torch.ones(8), atol=1e-6)
        assert (targets >= 0).all()
    assert torch.equal(soft_targets(teacher, 0.0, "softmax", target_scale=10.0), torch.eye(8))
    # beta = 1: the rows are softmax(scale * cos); a lower temperature (higher scale) puts more
    # mass on the diagonal (cos = 1) and lowers each row's entropy
    rows = {scale: soft_targets(teacher, 1.0, "softmax", target_scale=scale) for scale in (1.0, 10.0, 100.0)}
    unit = F.normalize(teacher, dim=-1)
    assert torch.allclose(rows[10.0], torch.softmax(10.0 * unit @ unit.T, dim=1), atol=1e-6)
    diagonal = [rows[s].diagonal().mean().item() for s in (1.0, 10.0, 100.0)]
    entropy = [-(rows[s] * rows[s].clamp_min(1e-30).log()).sum(1).mean().item() for s in (1.0, 10.0, 100.0)]
    assert diagonal[0] < diagonal[1] < diagonal[2] and diagonal[2] > 0.99
    assert entropy[0] > entropy[1] > entropy[2]
    with pytest.raises(ValueError, match="target_scale"):
        soft_targets(teacher, 0.3, "softmax")
