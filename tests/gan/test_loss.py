"""Losses, lazy-regularization optimizers and stateless randomness (gan/loss.py).

The phases are checked on stand-in networks whose gradients are known in closed form
(a linear discriminator, a linear synthesis network), so the tests compare against
numbers worked out by hand rather than against the code itself.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from gan import monitor
from gan.augment import AdaController, AugmentConfig, AugmentPipe
from gan.loss import LossConfig, StepRandom, StyleGAN2Loss, lazy_adam, load_optimizer_state, nan_to_num_grads
from gan.networks import NetworkConfig, build_discriminator, build_generator


class LinearD(torch.nn.Module):
    """D(x) = <w, x> + b: grad_x D = w, so the R1 penalty is |w|^2 for every image."""

    def __init__(self, shape=(3, 4, 4)):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
        self.b = torch.nn.Parameter(torch.zeros([]))

    def forward(self, img, c):
        return (img * self.w).sum(dim=[1, 2, 3])[:, None] + self.b  # [N, 1]


class LinearG(torch.nn.Module):
    """mapping: z -> ws (z repeated); synthesis: img = A ws (flattened). Path lengths are
    |A^T y| / sqrt(num_ws), known in closed form."""

    def __init__(self, z_dim=4, num_ws=3, shape=(3, 4, 4)):
        super().__init__()
        self.z_dim, self.c_dim, self.num_ws, self.shape = z_dim, 0, num_ws, shape
        self.A = torch.nn.Parameter(torch.randn([math.prod(shape), num_ws * z_dim],
                                                generator=torch.Generator().manual_seed(1)))
        self.s = torch.nn.Parameter(torch.ones([]))  # a mapping parameter (1: ws = z exactly)
        self.mapping_calls = []
        G = self

        class Mapping(torch.nn.Module):
            def forward(self, z, c, update_w_avg=True):
                G.mapping_calls.append((z.clone(), update_w_avg))
                return z[:, None, :].repeat(1, G.num_ws, 1) * G.s  # [N, num_ws, z_dim]

        class Synthesis(torch.nn.Module):
            def forward(self, ws, noise_source=None):  # a linear G has no noise inputs
                return (ws.flatten(1) @ G.A.T).reshape(-1, *G.shape)  # [N, C, H, W]

        self.mapping, self.synthesis = Mapping(), Synthesis()


def _rnd(phase: str, nimg: int = 0, **kw) -> StepRandom:
    return StepRandom(seed=7, cur_nimg=nimg, phase=phase, **kw)


def test_lazy_adam_raises_lr_and_betas_to_k_over_k_plus_1():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = lazy_adam(p, lr=0.0025, betas=(0.0, 0.99), eps=1e-8, reg_interval=16)
    g = opt.param_groups[0]
    assert g["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert g["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert isinstance(g["betas"], tuple) and all(isinstance(b, float) for b in g["betas"])
    plain = lazy_adam(p, lr=0.0025, betas=(0.0, 0.99), eps=1e-8, reg_interval=None).param_groups[0]
    assert plain["lr"] == 0.0025 and plain["betas"] == (0.0, 0.99)


def test_nan_to_num_grads_replaces_nan_and_inf():
    m = torch.nn.Linear(3, 1)
    m.weight.grad = torch.tensor([[float("nan"), float("inf"), -float("inf")]])
    m.bias.grad = None
    nan_to_num_grads(m)
    assert m.weight.grad.tolist() == [[0.0, 1e5, -1e5]]


def test_step_random_is_a_function_of_seed_position_phase_and_stream():
    a = _rnd("Gmain", 64).randn("z", [8, 4])
    assert torch.equal(a, _rnd("Gmain", 64).randn("z", [8, 4]))
    assert not torch.equal(a, _rnd("Gmain", 72).randn("z", [8, 4]))
    assert not torch.equal(a, _rnd("Dmain", 64).randn("z", [8, 4]))
    assert not torch.equal(a, _rnd("Gmain", 64).randn("mix_z", [8, 4]))
    assert not torch.equal(a, StepRandom(8, 64, "Gmain").randn("z", [8, 4]))


def test_step_random_slices_the_global_batch_per_rank():
    full = _rnd("Dmain").randn("z", [8, 4])
    halves = [_rnd("Dmain", rank=r, world_size=2).randn("z", [8, 4]) for r in range(2)]
    assert torch.equal(torch.cat(halves), full)
    idx = torch.cat([_rnd("Dmain", rank=r, world_size=4).randint("c", 10, 8) for r in range(4)])
    assert torch.equal(idx, _rnd("Dmain").randint("c", 10, 8))
    aug = _rnd("Dmain", rank=1, world_size=2).augment_params("aug_real", 8)
    assert torch.equal(aug.uniform, _rnd("Dmain").augment_params("aug_real", 8).uniform[4:])


def test_synthesis_noise_is_stateless_and_sliced_per_rank():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = _rnd("Gmain").noise("noise8up", 4, 8)  # [4, 1, 8, 8]
    assert a.shape == (4, 1, 8, 8)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is not used
    assert torch.equal(a, _rnd("Gmain").noise("noise8up", 4, 8))
    assert not torch.equal(a, _rnd("Gmain", 8).noise("noise8up", 4, 8))
    assert not torch.equal(a, _rnd("Gmain").noise("noise8", 4, 8))
    halves = [_rnd("Gmain", rank=r, world_size=2).noise("noise8up", 2, 8) for r in range(2)]
    assert torch.equal(torch.cat(halves), a)


def _small_generator():
    """A 16-px generator seeded with 0, its noise strengths 0.5 (noise must matter for the checks)."""
    torch.manual_seed(0)
    G = build_generator(NetworkConfig(z_dim=8, w_dim=8, img_resolution=16, channel_base=128, channel_max=8,
                                      num_fp16_res=0))
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)
    return G


def test_generator_images_do_not_depend_on_the_world_size():
    G = _small_generator()
    z = torch.randn([4, 8])
    ws = G.mapping(z, None, update_w_avg=False)
    whole = G.synthesis(ws, noise_source=_rnd("Gmain").noise)
    parts = [G.synthesis(ws[2 * r:2 * r + 2], noise_source=_rnd("Gmain", rank=r, world_size=2).noise)
             for r in range(2)]
    torch.testing.assert_close(torch.cat(parts), whole)
    other = G.synthesis(ws, noise_source=_rnd("Gmain", 8).noise)
    assert not torch.allclose(other, whole)


def test_r1_penalty_of_a_linear_discriminator_is_gamma_half_norm_squared():
    D, G = LinearD(), LinearG()
    gamma, gain = 0.5, 16
    loss = StyleGAN2Loss(G, D, LossConfig(r1_gamma=gamma))
    real = torch.rand([4, 3, 4, 4]) * 2 - 1
    with monitor.Monitor() as mon:
        out = loss.accumulate_gradients("Dreg", real, torch.zeros([4, 0]), torch.zeros([1, 0]), _rnd("Dreg"), 4,
                                        gain=gain)
        stats = mon.flush(0)
    w2 = D.w.detach().square().sum()
    assert out["Loss/D/r1"].item() == pytest.approx((gamma / 2 * w2).item(), rel=1e-5)
    assert stats["Loss/D/r1_penalty"]["mean"] == pytest.approx(w2.item(), rel=1e-5)
    # d/dw [gain * gamma/2 |w|^2] = gain * gamma * w; the bias gets no gradient from R1.
    torch.testing.assert_close(D.w.grad, gain * gamma * D.w.detach(), rtol=1e-5, atol=1e-6)
    assert D.b.grad.item() == 0


def test_dmain_is_the_logistic_loss_on_both_sides():
    D, G = LinearD(), LinearG()
    with torch.no_grad():
        D.w.zero_()
        D.b.fill_(0.3)  # D outputs 0.3 for every image
    loss = StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=0))
    real = torch.zeros([4, 3, 4, 4])
    out = loss.accumulate_gradients("Dmain", real, torch.zeros([4, 0]), torch.zeros([1, 0]), _rnd("Dmain"), 4)
    sp = torch.nn.functional.softplus
    expected = sp(torch.tensor(0.3)) + sp(torch.tensor(-0.3))
    assert out["Loss/D/main"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["real_logits"].shape == (4, 1)
    # d/db [softplus(b) + softplus(-b)] = sigmoid(b) - sigmoid(-b)
    assert D.b.grad.item() == pytest.approx((torch.sigmoid(torch.tensor(0.3)) * 2 - 1).item(), rel=1e-5)
    assert G.A.grad is None  # D's phase never trains G


def test_gmain_is_non_saturating_and_trains_g_only():
    D, G = LinearD(), LinearG()
    D.requires_grad_(False)
    loss = StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=0))
    out = loss.accumulate_gradients("Gmain", None, None, torch.zeros([1, 0]), _rnd("Gmain"), 4)
    z = _rnd("Gmain").randn("z", [4, G.z_dim])
    logits = D(G.synthesis(G.mapping(z, None)), None)
    assert out["Loss/G/main"].item() == pytest.approx(torch.nn.functional.softplus(-logits).mean().item(), rel=1e-5)
    assert G.A.grad is not None and D.w.grad is None


def test_path_length_of_a_linear_generator_and_running_mean():
    D, G = LinearD(), LinearG()
    cfg = LossConfig(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01, style_mixing_prob=0)
    loss = StyleGAN2Loss(G, D, cfg)
    with monitor.Monitor() as mon:
        loss.accumulate_gradients("Greg", None, None, torch.zeros([1, 0]), _rnd("Greg"), 8, gain=4)
        stats = mon.flush(0)
    # Hand computation: y = pl_noise / sqrt(HW); J^T y = A^T y reshaped [num_ws, z_dim];
    # length = sqrt(mean over ws of the sum over w_dim of squares).
    y = _rnd("Greg").randn("pl_noise", [4, 3, 4, 4]) / math.sqrt(16)
    jty = (y.flatten(1) @ G.A.detach()).reshape(4, G.num_ws, G.z_dim)
    lengths = jty.square().sum(2).mean(1).sqrt()  # [4]: batch 8 shrunk by 2
    assert stats["Loss/G/pl_length"]["num"] == 4
    assert stats["Loss/G/pl_length"]["mean"] == pytest.approx(lengths.mean().item(), rel=1e-5)
    assert loss.pl_mean.item() == pytest.approx(0.01 * lengths.mean().item(), rel=1e-5)  # a <- a + 0.01 (mean - a)
    assert G.A.grad is not None and torch.isfinite(G.A.grad).all()


def test_style_mixing_switches_to_a_second_latent_from_a_cutoff():
    D, G = LinearD(), LinearG(num_ws=6)
    loss = StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=1.0))
    rnd = _rnd("Gmain")
    z = rnd.randn("z", [4, G.z_dim])
    img, ws = loss.run_G(z, None, rnd, 4)
    (z1, upd1), (z2, upd2) = G.mapping_calls
    assert upd1 and not upd2  # the second latent does not move w_avg
    cut = next(i for i in range(6) if not torch.equal(ws[:, i], z1))
    assert 1 <= cut < 6
    assert torch.equal(ws[:, :cut], z1[:, None].expand(-1, cut, -1))
    assert torch.equal(ws[:, cut:], z2[:, None].expand(-1, 6 - cut, -1))
    no_mix = StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=0.0))
    _, ws0 = no_mix.run_G(z, None, rnd, 4)
    assert torch.equal(ws0, z[:, None].expand(-1, 6, -1))


def _greg_grads(G, cfg, pl_mean0, **kw):
    """G's gradients from our Greg phase (batch 8, gain 4) and the running mean after it."""
    loss = StyleGAN2Loss(G, LinearD((3, 16, 16)), cfg)
    loss.pl_mean.fill_(pl_mean0)
    G.zero_grad(set_to_none=True)
    loss.accumulate_gradients("Greg", None, None, torch.zeros([1, 0]), _rnd("Greg", 16), 8, gain=4, **kw)
    return {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}, loss.pl_mean.clone()


