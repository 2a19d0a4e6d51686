"""TrivialAugment, RandAugment and AutoAugment with a draw per image, on a whole batch on its device.

torchvision.transforms.v2's ``TrivialAugmentWide``, ``RandAugment`` and ``AutoAugment`` draw one operation and
one magnitude per call, so on a batch tensor every image gets the same one; calling them once per image is a
Python loop of a few hundred small calls per batch, more than a LeNet step costs. Here every image draws its own
operation, magnitude and sign from the loader's seeded generator (so the draws are a function of seed, epoch, rank
and batch, as the order is: exact resume), and the images that drew operations of one kind are transformed
together: the geometric ones (shear, translate, rotate) by one ``grid_sample`` over per-image affine matrices, the
colour ones with per-image blend factors. The operation spaces, the magnitude tables and AutoAugment's ImageNet
policy are torchvision's own (read from its classes), and every operation matches torchvision's on one image
(tests/test_augment.py). Interpolation is nearest and the fill black, torchvision's defaults for these policies.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["POLICIES", "apply_ops", "auto_augment", "policy"]

# The --augment presets these implement, and torchvision.transforms.v2's class for each.
POLICIES = {"trivial": "TrivialAugmentWide", "randaugment": "RandAugment", "autoaugment": "AutoAugment"}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_BLENDS = ("Brightness", "Color", "Contrast", "Sharpness")  # blend of the image and a degenerate image


@functools.cache
def policy(preset: str):
    """torchvision's policy object for ``preset`` with its defaults (RandAugment: 2 operations at magnitude bin 9
    of 31; TrivialAugmentWide: 31 bins; AutoAugment: the ImageNet policy), whose tables and policy list are used."""
    # Imported on first use: torchvision.transforms.v2 takes a second or more to import, and cnnlab.data is
    # imported by every command that reads a dataset, most of which never augment.
    from torchvision.transforms import v2

    return getattr(v2, POLICIES[preset])()


def _functional():
    from torchvision.transforms.v2 import functional

    return functional


def _space(policy, bins: int, h: int, w: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The policy's operation names, their magnitude tables (float64 ``ops x bins``, zeros for an operation
    without a magnitude) and which of them are signed."""
    space = policy._AUGMENTATION_SPACE
    names = list(space)
    table = torch.zeros(len(names), bins, dtype=torch.float64)
    for i, name in enumerate(names):
        values = space[name][0](bins, h, w)
        if values is not None and values.ndim > 0:
            table[i] = values.double()
    return names, table, torch.tensor([space[name][1] for name in names])


def _rand(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device).cpu()


