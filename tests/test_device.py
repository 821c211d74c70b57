"""The GPU path gives the CPU's result (run where a CUDA GPU exists; skipped elsewhere)."""
import pytest
import torch

import preimage
from preimage import images, representations
from preimage.paper import recipes

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@cuda
def test_cuda_inversion_matches_cpu(photo227):
    rep = representations.get("alexnet", "conv2", weights="random")
    x0 = images.to_input(photo227, rep.mean)
    kw = dict(settings=[preimage.Setting(), preimage.Setting(lambda_tv=10)], restarts=2,
              schedule=recipes.CNN.scaled(40), progress=False)
    cpu = preimage.invert(rep, x0, device="cpu", **kw)
    gpu = preimage.invert(rep, x0, device="cuda", **kw)
    assert gpu.provenance["device"].startswith("cuda")
    assert gpu.error == pytest.approx(cpu.error, rel=2e-2)
    assert abs(gpu.x - cpu.x).max() < 0.02 * abs(cpu.x).max()


def test_asking_for_cuda_without_a_gpu_is_a_clear_error(photo227):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rep = representations.get("alexnet", "conv1", weights="random")
    with pytest.raises(preimage.PreimageError, match="no CUDA GPU"):
        preimage.invert(rep, images.to_input(photo227, rep.mean), device="cuda", progress=False)