def test_greg_gradients_equal_the_published_path_length_penalty():
    cfg = LossConfig(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01, style_mixing_prob=0)
    G = _small_generator()
    G_pub = copy.deepcopy(G)
    ours, pl_mean = _greg_grads(G, cfg, 0.3)

    # The published penalty (Karras et al. 2020, StyleGAN2-ADA, training/loss.py), written
    # out: the running mean moves towards the batch mean *with* its graph, and the penalty
    # is taken against that value; only the stored mean is detached.
    rnd, m = _rnd("Greg", 16), 4  # batch 8 shrunk by 2
    z = rnd.randn("z", [m, G_pub.z_dim])
    ws = G_pub.mapping(z, torch.zeros([m, 0]))
    img = G_pub.synthesis(ws, noise_source=rnd.noise)
    pl_noise = rnd.randn("pl_noise", [m, *img.shape[1:]]) / math.sqrt(img.shape[2] * img.shape[3])
    (pl_grads,) = torch.autograd.grad(outputs=[(img * pl_noise).sum()], inputs=[ws], create_graph=True)
    pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
    pl_mean_new = torch.tensor(0.3).lerp(pl_lengths.mean(), cfg.pl_decay)
    pl_penalty = (pl_lengths - pl_mean_new).square()
    pl_mean_detached = torch.tensor(0.3).lerp(pl_lengths.detach().mean(), cfg.pl_decay)
    (grad_detached,) = torch.autograd.grad(((pl_lengths - pl_mean_detached).square() * cfg.pl_weight).mean() * 4,
                                           [G_pub.mapping.fc0.weight], retain_graph=True)
    (img[:, 0, 0, 0] * 0 + pl_penalty * cfg.pl_weight).mean().mul(4).backward()

    torch.testing.assert_close(pl_mean, pl_mean_new.detach())
    published = {n: p.grad for n, p in G_pub.named_parameters() if p.grad is not None}
    assert ours.keys() == published.keys()
    for name, grad in published.items():
        torch.testing.assert_close(ours[name], grad, rtol=0, atol=1e-6, msg=name)

    # The check can fail: a penalty against the detached mean gives other gradients.
    assert (grad_detached - published["mapping.fc0.weight"]).abs().max() > 1e-5


