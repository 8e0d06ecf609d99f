"""FedFTG's loss terms as pure functions, and the per-client generator objective.

Source: Zhang, Shen, Ding, Tao, Duan, "Fine-tuning Global Model via Data-Free Knowledge
Distillation for Non-IID Federated Learning", CVPR 2022 (arXiv 2203.09249), Sec. 3:
hard sample mining (the generator maximises the discrepancy between the global model and
the client models, which the fine-tuning then minimises), fidelity and diversity of the
generated samples, class-level ensemble. The paper's printed equations could not be read
here; the formulas below follow the authors' released code (github.com/ZhangLin-PKU/FedFTG,
``methods/train_gan_fn.py``: ``compute_backward_flow_G_dis`` and ``DiversityLoss``;
``methods/local_fn_gan.py``: ``train_global_model_cgan_bs_weight_iloop_fz_dis``), with
their normalisations and signs.

Notation: a batch of ``B`` labels ``y_i`` and latents ``z_i`` gives ``x_i = G(z_i, y_i)``;
``s_i = D(x_i; w)`` are the global model's logits, ``t^k_i = D(x_i; w_k)`` client ``k``'s;
``α_{c,k} = n_{k,c} / Σ_k n_{k,c}`` are the class-level ensemble weights (columns of a
``[K, C]`` tensor, see :func:`fedrdskd.kd.ensemble.ensemble_weights`), and
``α_i = α_{y_i,k}`` is sample ``i``'s weight for the client at hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TERM_NAMES = ("model-discrepancy", "fidelity", "diversity")
SOFT_CE_REDUCTIONS = ("mean", "batchmean")


def model_discrepancy_loss(
    global_logits: torch.Tensor, client_logits: torch.Tensor, sample_weights: torch.Tensor
) -> torch.Tensor:
    """Hard-sample mining: ``L_md = −(1/B) Σ_i α_i · (1/C) Σ_c |s_ic − t_ic|``.

    Minimising it makes the generator *maximise* the weighted mean absolute logit gap
    between the global model and client ``k``: it seeks samples on which the global
    model still disagrees with the client (hard samples). The client logits are
    detached, as in the released code, so the gradient reaches the generator only
    through the global model.

    Parameters
    ----------
    global_logits : torch.Tensor
        ``s``, the global model's logits ``[B, C]``.
    client_logits : torch.Tensor
        ``t``, client ``k``'s logits ``[B, C]`` (detached here).
    sample_weights : torch.Tensor
        ``α_i = α_{y_i,k}``, shape ``[B]``.
    """
    gap = (global_logits - client_logits.detach()).abs().mean(dim=1)
    return -(gap * sample_weights).mean()


def fidelity_loss(
    client_logits: torch.Tensor, labels: torch.Tensor, sample_weights: torch.Tensor
) -> torch.Tensor:
    """Fidelity: ``L_cls = CE(t, y) · (1/B) Σ_i α_i``, ``CE`` the batch-mean cross-entropy.

    Client ``k`` should classify ``G(z, y)`` as ``y``. The released code multiplies the
    batch-mean cross-entropy by the batch-mean weight (``mean(CE_mean · α)``), i.e. the
    weights scale the whole term per client rather than each sample; kept as released.

    Parameters
    ----------
    client_logits : torch.Tensor
        Client ``k``'s logits ``[B, C]`` (gradients flow to the generator through them).
    labels : torch.Tensor
        The conditioning labels ``y``, ``[B]``.
    sample_weights : torch.Tensor
        ``α_i = α_{y_i,k}``, shape ``[B]``.
    """
    return F.cross_entropy(client_logits, labels) * sample_weights.mean()


def diversity_loss(latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Diversity: ``L_dis = exp(−(1/B²) Σ_{i,j} (‖z_i − z_j‖₂² / d_z) · (‖x_i − x_j‖₁ / d_x))``.

    Pairs of distant latents should give distant images (the mode-seeking loss of
    MSGAN/DFAD); ``d_z`` and ``d_x`` are the latent and image sizes (the released
    ``DiversityLoss(metric="l1")`` takes means, not sums), and the mean runs over all
    ``B²`` ordered pairs, the zero diagonal included. ``L_dis ∈ (0, 1]``.

    Parameters
    ----------
    latents : torch.Tensor
        ``z``, ``[B, d_z]`` (or any shape with batch first; flattened).
    images : torch.Tensor
        ``x = G(z, y)``, ``[B, ...]`` (flattened).
    """
    latents = latents.reshape(latents.shape[0], -1)
    images = images.reshape(images.shape[0], -1)
    latent_distance = (latents.unsqueeze(0) - latents.unsqueeze(1)).pow(2).mean(dim=2)
    image_distance = torch.cdist(images, images, p=1.0) / images.shape[1]
    return torch.exp(-(latent_distance.detach() * image_distance).mean())


