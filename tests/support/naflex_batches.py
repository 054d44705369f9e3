""" Images packed as timm's NaFlex loader packs them (``patches``, ``patch_coord``, ``patch_valid``), for tests. """
import torch
from timm.models.naflexvit import batch_patchify


def packed(images, patch_size=16, shuffle_seed=None, pad_to=None):
    """timm's NaFlex layout for a list of (C, H, W) images: patches, (row, col) coords, validity; padding after.
    With ``shuffle_seed`` each image's patches come in a random order (NaFlex only reads the coordinates)."""
    rows = []
    for image in images:
        patches, (gh, gw) = batch_patchify(image[None], (patch_size, patch_size))
        coord = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing='ij'), -1).reshape(-1, 2)
        patches = patches[0]
        if shuffle_seed is not None:
            order = torch.randperm(len(coord), generator=torch.Generator().manual_seed(shuffle_seed))
            patches, coord = patches[order], coord[order]
        rows.append((patches, coord))
    longest = pad_to or max(len(c) for _, c in rows)
    batch = {'patches': torch.zeros(len(rows), longest, rows[0][0].shape[1]),
             'patch_coord': torch.zeros(len(rows), longest, 2, dtype=torch.long),
             'patch_valid': torch.zeros(len(rows), longest, dtype=torch.bool)}
    for i, (p, c) in enumerate(rows):
        batch['patches'][i, :len(c)], batch['patch_coord'][i, :len(c)], batch['patch_valid'][i, :len(c)] = p, c, True
    return batch