def test_greg_with_the_global_mean_of_one_process_equals_the_local_mean():
    cfg = LossConfig(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01, style_mixing_prob=0)
    G = _small_generator()
    G_global = copy.deepcopy(G)

    def global_mean(lengths):  # what the trainer's all-reduce gives with world size 1
        moments = torch.stack([lengths.sum().double(), lengths.new_tensor(float(lengths.numel()), dtype=torch.float64)])
        return (moments[0] / moments[1]).to(lengths.dtype)

    local, pl_local = _greg_grads(G, cfg, 0.3)
    reduced, pl_reduced = _greg_grads(G_global, cfg, 0.3, pl_batch_mean=global_mean)
    torch.testing.assert_close(pl_reduced, pl_local)
    assert local.keys() == reduced.keys()
    for name, grad in local.items():
        torch.testing.assert_close(reduced[name], grad, rtol=1e-6, atol=1e-9, msg=name)


def test_greg_split_over_calls_with_the_global_mean_sums_to_the_whole_batch_gradients():
    """As the trainer splits a batch over ranks and rounds: a first pass measures the global mean,
    then each call sees its rows, weighted by their share, from the same running mean."""
    cfg = LossConfig(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01, style_mixing_prob=0)
    G = _small_generator()
    G_split = copy.deepcopy(G)
    whole, pl_whole = _greg_grads(G, cfg, 0.3)  # batch 8 shrunk to 4 rows in one call

    loss = StyleGAN2Loss(G_split, LinearD((3, 16, 16)), cfg)
    table = torch.zeros([1, 0])
    parts = [_rnd("Greg", 16, rows=rows, global_batch=4) for rows in ([0, 3, 2], [1])]
    lengths = [loss.path_lengths(table, rnd, 8, create_graph=False, update_w_avg=False)[2].detach() for rnd in parts]
    mean = torch.cat(lengths).mean()
    G_split.zero_grad(set_to_none=True)
    for rnd in parts:
        loss.pl_mean.fill_(0.3)  # every call moves the running mean from the same value
        loss.accumulate_gradients("Greg", None, None, table, rnd, 8, gain=4, weight=len(rnd.rows) / 4,
                                  pl_batch_mean=lambda lengths: mean)
    torch.testing.assert_close(loss.pl_mean, pl_whole)
    for name, grad in whole.items():
        torch.testing.assert_close(dict(G_split.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6,
                                   msg=name)


def test_dmain_reports_the_signs_of_fake_logits_as_gmain_does():
    D, G = LinearD(), LinearG()
    with torch.no_grad():
        D.w.zero_()
        D.b.fill_(-0.3)  # every logit is -0.3: sign -1
    loss = StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=0))
    with monitor.Monitor() as mon:
        loss.accumulate_gradients("Dmain", torch.zeros([4, 3, 4, 4]), torch.zeros([4, 0]), torch.zeros([1, 0]),
                                  _rnd("Dmain"), 4)
        stats = mon.flush(0)
    assert stats["Loss/signs/fake"]["num"] == 4 and stats["Loss/signs/fake"]["mean"] == -1
    assert stats["Loss/signs/real"]["mean"] == -1