def _randint(high: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(high, (n,), generator=gen, device=gen.device).cpu()


def _signed(values: torch.Tensor, signed: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Negate each signed magnitude with probability 1/2 (torchvision: ``torch.rand(()) <= 0.5``)."""
    return torch.where(signed & (_rand(len(values), gen) <= 0.5), -values, values)


def auto_augment(x: torch.Tensor, preset: str, generator: torch.Generator) -> torch.Tensor:
    """``preset`` (trivial, randaugment or autoaugment) applied to each image of ``x`` with its own draw.

    Args:
        x: float batch ``N x C x H x W`` in [0, 1] (C is 1 or 3).
        preset: a key of :data:`POLICIES`.
        generator: the source of every draw (on the CPU or ``x``'s device): same state, same output.
    """
    n, _, h, w = x.shape
    if preset not in POLICIES:
        raise ValueError(f"unknown augmentation policy {preset!r}, expected one of {', '.join(POLICIES)}")
    tv = policy(preset)
    if preset == "trivial":  # one operation, a random magnitude bin
        bins = tv.num_magnitude_bins
        names, table, signed = _space(tv, bins, h, w)
        op = _randint(len(names), n, generator)
        magnitude = table[op, _randint(bins, n, generator)]
        return apply_ops(x, names, op, _signed(magnitude, signed[op], generator))
    if preset == "randaugment":  # num_ops operations in sequence at one fixed magnitude bin
        names, table, signed = _space(tv, tv.num_magnitude_bins, h, w)
        for _ in range(tv.num_ops):
            op = _randint(len(names), n, generator)
            x = apply_ops(x, names, op, _signed(table[op, tv.magnitude], signed[op], generator))
        return x
    # autoaugment: a sub-policy per image: two (operation, probability, magnitude bin) triples
    names, table, signed = _space(tv, 10, h, w)  # torchvision's AutoAugment tables have 10 bins
    index = {name: i for i, name in enumerate(names)}
    chosen = _randint(len(tv._policies), n, generator)
    for step in range(2):
        triples = [sub_policy[step] for sub_policy in tv._policies]
        op = torch.tensor([index[name] for name, _, _ in triples])[chosen]
        prob = torch.tensor([p for _, p, _ in triples], dtype=torch.float64)[chosen]
        level = torch.tensor([b if b is not None else 0 for _, _, b in triples])[chosen]
        applied = _rand(n, generator).double() <= prob
        magnitude = _signed(table[op, level], signed[op], generator)
        x = apply_ops(x, names, torch.where(applied, op, -1), magnitude)
    return x


def apply_ops(x: torch.Tensor, names: list[str], op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image ``i`` of ``x`` transformed by operation ``names[op[i]]`` with ``magnitude[i]`` (``op[i] < 0``: kept).

    The operations and magnitudes mean what they mean in torchvision.transforms.v2's AutoAugment family
    (``_apply_image_or_video_transform``); images that share an operation kind are transformed in one call.
    """
    out = x.clone()
    kinds = [names[k] if k >= 0 else "Identity" for k in op.tolist()]
    geometric = [i for i, k in enumerate(kinds) if k in _GEOMETRIC]
    if geometric:
        _put(out, geometric, _affine(x, geometric, kinds, magnitude))
    for name in sorted(set(kinds) - {"Identity", *_GEOMETRIC}):
        rows = [i for i, k in enumerate(kinds) if k == name]
        _put(out, rows, _colour(x[torch.tensor(rows, device=x.device)], name, magnitude[rows]))
    return out


def _put(out: torch.Tensor, rows: list[int], values: torch.Tensor) -> None:
    out.index_copy_(0, torch.tensor(rows, device=out.device), values)


def _affine(x: torch.Tensor, rows: list[int], kinds: list[str], magnitude: torch.Tensor) -> torch.Tensor:
    """The geometric operations of images ``rows``: torchvision's inverse affine matrix per image (float64, as its
    Python arithmetic), its output grid, then one nearest ``grid_sample`` with zero fill."""
    _, _, h, w = x.shape
    m = magnitude[rows].double()
    kind = [kinds[i] for i in rows]
    is_ = {k: torch.tensor([k == c for c in kind]) for k in _GEOMETRIC}
    zero = torch.zeros_like(m)
    shear_angle = torch.rad2deg(torch.atan(m))
    # torchvision: shears about the top-left corner (center=[0, 0]), translations by int(magnitude) pixels,
    # rotations by rotate(angle) = the inverse matrix of -angle about the centre.
    angle = torch.where(is_["Rotate"], -torch.remainder(m, 360), zero)
    sx = torch.where(is_["ShearX"], shear_angle, zero)
    sy = torch.where(is_["ShearY"], shear_angle, zero)
    tx = torch.where(is_["TranslateX"], m.trunc(), zero)
    ty = torch.where(is_["TranslateY"], m.trunc(), zero)
    corner = is_["ShearX"] | is_["ShearY"]
    cx, cy = torch.where(corner, -w * 0.5, 0.0).double(), torch.where(corner, -h * 0.5, 0.0).double()
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(sx), torch.deg2rad(sy)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    theta = torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3).to(x.dtype).to(x.device)
    # torchvision's _affine_grid, batched: pixel-centred base grid times theta, normalised after the product.
    base = torch.empty(1, h, w, 3, dtype=x.dtype, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=x.dtype, device=x.device))
    grid = base.view(1, h * w, 3).expand(len(rows), -1, -1).bmm(scaled).view(len(rows), h, w, 2)
    images = x[torch.tensor(rows, device=x.device)]
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _colour(x: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """A colour operation with a magnitude per image (float images in [0, 1])."""
    TF = _functional()
    if name in _BLENDS:
        if name == "Color" and x.shape[1] == 1:
            return x  # torchvision (and PIL) leave a grey image's saturation alone
        # torchvision's adjust_* with factor 0 is the degenerate image its _blend mixes with; the factor 1 + m
        # then differs per image: x * f + degenerate * (1 - f), clamped.
        degenerate = {"Brightness": torch.zeros_like, "Color": lambda t: TF.adjust_saturation(t, 0.0),
                      "Contrast": lambda t: TF.adjust_contrast(t, 0.0),
                      "Sharpness": lambda t: TF.adjust_sharpness(t, 0.0)}[name](x)
        factor = (1.0 + magnitude).to(x.dtype).to(x.device).view(-1, 1, 1, 1)
        return (x * factor + degenerate * (1.0 - factor)).clamp_(0, 1)
    if name == "Posterize":  # torchvision's float posterize, with the levels per image
        levels = (2 ** magnitude.trunc()).to(x.dtype).to(x.device).view(-1, 1, 1, 1)
        return torch.minimum(x.mul(levels).floor_(), levels - 1).mul_(1.0 / levels)
    if name == "Solarize":
        threshold = magnitude.to(x.dtype).to(x.device).view(-1, 1, 1, 1)
        return torch.where(x >= threshold, 1.0 - x, x)
    if name == "AutoContrast":
        return TF.autocontrast(x)  # per image and channel already
    if name == "Equalize":
        return TF.equalize(x)
    if name == "Invert":
        return TF.invert(x)
    raise ValueError(f"unknown operation {name!r}")
