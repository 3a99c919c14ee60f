"""Du & Ma's fine-grained ResNet-50s (Sec. 2.1, Table 1).

  fcn_resnet50   ResNet-50 whose GAP + FC classifier is the FCN head
                 (1x1 conv to the classes, then GAP; the map is the CAM)
  ca_resnet50    + channel attention (CA) in every residual unit
  sa_resnet50    + spatial attention (SA)
  csca_resnet50  + channel-spatial confusion attention (CSCA)

Reading taken: the attention networks keep the FCN head. Sec. 2.2 ends with
"the present model replaces the partially fully connected FC layer by
introducing the FCN", and the title's "fusion" is of CAM with the other
attention types; Table 1 lists FCN-ResNet50 as the first step of that
progression. `create_model(..., head='linear')` gives the GAP + FC variant.
The two heads have the same parameters and (by linearity) the same logits
for the same weights, so only the CAM's availability differs.
The paper starts from torchvision's ImageNet ResNet-50 weights; the configs
configs/csca_resnet50_{cub,dogs,cars}.py name that checkpoint
(`pretrained_path`).
"""
from flax_attn.models.builders import imagenet_resnet
from flax_attn.registry import register_model


@register_model('fcn_resnet50')
def fcn_resnet50():
  return imagenet_resnet(50, head='fcn')


for _attn in ('ca', 'sa', 'csca'):
  register_model(f'{_attn}_resnet50')(
      lambda _attn=_attn: imagenet_resnet(50, attn=_attn, head='fcn'))