def test_collected_w_sum_is_taken_and_restarted():
    D, G = LinearD(), LinearG()
    loss = StyleGAN2Loss(G, D, LossConfig(style_mixing_prob=1.0), collect_w=True)
    loss.accumulate_gradients("Gmain", None, None, torch.zeros([1, 0]), _rnd("Gmain"), 4)
    (z1, upd1), (_, upd2) = G.mapping_calls  # the mixing latent does not move w_avg
    assert upd1 and not upd2
    w_sum = loss.take_w_sum()
    torch.testing.assert_close(w_sum, torch.cat([z1.double().sum(0), torch.tensor([4.0], dtype=torch.float64)]))
    assert loss.take_w_sum() is None  # taken: a new sum starts
    assert StyleGAN2Loss(G, D, LossConfig()).take_w_sum() is None  # not collecting


def test_the_ada_controller_sets_the_probability_d_inputs_are_augmented_with():
    D, G = LinearD(), LinearG()
    pipe = AugmentPipe(impl="ref")  # its own p stays 0
    ada = AdaController(AugmentConfig(mode="fixed", p=0.0))
    loss = StyleGAN2Loss(G, D, LossConfig(), augment_pipe=pipe, ada=ada)
    img = torch.rand([4, 3, 4, 4]) * 2 - 1
    rnd = _rnd("Dmain")
    plain = D(img, None)
    assert loss.augment_p == 0 and torch.equal(loss.run_D(img, None, rnd, "aug_real", 4), plain)
    ada.p = 1.0
    assert loss.augment_p == 1.0 and pipe.p == 0
    want = D(pipe.apply(img, rnd.augment_params("aug_real", 4), p=1.0), None)
    torch.testing.assert_close(loss.run_D(img, None, rnd, "aug_real", 4), want)
    assert not torch.allclose(want, plain)


