"""Appearance modelling for multi-date satellite images (Skyfall-GS 3.1.2, after WildGaussians).

A per-image embedding e_j (32-d), a per-Gaussian embedding g_i (24-d) and an MLP f (2 hidden layers of 128, ReLU)
give a per-Gaussian, per-channel affine colour transform (beta, gamma) = f(e_j, g_i, c_i), c_i the SH-DC colour;
the rendered colour is gamma * c_i(r) + beta.

Where the affine acts: on the view-dependent colour *before* the renderer's clamp at 0, i.e. on
c(r) = 0.5 + sum_k Y_k(r) sh_k. Because c(r) is linear in the SH coefficients and (beta, gamma) do not depend on
the view direction,
    gamma * c(r) + beta = 0.5 + Y_0 * [gamma sh_0 + (beta + 0.5 (gamma - 1)) / Y_0] + sum_{k>=1} Y_k(r) gamma sh_k
(Y_0 = SH_C0 is a constant). So modulating the SH coefficients (`modulate_sh`) is exactly the paper's affine on
the colour for every degree, the renderer's own SH evaluation (gsplat's kernels) can be used unchanged, and
`fuse` bakes one embedding into a plain 3DGS model that renders the same images (up to float rounding).

The per-Gaussian embeddings live in the GaussianModel's ParameterDict (key `gaussian_embeddings`), so the
densification strategy clones, splits and prunes them together with the Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from earthsynth.errors import ConfigError
from earthsynth.io.splats import SH_C0
from earthsynth.splat.model import GaussianModel, SplatLRConfig, make_adam

GAUSSIAN_EMBEDDINGS = "gaussian_embeddings"


@dataclass(frozen=True)
class AppearanceConfig:
    image_embedding_dim: int = 32          # Skyfall-GS 0.B.1.3 per-image embedding e_j
    gaussian_embedding_dim: int = 24       # Skyfall-GS 0.B.1.3 per-Gaussian embedding g_i
    hidden_dim: int = 128                  # Skyfall-GS 0.B.1.3 / WildGaussians MLP width
    hidden_layers: int = 2                 # Skyfall-GS 0.B.1.3: 2 hidden layers, ReLU
    use_dc_color: bool = True              # feed c_i, the SH-DC colour, to f (Skyfall-GS eq. in 3.1.2)
    init_std: float = 0.01                 # WildGaussians: embeddings ~ N(0, 0.01^2)

    def __post_init__(self):
        for name in ("image_embedding_dim", "gaussian_embedding_dim", "hidden_dim", "hidden_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"AppearanceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.init_std >= 0:
            raise ConfigError(f"AppearanceConfig.init_std must be >= 0, got {self.init_std}")


class AppearanceModel(nn.Module):
    """Per-image embeddings + the affine-colour MLP; the per-Gaussian embeddings are attached to a model."""

    def __init__(self, num_images: int, config: AppearanceConfig = AppearanceConfig(), *, seed: int = 0,
                 device=None):
        super().__init__()
        if int(num_images) < 1:
            raise ConfigError(f"the appearance model needs at least one training image, got {num_images}")
        self.config = config
        generator = torch.Generator().manual_seed(int(seed))
        weight = torch.randn((int(num_images), config.image_embedding_dim), generator=generator) * config.init_std
        self.embeddings = nn.Embedding.from_pretrained(weight, freeze=False)
        width = config.image_embedding_dim + config.gaussian_embedding_dim + (3 if config.use_dc_color else 0)
        layers: list[nn.Module] = []
        for _ in range(config.hidden_layers):
            layers += [nn.Linear(width, config.hidden_dim), nn.ReLU()]
            width = config.hidden_dim
        layers.append(nn.Linear(width, 6))
        self.mlp = nn.Sequential(*layers)
        self._init_mlp(generator)
        # IDU (Skyfall-GS 0.B.1.5): one embedding, fixed, for every view (buffers: saved with the checkpoint)
        self.register_buffer("fixed_embedding", torch.zeros(config.image_embedding_dim))
        self.register_buffer("fixed", torch.zeros((), dtype=torch.bool))
        self.to(device)

    def _init_mlp(self, generator: torch.Generator) -> None:
        """Seeded default init; the last layer is zero so that (beta, gamma) = (0, 1): identity at start."""
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                bound = 1.0 / module.in_features ** 0.5
                with torch.no_grad():
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 * bound - bound)
                    module.bias.copy_(torch.rand(module.bias.shape, generator=generator) * 2 * bound - bound)
        with torch.no_grad():
            self.mlp[-1].weight.zero_()
            self.mlp[-1].bias.zero_()

    @property
    def num_images(self) -> int:
        return int(self.embeddings.num_embeddings)

    # ------------------------------------------------------------------------------------------- embeddings
    def attach(self, model: GaussianModel, *, seed: int = 0) -> None:
        """Give `model` its per-Gaussian embeddings (before `model.create_optimizers()`)."""
        generator = torch.Generator().manual_seed(int(seed))
        values = torch.randn((model.num, self.config.gaussian_embedding_dim), generator=generator)
        model.add_per_gaussian(GAUSSIAN_EMBEDDINGS, values * self.config.init_std)

    def fix_embedding(self, image_id: int | None = None, *, seed: int = 0) -> int:
        """Freeze one image's embedding as the embedding of every view (IDU stage: "randomly select and fix a
        single per-image appearance embedding"). `image_id` None picks one with `seed`. Returns the id."""
        if image_id is None:
            image_id = int(torch.randint(self.num_images, (1,), generator=torch.Generator().manual_seed(seed)))
        if not 0 <= int(image_id) < self.num_images:
            raise ConfigError(f"image_id {image_id} is out of range: the model has {self.num_images} images")
        with torch.no_grad():
            self.fixed_embedding.copy_(self.embeddings.weight[int(image_id)])
            self.fixed.fill_(True)
        return int(image_id)

    def release_embedding(self) -> None:
        self.fixed.fill_(False)

    @property
    def is_fixed(self) -> bool:
        return bool(self.fixed)

    def image_embeddings(self, image_ids=None, *, n_cameras: int | None = None) -> Tensor:
        """[C, E] embeddings: the fixed one for every camera when fixed, else those of `image_ids` [C]."""
        if self.is_fixed:
            count = n_cameras if image_ids is None else len(torch.as_tensor(image_ids).reshape(-1))
            return self.fixed_embedding[None].expand(int(count or 1), -1)
        if image_ids is None:
            raise ConfigError("the appearance model needs image_ids (or a fixed embedding) to render")
        ids = torch.as_tensor(image_ids, dtype=torch.long, device=self.embeddings.weight.device).reshape(-1)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_images):
            raise ConfigError(f"image ids must be in 0..{self.num_images - 1}, got {ids.tolist()}")
        return self.embeddings(ids)

    # ------------------------------------------------------------------------------------------- colour
    def affine(self, model: GaussianModel, image_embeddings_ce: Tensor) -> tuple[Tensor, Tensor]:
        """(gamma [C, N, 3], beta [C, N, 3]) for each camera's embedding and each Gaussian."""
        if GAUSSIAN_EMBEDDINGS not in model.params:
            raise ConfigError("the Gaussian model has no per-Gaussian embeddings",
                              hint="call appearance.attach(model) before creating the optimizers")
        emb = image_embeddings_ce.reshape(-1, self.config.image_embedding_dim).to(model.device)
        c, n = emb.shape[0], model.num
        per_gaussian = [model.params[GAUSSIAN_EMBEDDINGS]]
        if self.config.use_dc_color:
            per_gaussian.append(model.params["sh0"][:, 0, :] * SH_C0 + 0.5)
        per_gaussian_nf = torch.cat(per_gaussian, dim=-1)
        inputs = torch.cat([emb[:, None, :].expand(c, n, -1), per_gaussian_nf[None].expand(c, n, -1)], dim=-1)
        out = self.mlp(inputs)
        beta, log_gamma = out[..., :3], out[..., 3:]
        return torch.exp(log_gamma), beta    # exp: a positive gain, 1 at init

    def modulate_sh(self, model: GaussianModel, image_embeddings_ce: Tensor) -> Tensor:
        """[C, N, K, 3] SH coefficients whose colour is gamma * c(r) + beta (see the module docstring)."""
        gamma, beta = self.affine(model, image_embeddings_ce)
        return modulated_sh(model.sh, gamma, beta)

    @torch.no_grad()
    def fuse(self, model: GaussianModel, image_embedding_e: Tensor | None = None) -> GaussianModel:
        """A plain 3DGS model (no embeddings) with this appearance baked into its SH coefficients, for one
        embedding (default: the fixed one). Its standard PLY renders like the modulated model."""
        if image_embedding_e is None:
            if not self.is_fixed:
                raise ConfigError("fuse needs an image embedding (or a fixed one: fix_embedding())")
            image_embedding_e = self.fixed_embedding
        gamma, beta = self.affine(model, image_embedding_e.reshape(1, -1))
        sh = modulated_sh(model.sh, gamma, beta)[0]
        params = {k: model.params[k].detach() for k in ("means", "quats", "scales", "opacities")}
        params.update(sh0=sh[:, :1].contiguous(), shN=sh[:, 1:].contiguous())
        return GaussianModel(params)

    def create_optimizers(self, lrs: SplatLRConfig = SplatLRConfig(), *, batch_size: int = 1
                          ) -> dict[str, torch.optim.Adam]:
        """Adams for the image embeddings and the MLP (the per-Gaussian ones come with the model's)."""
        return {"image_embeddings": make_adam(self.embeddings.weight, lrs.image_embeddings, batch_size=batch_size),
                "appearance_mlp": make_adam(self.mlp.parameters(), lrs.appearance_mlp, batch_size=batch_size)}


def modulated_sh(sh_nk3: Tensor, gamma_cn3: Tensor, beta_cn3: Tensor) -> Tensor:
    """SH coefficients [N, K, 3] and affines [C, N, 3] -> [C, N, K, 3] with colour gamma * c(r) + beta.

    Every coefficient is scaled by gamma; the DC also absorbs beta and the shift of the +0.5 colour offset."""
    scaled = gamma_cn3[:, :, None, :] * sh_nk3[None]
    dc_shift = (beta_cn3 + 0.5 * (gamma_cn3 - 1.0)) / SH_C0
    return torch.cat([scaled[:, :, :1] + dc_shift[:, :, None, :], scaled[:, :, 1:]], dim=2)
