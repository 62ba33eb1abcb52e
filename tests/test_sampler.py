import pytest
import torch

from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.sampler import LeffaSampler, SamplerSettings, build_scheduler, repaint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LeffaModel.tiny().eval()


def _batch(batch_size=2, height=64, width=48):
    torch.manual_seed(1)
    person = torch.rand(batch_size, 3, height, width) * 2 - 1
    mask = torch.zeros(batch_size, 1, height, width)
    mask[:, :, 16:48, 8:40] = 1
    return {"person": person, "agnostic": person * (1 - mask), "inpaint_mask": mask,
            "densepose": torch.rand(batch_size, 3, height, width) * 2 - 1,
            "reference": torch.rand(batch_size, 3, height, width) * 2 - 1}


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmsolver++"])
def test_one_seed_reproduces_an_image(model, scheduler):
    sampler = LeffaSampler(model, SamplerSettings(scheduler=scheduler, num_inference_steps=3))
    batch = _batch()
    first = sampler(batch, torch.Generator().manual_seed(42))
    torch.manual_seed(123)  # the global RNG must not matter
    second = sampler(batch, torch.Generator().manual_seed(42))
    other = sampler(batch, torch.Generator().manual_seed(7))
    assert first.shape == (2, 3, 64, 48) and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_reference_acceleration_runs_the_reference_unet_once(model):
    calls = []
    handle = model.unet_encoder.register_forward_hook(lambda m, a, o: calls.append(a[1]))
    try:
        LeffaSampler(model, SamplerSettings(num_inference_steps=4, reference_acceleration=True))(
            _batch(), torch.Generator().manual_seed(0))
        accelerated = list(calls)
        calls.clear()
        LeffaSampler(model, SamplerSettings(num_inference_steps=4))(_batch(), torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    timesteps = build_scheduler("ddpm", model.scheduler_config)
    timesteps.set_timesteps(4)
    assert len(accelerated) == 1 and len(calls) == 4
    assert torch.all(accelerated[0] == timesteps.timesteps[2])
    assert accelerated[0].shape == (4,)  # conditional + unconditional halves of a batch of 2


def test_no_guidance_runs_a_single_branch(model):
    shapes = []
    handle = model.unet.register_forward_hook(lambda m, a, o: shapes.append(a[0].shape[0]))
    try:
        LeffaSampler(model, SamplerSettings(num_inference_steps=2, guidance_scale=1.0))(
            _batch(), torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert shapes == [2, 2]


def test_repaint_keeps_the_person_outside_the_mask():
    person, generated = torch.rand(1, 3, 300, 200), torch.rand(1, 3, 300, 200)
    mask = torch.zeros(1, 1, 300, 200)
    mask[..., 100:200, 50:150] = 1
    out = repaint(person, generated, mask)
    assert torch.allclose(out[..., :90, :], person[..., :90, :])  # kernel 3: blur reaches 1 pixel
    assert torch.allclose(out[..., 110:190, 60:140], generated[..., 110:190, 60:140], atol=1e-6)
    edge = out[..., 100, 100]
    assert not torch.allclose(edge, person[..., 100, 100]) and not torch.allclose(edge, generated[..., 100, 100])


def test_unknown_scheduler_is_refused(model):
    with pytest.raises(ValueError, match="unknown scheduler 'euler'"):
        LeffaSampler(model, SamplerSettings(scheduler="euler"))