# ---------------------------------------------------------------------------- no syncs, fewer launches


@pytest.mark.parametrize("kw", [{}, {"rank": 1, "world_size": 2}, {"rows": [2, 3, 4, 5], "global_batch": 8},
                                {"rows": [6, 1, 3, 0], "global_batch": 8}], ids=["one", "rank", "range", "rows"])
def test_path_length_noise_drawn_on_the_device_is_the_old_host_draw_on_the_cpu(kw):
    """Greg's noise moved from a host draw + copy to a draw on the training device; on the CPU
    the numbers are those of before (same generator, same seed, same rows)."""
    rnd = _rnd("Greg", 16, **kw)
    shape = [8, 3, 16, 16]
    old = rnd.randn("pl_noise", shape)  # what path_lengths drew until now
    torch.testing.assert_close(rnd.randn_device("pl_noise", shape), old, rtol=0, atol=0)


def test_rows_that_form_a_range_are_sliced_and_other_rows_gathered():
    full = _rnd("Gmain").noise("noise8", 8, 8)  # [8, 1, 8, 8], the whole batch
    ranged = _rnd("Gmain", rows=[2, 3, 4, 5], global_batch=8)
    assert ranged._sel == slice(2, 6)
    part = ranged.noise("noise8", 4, 8)
    assert part._base is not None and torch.equal(part, full[2:6])  # a view: no gather kernel
    scattered = _rnd("Gmain", rows=[6, 1, 3, 0], global_batch=8)
    assert scattered._sel is None and torch.equal(scattered.noise("noise8", 4, 8), full[[6, 1, 3, 0]])
    assert torch.equal(ranged.randn("z", [8, 4]), _rnd("Gmain").randn("z", [8, 4])[2:6])


