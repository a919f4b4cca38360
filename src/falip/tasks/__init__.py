"""Tasks: what is done with a model's region features, one module each (above `engine`, below `datasets`).

- `methods`: the method registry (`register_method`, `get_method`, `method_names`, `region_features`; plugins
  through the `falip.methods` entry points): FALIP, "plain", the attention ablations of Table 5, PASTA,
  Unleash and the pixel prompts, each `features(model, image, regions, settings, **options) -> (R, D)`.
- `visual_prompts`: the pixel-editing baselines (red circle, blur, CPT, crop, grayscale), as the authors'
  code draws them.
- `rec`: referring-expression comprehension (Sec. 3.3.1): box scores, ReCLIP's subtract, ensembles, IoU.
- `classify`: region classification (Sec. 3.3.2): prompt-template class features, top-k accuracy.
- `pointcloud`: zero-shot point-cloud classification from depth views with foveal masks (Sec. 3.3.3).
- `projection`: point clouds to PointCLIP's depth maps (and PointCLIP V2's views).
"""
