"""The evaluation runner: same predictions as the model, each shared prefix of blocks run once."""

from __future__ import annotations

import torch
from test_core_helpers import rand_inputs, tiny_cfg

from admn_ros.core.config import load_model_config, to_dict
from admn_ros.core.model import ADMN
from admn_ros.train.runner import CachingRunner


def block_samples(model: ADMN) -> tuple[dict[str, int], list]:
    """{"n": images run through any backbone block}, and the hooks to remove."""
    seen = {"n": 0}

    def hook(_mod, inp, _out) -> None:
        seen["n"] += inp[0].shape[0]

    return seen, [blk.register_forward_hook(hook)
                  for vit in model.backbones.values() for blk in vit.blocks]


def rows_mask(rows: list[list[int]], m: int, d: int) -> torch.Tensor:
    """[B, M, D]: sample b runs blocks rows[b] in every modality."""
    mask = torch.zeros(len(rows), m, d, dtype=torch.bool)
    for b, blocks in enumerate(rows):
        mask[b, :, blocks] = True
    return mask


def test_runner_matches_the_model_across_calls_and_batches():
    cfg = tiny_cfg()
    model = ADMN(cfg).eval()
    runner = CachingRunner(model)
    masks = [rows_mask([[0, 2], [0, 1, 3], [0], [0, 2, 3]], cfg.num_modalities, cfg.depth),
             rows_mask([[0, 2, 3], [0, 1], [0, 2], [0, 1, 2, 3]], cfg.num_modalities, cfg.depth)]
    masks.append(masks[0].clone())
    masks[2][:, 1] = masks[1][:, 1]  # modalities with different rows in one call
    for seed in (0, 1):  # a second batch: nothing of the first may leak into it
        x = rand_inputs(cfg, batch=4, seed=seed)
        runner.new_batch()
        for mask in masks:
            with torch.no_grad():
                want = model(x, mask)
            got = runner(x, mask)
            torch.testing.assert_close(got.mean, want.mean, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got.scale_tril, want.scale_tril, rtol=1e-4, atol=1e-4)


def test_runner_runs_a_shared_prefix_once():
    cfg = tiny_cfg()
    model = ADMN(cfg).eval()
    runner = CachingRunner(model)
    x = rand_inputs(cfg, batch=2)
    m, s = cfg.num_modalities, cfg.num_nodes
    seen, hooks = block_samples(model)
    for rows in ([0], [0, 2], [0, 2, 3], [0, 2]):  # nested, as every-other orders are
        runner(x, rows_mask([rows] * 2, m, cfg.depth))
    for h in hooks:
        h.remove()
    assert seen["n"] == 3 * m * 2 * s  # blocks 0, 2, 3 once per image (1 + 2 + 3 + 2 without)


def test_runner_with_no_block_runs_the_embedding_only():
    cfg = load_model_config({**to_dict(tiny_cfg()), "min_blocks": {"rgb": 0, "depth": 0,
                                                                     "radar": 0}})
    model = ADMN(cfg).eval()
    x = rand_inputs(cfg, batch=2)
    mask = rows_mask([[], [1, 3]], cfg.num_modalities, cfg.depth)
    with torch.no_grad():
        want = model(x, mask)
    torch.testing.assert_close(CachingRunner(model)(x, mask).mean, want.mean,
                               rtol=1e-4, atol=1e-4)