def test_unconditional_labels_draw_nothing_and_conditional_ones_come_from_the_table():
    loss = StyleGAN2Loss(LinearG(), LinearD(), LossConfig())
    rnd = _rnd("Gmain", rank=1, world_size=2)
    assert loss.gen_labels(torch.zeros(30, 0), rnd, 8).shape == (4, 0)
    table = torch.eye(3).repeat(10, 1)  # [30, 3]
    want = table[_rnd("Gmain").randint("c", 30, 8)[4:]]
    assert torch.equal(loss.gen_labels(table, rnd, 8), want)


def _params(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ([4, 3], [5], [2, 2, 3])]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)
    return ps


def test_lazy_adam_is_fused_on_cuda_and_foreach_on_the_cpu():
    from gan.loss import adam_impl

    assert adam_impl({"cuda"}) == {"fused": True} and adam_impl({"cpu"}) == {"foreach": True}
    assert adam_impl({"cpu", "cuda"}) == {} and adam_impl({"mps"}) == {}
    group = lazy_adam(_params(), 0.01, (0.0, 0.99), 1e-8, None).param_groups[0]
    assert group["foreach"] is True and not group["fused"]


def test_foreach_adam_on_the_cpu_takes_the_per_tensor_loops_steps_bit_for_bit():
    a, b = _params(), _params()
    loop = torch.optim.Adam(a, lr=0.01, betas=(0.0, 0.99 ** (16 / 17)), eps=1e-8, foreach=False)
    ours = lazy_adam(b, 0.01, (0.0, 0.99 ** (16 / 17)), 1e-8, None)
    for _ in range(3):
        loop.step()
        ours.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_an_unfused_checkpoint_loads_into_a_fused_optimizer_and_stays_fused():
    """What a CUDA run resumed from a checkpoint written before the optimizers were fused does
    (fused Adam runs on the CPU too, so the path is exercised here)."""
    old_params = _params()
    old = torch.optim.Adam(old_params, lr=0.01, betas=(0.0, 0.99), eps=1e-8)  # how checkpoints were written
    old.step()
    old.step()
    saved = copy.deepcopy(old.state_dict())
    assert not saved["param_groups"][0]["fused"]

    new_params = [torch.nn.Parameter(p.detach().clone()) for p in old_params]
    for p, q in zip(new_params, old_params):
        p.grad = q.grad.clone()
    opt = torch.optim.Adam(new_params, lr=0.01, betas=(0.0, 0.99), eps=1e-8, fused=True)  # lazy_adam on CUDA
    plain = torch.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in old_params], lr=0.01, fused=True)
    plain.load_state_dict(copy.deepcopy(saved))
    assert not plain.param_groups[0]["fused"]  # what load_state_dict alone does: fusing silently lost
    load_optimizer_state(opt, copy.deepcopy(saved))
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["lr"] == 0.01
    for p, q in zip(new_params, old_params):
        st = opt.state[p]
        assert st["step"].dtype == torch.float32 and float(st["step"]) == 2.0
        assert torch.equal(st["exp_avg_sq"], old.state[q]["exp_avg_sq"])
    old.step()
    opt.step()  # the moments carried over: the fused step continues the unfused trajectory
    for p, q in zip(new_params, old_params):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_nan_to_num_grads_works_on_one_flat_buffer_reduced_over_ranks_first():
    m = torch.nn.Conv2d(2, 3, 3)
    m.weight.grad = torch.randn(3, 2, 3, 3).contiguous(memory_format=torch.channels_last)
    m.weight.grad[0, 0, 0, 0] = float("nan")
    m.bias.grad = torch.tensor([float("inf"), -float("inf"), 2.0])
    want_w = torch.nan_to_num(m.weight.grad * 2, nan=0.0, posinf=1e5, neginf=-1e5)
    seen = []

    def all_reduce(flat):  # a second rank with the same gradients
        seen.append(flat.numel())
        flat.mul_(2)

    grad_w = m.weight.grad
    nan_to_num_grads(m.parameters(), all_reduce=all_reduce)
    assert seen == [3 * 2 * 3 * 3 + 3]  # one buffer for all parameters
    assert m.weight.grad is grad_w and m.weight.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(m.weight.grad, want_w)
    assert m.bias.grad.tolist() == [1e5, -1e5, 4.0]
    nan_to_num_grads(torch.nn.Linear(2, 2))  # no gradients at all: nothing to do


