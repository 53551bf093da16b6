"""Correct: a diffusers `UNet2DModel` (tiny config, random init) trained as a DDPM noise predictor: the forward adds
Gaussian noise at a random timestep and the model predicts that noise (MSE).

What it is: `forward(model, batch)` draws `t` and `noise` from torch's generator (seeded by nncheck, so runs
repeat), builds `x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise` with diffusers' `DDPMScheduler.add_noise`, and returns
`(model(x_t, t).sample, noise)`; the default loss is MSE (float targets shaped like the output).
Why it is right: this is the training step of diffusers' DDPM example; targets are the noise (std 1), so an
all-zero prediction scores ~1 at init; GroupNorm (no batch statistics); AdamW.
Source: https://huggingface.co/docs/diffusers/tutorials/basic_training (the training loop); Ho et al. 2020 (DDPM).
"""

import torch
from diffusers import DDPMScheduler, UNet2DModel

CORRECT = True

SIZE, BATCH = 16, 8
scheduler = DDPMScheduler(num_train_timesteps=1000)


def model():
    return UNet2DModel(
        sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    )


def data():
    # images of a bright blob on a dark background, scaled to [-1, 1] as diffusers expects
    g = torch.Generator().manual_seed(11)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    batches = []
    for _ in range(8):
        c = torch.randint(4, SIZE - 4, (BATCH, 2), generator=g)
        d2 = (yy[None] - c[:, :1, None]) ** 2 + (xx[None] - c[:, 1:, None]) ** 2
        x = torch.exp(-d2.float() / 8.0)[:, None] * 2 - 1
        batches.append(x)
    return batches


def forward(model, batch):
    noise = torch.randn_like(batch)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch.shape[0],), device=batch.device)
    noisy = scheduler.add_noise(batch, noise, t)
    return model(noisy, t).sample, noise


def optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3)