def ensemble_soft_targets(
    member_logits: torch.Tensor, class_weights: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Class-level ensemble: ``p_ens(x_i) = Σ_k α_{y_i,k} · softmax(t^k_i)``.

    Each sample is weighted by its *conditioning* label's column of the class weights,
    so clients that hold many samples of class ``y_i`` dominate its target. Rows sum to
    ``Σ_k α_{y_i,k}`` = 1 for class-level weights.

    Parameters
    ----------
    member_logits : torch.Tensor
        Every client's logits, ``[K, B, C]``.
    class_weights : torch.Tensor
        ``α``, ``[K, C]`` with ``α[k, c] = α_{c,k}``.
    labels : torch.Tensor
        The conditioning labels ``y``, ``[B]``.

    Returns
    -------
    torch.Tensor
        Probabilities ``[B, C]``.
    """
    if member_logits.ndim != 3 or class_weights.shape != (member_logits.shape[0],
                                                          member_logits.shape[2]):
        raise ValueError(f"member_logits must be [K, B, C] and class_weights [K, C], got "
                         f"{tuple(member_logits.shape)} and {tuple(class_weights.shape)}.")
    sample_weights = class_weights[:, labels].to(member_logits.dtype)  # [K, B]
    return torch.einsum("kb,kbc->bc", sample_weights, F.softmax(member_logits, dim=2))


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against soft targets, ``−Σ_c p_bc log softmax(s_b)_c`` per sample.

    Parameters
    ----------
    logits : torch.Tensor
        Student logits ``[B, C]``.
    targets : torch.Tensor
        Target probabilities ``[B, C]`` (not differentiated).
    reduction : str (default: "mean")
        ``"mean"``: mean over all ``B·C`` entries, i.e. ``(1/(B·C)) Σ_b Σ_c ...`` — the
        released code's ``torch.mean(-log_softmax(s) * p_ens)``, which is the usual
        value divided by ``C``; ``"batchmean"``: ``(1/B) Σ_b Σ_c ...``.
    """
    if reduction not in SOFT_CE_REDUCTIONS:
        raise ValueError(f"reduction must be one of {SOFT_CE_REDUCTIONS}, got {reduction!r}.")
    elementwise = -targets.detach() * F.log_softmax(logits, dim=1)
    if reduction == "mean":
        return elementwise.mean()
    return elementwise.sum(dim=1).mean()


def client_generator_loss(
    *,
    global_logits: torch.Tensor,
    client_logits: torch.Tensor,
    labels: torch.Tensor,
    sample_weights: torch.Tensor,
    latents: torch.Tensor,
    images: torch.Tensor,
    num_clients: int,
    lambda_md: float = 1.0,
    lambda_cls: float = 1.0,
    lambda_dis: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator's objective for client ``k``: ``λ_md·L_md + λ_cls·L_cls + λ_dis·L_dis/|S|``.

    ``|S|`` is the number of clients this round (the generator takes one step per
    client, so the diversity term is shared among them). FedFTG: all ``λ`` = 1
    (``λ_md`` exists for ablations). A weight of 0 leaves its term out of the total;
    every term is still computed and reported.

    Parameters
    ----------
    global_logits, client_logits : torch.Tensor
        ``s`` and ``t^k`` on ``images``, ``[B, C]``.
    labels : torch.Tensor
        Conditioning labels ``[B]``.
    sample_weights : torch.Tensor
        ``α_{y_i,k}``, ``[B]``.
    latents, images : torch.Tensor
        ``z`` ``[B, d_z]`` and ``x = G(z, y)``.
    num_clients : int
        ``|S| >= 1``.
    lambda_md, lambda_cls, lambda_dis : float (default: 1.0)
        Term weights (>= 0).

    Returns
    -------
    tuple[torch.Tensor, dict[str, float]]
        The total (without ``grad_fn`` if every weight is 0) and
        ``{"model-discrepancy", "fidelity", "diversity", "total"}``.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients!r}.")
    weights = dict(zip(TERM_NAMES, (lambda_md, lambda_cls, lambda_dis / num_clients)))
    terms = {"model-discrepancy": model_discrepancy_loss(global_logits, client_logits,
                                                         sample_weights),
             "fidelity": fidelity_loss(client_logits, labels, sample_weights),
             "diversity": diversity_loss(latents, images)}
    total = global_logits.new_zeros(())
    for name, value in terms.items():
        if weights[name] != 0.0:
            total = total + weights[name] * value
    values = {name: float(value.detach()) for name, value in terms.items()}
    values["total"] = float(total.detach())
    return total, values