def _step_grads(G, D, pipe, cfg, phase):
    """Loss and gradients of one phase on copies of G and D (the pipe at fixed p = 0.5)."""
    G, D = copy.deepcopy(G), copy.deepcopy(D)
    ada = AdaController(AugmentConfig(mode="fixed", p=0.5))
    loss = StyleGAN2Loss(G, D, cfg, augment_pipe=pipe, ada=ada)
    module = G if phase in ("Gmain", "Greg") else D
    module.requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    real = torch.rand([8, 3, 16, 16], generator=g) * 2 - 1
    out = loss.accumulate_gradients(phase, real, torch.zeros(8, 0), torch.zeros(20, 0), _rnd(phase, 64), 8,
                                    gain=4.0)
    return out, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_one_step_of_the_fast_path_equals_mtf_ops_ref(monkeypatch, ext_dir):
    """Compiled CPU ops and F.grid_sample (Gmain, Dmain) against the reference ops and our own
    sampler: losses and gradients of all four phases, augmentation on."""
    torch.manual_seed(0)
    net = NetworkConfig(z_dim=8, w_dim=8, img_resolution=16, channel_base=128, channel_max=8, num_fp16_res=0,
                        conv_clamp=None, mbstd_group_size=4)
    G, D = build_generator(net), build_discriminator(net)
    cfg = LossConfig(r1_gamma=1.0, pl_weight=2.0, pl_batch_shrink=2)
    pipe = AugmentPipe()
    for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
        monkeypatch.delenv("MTF_OPS", raising=False)
        fast, fast_grads = _step_grads(G, D, pipe, cfg, phase)
        monkeypatch.setenv("MTF_OPS", "ref")
        ref, ref_grads = _step_grads(G, D, pipe, cfg, phase)
        assert fast.keys() == ref.keys() and fast_grads.keys() == ref_grads.keys() and ref_grads, phase
        for k in ref:
            torch.testing.assert_close(fast[k], ref[k], rtol=1e-4, atol=1e-5, msg=f"{phase} {k}")
        for k in ref_grads:
            torch.testing.assert_close(fast_grads[k], ref_grads[k], rtol=1e-3, atol=1e-5, msg=f"{phase} {k}")
